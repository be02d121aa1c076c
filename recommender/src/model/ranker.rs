//! The ranker: logistic regression (linfa-logistic) over the sources'
//! scores, trained chronologically to predict the next interaction.

use std::collections::{HashMap, HashSet};

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::*;
use crate::{Recommender, data::Interaction};

/// The whole model: sources and the ranker's weights.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Hybrid {
    pub sources: Sources,
    /// Feature scaling (mean, standard deviation), then weights.
    pub(super) mean: Vec<f32>,
    pub(super) scale: Vec<f32>,
    pub(super) weights: Vec<f32>,
    pub(super) intercept: f32,
    pub(super) repeats: bool,
    #[serde(skip)]
    pub(super) cfg: Option<Config>,
}

/// How the ranker's training went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// Training targets the ranker saw, and how many had the true item among
    /// the candidates (candidate recall).
    pub targets: usize,
    pub targets_with_candidate: usize,
    pub rows: usize,
    /// False when the data had nothing to tell apart and prior weights rank.
    pub learned: bool,
    /// The learned weight of each feature (on standardised features).
    pub weights: Vec<(String, f32)>,
    /// The ranker's offline metrics inside the training log.
    #[serde(default)]
    pub validation: Option<Validation>,
}

impl Hybrid {
    /// Fits the sources and the ranker. `progress` hears each phase.
    pub fn fit(
        train: &[Interaction],
        items: usize,
        cfg: Config,
        progress: &dyn Fn(&str),
    ) -> Result<(Self, TrainingReport), FitError> {
        progress("fitting candidate sources on the first four fifths");
        let split = cut(train, 0.8);
        let early = Sources::fit(&train[..split], items, &cfg);

        progress("building ranker examples from the last fifth");
        let mut history: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in &train[..split] {
            history.entry(i.user).or_default().push(i.item);
        }
        let eligible: Vec<usize> = {
            let mut h = history.clone();
            let mut out = Vec::new();
            for (k, i) in train[split..].iter().enumerate() {
                let list = h.entry(i.user).or_default();
                if !list.is_empty() && (cfg.repeats || !list.contains(&i.item)) {
                    out.push(k);
                }
                list.push(i.item);
            }
            out
        };
        let step = (eligible.len() as f64 / cfg.max_targets.max(1) as f64).max(1.0);
        let chosen: HashSet<usize> = (0..eligible.len().min(cfg.max_targets))
            .map(|k| eligible[(k as f64 * step) as usize])
            .collect();
        let mut x: Vec<[f32; N]> = Vec::new();
        let mut y: Vec<u8> = Vec::new();
        let (mut targets, mut found) = (0, 0);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for (k, i) in train[split..].iter().enumerate() {
            let list = history.entry(i.user).or_default();
            if chosen.contains(&k) {
                targets += 1;
                let seen: HashSet<u32> = if cfg.repeats {
                    HashSet::new()
                } else {
                    list.iter().copied().collect()
                };
                let cands = early.candidates(list, &cfg, &|c| seen.contains(&c));
                if let Some(pos) = cands.iter().position(|(c, _, _)| *c == i.item) {
                    found += 1;
                    x.push(cands[pos].1);
                    y.push(1);
                    let others = cands.len() - 1;
                    for _ in 0..cfg.negatives.min(others) {
                        // xorshift: a fixed seed, so training is reproducible.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let mut j = (rng % others as u64) as usize;
                        if j >= pos {
                            j += 1;
                        }
                        x.push(cands[j].1);
                        y.push(0);
                    }
                }
            }
            list.push(i.item);
        }
        if found == 0 {
            return Err(FitError::TooLittleData { targets });
        }
        if !y.contains(&0) {
            // Every candidate was the right one (a tiny catalogue): nothing
            // to tell apart, so the sources' scores rank with prior weights.
            progress("one candidate per target: prior weights, no ranker fit");
            let sources = Sources::fit(train, items, &cfg);
            let weights = PRIOR.to_vec();
            let report = TrainingReport {
                targets,
                targets_with_candidate: found,
                rows: x.len(),
                learned: false,
                weights: FEATURES
                    .iter()
                    .zip(&weights)
                    .map(|(n, w)| ((*n).to_owned(), *w))
                    .collect(),
                validation: None,
            };
            return Ok((
                Self {
                    sources,
                    mean: vec![0.0; N],
                    scale: vec![1.0; N],
                    weights,
                    intercept: 0.0,
                    repeats: cfg.repeats,
                    cfg: Some(cfg),
                },
                report,
            ));
        }

        progress("fitting the ranker (linfa-logistic)");
        let rows = x.len();
        let mut mean = vec![0f32; N];
        let mut scale = vec![0f32; N];
        for r in &x {
            for f in 0..N {
                mean[f] += r[f] / rows as f32;
            }
        }
        for r in &x {
            for f in 0..N {
                scale[f] += (r[f] - mean[f]).powi(2) / rows as f32;
            }
        }
        for s in &mut scale {
            *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
        }
        let records = Array2::from_shape_fn((rows, N), |(r, f)| {
            f64::from((x[r][f] - mean[f]) / scale[f])
        });
        let targets_arr = Array1::from(y);
        let fitted = LogisticRegression::default()
            .alpha(1.0)
            .max_iterations(200)
            .fit(&linfa::Dataset::new(records, targets_arr))?;
        // linfa-logistic's "positive" class is the more frequent label (here
        // the negatives): turn the weights to speak for the true next item.
        let sign = if fitted.labels().pos.class == 1 {
            1.0
        } else {
            -1.0
        };
        let weights: Vec<f32> = fitted.params().iter().map(|&w| (sign * w) as f32).collect();
        let intercept = (sign * fitted.intercept()) as f32;

        progress("validating the ranker on later interactions");
        // Up to 1,000 eligible targets the ranker did not train on, spread
        // evenly; a log too small to leave any is validated in sample.
        let unseen: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|k| !chosen.contains(k))
            .collect();
        let (pool, in_sample) = if unseen.is_empty() {
            (eligible.clone(), true)
        } else {
            (unseen, false)
        };
        let every = (pool.len() as f64 / 1000.0).max(1.0);
        let held: HashSet<usize> = (0..pool.len().min(1000))
            .map(|k| pool[(k as f64 * every) as usize])
            .collect();
        let early_model = Self {
            sources: early,
            mean: mean.clone(),
            scale: scale.clone(),
            weights: weights.clone(),
            intercept,
            repeats: cfg.repeats,
            cfg: Some(cfg.clone()),
        };
        let validation = validate(&early_model, train, split, &held, in_sample);
        drop(early_model);

