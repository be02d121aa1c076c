//! The ranker's offline check on later interactions of the training log
//! (HR@10, NDCG@10).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::*;
use crate::data::Interaction;

/// HR@10 and NDCG@10 of the ranker (over the sources fitted on the first
/// four fifths of the training log) on later interactions, each given only
/// what came before it — the protocol of docs/evaluation.md, inside the
/// training data. Targets are ones the ranker was not trained on, unless
/// the log was too small to leave any (`in_sample`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub targets: usize,
    #[serde(rename = "hr@10")]
    pub hr_at_10: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    pub in_sample: bool,
}

/// Scores `m` on the interactions at `targets` (indices into
/// `train[split..]`), each given the user's history before it.
pub(super) fn validate(
    m: &Hybrid,
    train: &[Interaction],
    split: usize,
    targets: &HashSet<usize>,
    in_sample: bool,
) -> Validation {
    let mut history: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in &train[..split] {
        history.entry(i.user).or_default().push(i.item);
    }
    let (mut n, mut hits, mut ndcg) = (0usize, 0f64, 0f64);
    for (k, i) in train[split..].iter().enumerate() {
        let list = history.entry(i.user).or_default();
        if targets.contains(&k) {
            n += 1;
            let seen: HashSet<u32> = if m.repeats {
                HashSet::new()
            } else {
                list.iter().copied().collect()
            };
            if let Some(pos) = m
                .rank(list, 10, &|c| seen.contains(&c))
                .iter()
                .position(|s| s.item == i.item)
            {
                hits += 1.0;
                ndcg += 1.0 / ((pos + 2) as f64).log2();
            }
        }
        list.push(i.item);
    }
    let d = n.max(1) as f64;
    Validation {
        targets: n,
        hr_at_10: hits / d,
        ndcg_at_10: ndcg / d,
        in_sample,
    }
}

/// The training log split at a time cut, never inside a group of
/// interactions that share a time.
/// When everything after the cut shares one time (a log written in one
/// burst), the cut falls at the fraction itself.
pub(super) fn cut(train: &[Interaction], fraction: f64) -> usize {
    let n = train.len();
    let at = ((n as f64) * fraction) as usize;
    let mut cut = at;
    while cut > 0 && cut < n && train[cut].ts == train[cut - 1].ts {
        cut += 1;
    }
    if cut >= n { at.min(n) } else { cut }
}
