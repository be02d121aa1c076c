//! The trained model as it is served and persisted: the ranker, the item
//! numbering, bought-together lists and category hints.

use std::{collections::HashMap, sync::Arc};

use recommender::model::{Hybrid, TrainingReport};
use serde::{Deserialize, Serialize};

/// Where the model is persisted in the blob store.
pub const MODEL_KEY: &str = "models/recommender.json";

/// A trained model with what it knows about its training.
#[derive(Debug, Serialize, Deserialize)]
pub struct Trained {
    pub version: String,
    pub trained_at: String,
    pub training_ms: u64,
    /// Interactions and distinct subjects (users and sessions) trained on.
    pub interactions: usize,
    pub subjects: usize,
    /// Product id of each dense item id.
    pub items: Vec<String>,
    pub report: TrainingReport,
    pub model: Hybrid,
    /// The category of each item when the model was trained (empty where
    /// the product was not in the catalogue): a hint that lets the
    /// per-category cap skip a candidate without reading its product. Only
    /// ever used to skip; what is served is read live.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Per item, the items bought with it (in the same order, or by the
    /// same customer within [`BASKET_GAP_MS`]), best first, with a cosine
    /// score. Empty in models saved before it existed.
    #[serde(default)]
    pub together: Vec<Vec<(u32, f32)>>,
    #[serde(skip)]
    pub(crate) index: HashMap<String, u32>,
    #[serde(skip)]
    pub(crate) hints: Vec<Option<Arc<str>>>,
}

impl Trained {
    pub(crate) fn indexed(mut self) -> Self {
        self.index = self
            .items
            .iter()
            .enumerate()
            .map(|(k, id)| (id.clone(), k as u32))
            .collect();
        let mut names: HashMap<&str, Arc<str>> = HashMap::new();
        self.hints = (0..self.items.len())
            .map(|k| {
                let c = self.categories.get(k).map_or("", String::as_str);
                (!c.is_empty()).then(|| names.entry(c).or_insert_with(|| Arc::from(c)).clone())
            })
            .collect();
        self
    }

    pub fn item(&self, product_id: &str) -> Option<u32> {
        self.index.get(product_id).copied()
    }
}