        progress("refitting candidate sources on everything");
        let sources = Sources::fit(train, items, &cfg);
        let report = TrainingReport {
            targets,
            targets_with_candidate: found,
            rows,
            learned: true,
            weights: FEATURES
                .iter()
                .zip(&weights)
                .map(|(n, w)| ((*n).to_owned(), *w))
                .collect(),
            validation: Some(validation),
        };
        Ok((
            Self {
                sources,
                mean,
                scale,
                weights,
                intercept,
                repeats: cfg.repeats,
                cfg: Some(cfg),
            },
            report,
        ))
    }

    pub(super) fn cfg(&self) -> Config {
        self.cfg.clone().unwrap_or(Config {
            repeats: self.repeats,
            ..Config::default()
        })
    }

    /// The ranker's log-odds for a feature row (ranked on, as the
    /// probability saturates).
    pub(super) fn logit(&self, f: &[f32; N]) -> f32 {
        // A model saved before a feature existed has no weight for it and
        // ranks without it.
        self.weights
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(f)
            .map(|(((w, m), s), x)| w * (x - m) / s)
            .sum::<f32>()
            + self.intercept
    }

    /// Up to `k` items for a history (oldest first), best first, with their
    /// scores and reasons; never an excluded item.
    pub fn rank(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<Scored> {
        let cfg = self.cfg();
        let mut ranked: Vec<(f32, Scored)> = self
            .sources
            .candidates(history, &cfg, exclude)
            .into_iter()
            .map(|(item, f, reason)| {
                let z = self.logit(&f);
                let score = 1.0 / (1.0 + (-z).exp());
                (
                    z,
                    Scored {
                        item,
                        score,
                        reason,
                    },
                )
            })
            .collect();
        let order = |a: &(f32, Scored), b: &(f32, Scored)| {
            b.0.total_cmp(&a.0).then(a.1.item.cmp(&b.1.item))
        };
        // Only the best `k` are sorted (a total order: the same `k` in the
        // same order as sorting them all).
        if ranked.len() > k {
            ranked.select_nth_unstable_by(k, order);
            ranked.truncate(k);
        }
        ranked.sort_unstable_by(order);
        let mut out: Vec<Scored> = ranked.into_iter().map(|(_, s)| s).collect();
        if out.len() < k {
            // More excluded than candidates: the popular rest.
            let mut kept: ItemSet = out.iter().map(|s| s.item).collect();
            for &c in self.sources.popular() {
                if out.len() >= k {
                    break;
                }
                if !exclude(c) && kept.insert(c) {
                    out.push(Scored {
                        item: c,
                        score: 0.0,
                        reason: Reason::Popular,
                    });
                }
            }
        }
        out
    }
}

impl Recommender for Hybrid {
    fn name(&self) -> &'static str {
        "shopstream (learned)"
    }

    fn recommend(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32> {
        self.rank(history, k, exclude)
            .into_iter()
            .map(|s| s.item)
            .collect()
    }
}
