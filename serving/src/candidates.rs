//! Candidates from the model — sequence, co-occurrence, embedding,
//! bought-together, repeat — before the shop's rules are applied.

use std::{collections::HashSet, sync::Arc};

use recommender::model::{self, Reason};

use crate::model::Trained;

/// Items bought together with one product, from the model.
pub fn bought_with(t: &Trained, product_id: &str) -> Vec<Candidate> {
    let Some(i) = t.item(product_id) else {
        return Vec::new();
    };
    let list = t.together.get(i as usize).map_or(&[][..], Vec::as_slice);
    related(t, list.iter().copied(), || {
        Source::BoughtTogether(product_id.to_owned())
    })
}

/// A candidate before the live rules: product id, score, source.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub product_id: String,
    /// Its category when the model was trained, if known (see
    /// [`Trained::categories`]).
    pub category_hint: Option<Arc<str>>,
    pub score: f32,
    pub source: Source,
}

/// Where a candidate came from, with the product it relates to (a product
/// id, named for a person only when the candidate is served).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Viewed after this product by others.
    Sequence(String),
    /// Viewed together with this product.
    CoOccurrence(String),
    /// Near this product in the learned embedding.
    Embedding(String),
    /// Bought in the same basket as this product.
    BoughtTogether(String),
    /// Bought before by this subject (repeat categories).
    Repeat,
    /// Popular right now.
    Popularity,
    /// New in this category (cold start).
    Category(String),
    /// New in the shop: the last resort of a shop with no behaviour yet.
    Newest,
}

impl Source {
    /// The name the API and the attribution counters use.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Sequence(_) => "sequence",
            Source::CoOccurrence(_) => "co-occurrence",
            Source::Embedding(_) => "embedding",
            Source::BoughtTogether(_) => "bought-together",
            Source::Repeat => "repeat",
            Source::Popularity => "popularity",
            Source::Category(_) => "category",
            Source::Newest => "newest",
        }
    }

    /// The product this source relates the candidate to, if any.
    pub fn related(&self) -> Option<&str> {
        match self {
            Source::Sequence(p)
            | Source::CoOccurrence(p)
            | Source::Embedding(p)
            | Source::BoughtTogether(p) => Some(p),
            Source::Repeat | Source::Popularity | Source::Category(_) | Source::Newest => None,
        }
    }
}

/// The model's ranking for a history of product ids (oldest first), never
/// an item in `exclude`; `want` at most. Item numbers: turn the ones
/// needed into candidates with [`candidate`].
pub fn rank(
    t: &Trained,
    history: &[String],
    want: usize,
    exclude: &HashSet<String>,
) -> Vec<model::Scored> {
    let h: Vec<u32> = history.iter().filter_map(|p| t.item(p)).collect();
    // The model asks about every candidate it meets: answer from the
    // item numbers (a sorted list of a few), not by hashing product ids.
    let mut ex: Vec<u32> = exclude.iter().filter_map(|p| t.item(p)).collect();
    ex.sort_unstable();
    t.model.rank(&h, want, &|i| ex.binary_search(&i).is_ok())
}

/// One ranked item as a candidate, with product ids.
pub fn candidate(t: &Trained, s: &model::Scored) -> Candidate {
    Candidate {
        product_id: t.items[s.item as usize].clone(),
        category_hint: t.hints.get(s.item as usize).cloned().flatten(),
        score: s.score,
        source: match s.reason {
            Reason::After(i) => Source::Sequence(t.items[i as usize].clone()),
            Reason::With(i) => Source::CoOccurrence(t.items[i as usize].clone()),
            Reason::Like(i) => Source::Embedding(t.items[i as usize].clone()),
            Reason::Again => Source::Repeat,
            Reason::Popular => Source::Popularity,
        },
    }
}

/// Items like one product, from the model.
pub fn similar(t: &Trained, product_id: &str) -> Vec<Candidate> {
    let Some(i) = t.item(product_id) else {
        return Vec::new();
    };
    related(t, t.model.sources.similar(i), || {
        Source::CoOccurrence(product_id.to_owned())
    })
}

/// Item numbers and scores related to one product, as candidates that all
/// give the same reason.
fn related(
    t: &Trained,
    items: impl IntoIterator<Item = (u32, f32)>,
    source: impl Fn() -> Source,
) -> Vec<Candidate> {
    items
        .into_iter()
        .map(|(j, score)| Candidate {
            product_id: t.items[j as usize].clone(),
            category_hint: t.hints.get(j as usize).cloned().flatten(),
            score,
            source: source(),
        })
        .collect()
}

/// What the rules need to know about a subject.
pub fn history_of(profile: &processors::state::Profile) -> (Vec<String>, HashSet<String>) {
    let mut touches: Vec<(i64, &str)> = profile
        .recent_views
        .iter()
        .chain(&profile.basket_adds)
        .chain(&profile.purchases)
        .map(|t| (t.at, t.product_id.as_str()))
        .collect();
    touches.sort();
    let bought = profile
        .purchases
        .iter()
        .map(|t| t.product_id.clone())
        .collect();
    (
        touches.into_iter().map(|(_, p)| p.to_owned()).collect(),
        bought,
    )
}
