//! The offline protocol (documented in `docs/evaluation.md`): train on
//! everything before a time cut; then, in time order, for each later
//! interaction ask for recommendations given only what came before it.

use std::{collections::HashSet, time::Instant};

use crate::{
    Recommender,
    data::{Dataset, Interaction},
    metrics,
};

/// Where to cut and how many targets to score.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// The fraction of interactions (by time) used for training.
    pub train_fraction: f64,
    /// Score at most this many targets, spread evenly over the test part.
    pub max_targets: Option<usize>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            train_fraction: 0.8,
            max_targets: None,
        }
    }
}

/// One model's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub model: String,
    pub targets: usize,
    pub hr10: f64,
    pub hr20: f64,
    pub mrr10: f64,
    pub mrr20: f64,
    pub ndcg10: f64,
    pub ndcg20: f64,
    /// Share of the catalogue that appeared in some top 10 / top 20.
    pub coverage10: f64,
    pub coverage20: f64,
    pub mean_ms: f64,
    pub p99_ms: f64,
}

/// The training interactions and the index where the test part starts.
pub fn split(data: &Dataset, p: &Protocol) -> (Vec<Interaction>, usize) {
    let n = data.interactions.len();
    let mut cut = ((n as f64) * p.train_fraction) as usize;
    // Never split interactions that share a time (a basket).
    while cut > 0 && cut < n && data.interactions[cut].ts == data.interactions[cut - 1].ts {
        cut += 1;
    }
    (data.interactions[..cut.min(n)].to_vec(), cut.min(n))
}

/// A target to score: the user's history before it, and the item.
struct Target {
    history: Vec<u32>,
    item: u32,
}

fn targets(data: &Dataset, cut: usize, p: &Protocol) -> Vec<Target> {
    let mut history: Vec<Vec<u32>> = vec![Vec::new(); data.users.len()];
    for i in &data.interactions[..cut] {
        history[i.user as usize].push(i.item);
    }
    let mut out = Vec::new();
    for i in &data.interactions[cut..] {
        let h = &history[i.user as usize];
        // A user with no history yet is a cold start, scored elsewhere; an
        // item already seen is never recommended where repeats are not
        // possible, so it is no target there.
        if !h.is_empty() && (data.repeats || !h.contains(&i.item)) {
            out.push(Target {
                history: h.clone(),
                item: i.item,
            });
        }
        history[i.user as usize].push(i.item);
    }
    if let Some(max) = p.max_targets
        && out.len() > max
    {
        let step = out.len() as f64 / max as f64;
        out = (0..max)
            .map(|k| {
                std::mem::replace(
                    &mut out[(k as f64 * step) as usize],
                    Target {
                        history: Vec::new(),
                        item: 0,
                    },
                )
            })
            .collect();
    }
    out
}

/// Scores each model over the same targets.
pub fn run(data: &Dataset, p: &Protocol, models: &[&dyn Recommender]) -> Vec<Scores> {
    run_with_progress(data, p, models, &mut |_| {})
}

/// Where a run is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// A model's scoring starts, over this many targets.
    Model { name: &'a str, targets: usize },
    /// One more target scored.
    Target,
}

/// [`run`], telling `progress` where it is (outside the timed calls).
pub fn run_with_progress(
    data: &Dataset,
    p: &Protocol,
    models: &[&dyn Recommender],
    progress: &mut dyn FnMut(Step<'_>),
) -> Vec<Scores> {
    let (_, cut) = split(data, p);
    let targets = targets(data, cut, p);
    models
        .iter()
        .map(|m| {
            progress(Step::Model {
                name: m.name(),
                targets: targets.len(),
            });
            score(data, &targets, *m, progress)
        })
        .collect()
}

fn score(
    data: &Dataset,
    targets: &[Target],
    m: &dyn Recommender,
    progress: &mut dyn FnMut(Step<'_>),
) -> Scores {
    let (mut hr10, mut hr20, mut mrr10, mut mrr20, mut n10, mut n20) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut cov10, mut cov20) = (HashSet::new(), HashSet::new());
    let mut times = Vec::with_capacity(targets.len());
    for t in targets {
        let seen: HashSet<u32> = if data.repeats {
            HashSet::new()
        } else {
            t.history.iter().copied().collect()
        };
        let start = Instant::now();
        let list = m.recommend(&t.history, 20, &|i| seen.contains(&i));
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        hr10 += metrics::hit(&list, t.item, 10);
        hr20 += metrics::hit(&list, t.item, 20);
        mrr10 += metrics::reciprocal_rank(&list, t.item, 10);
        mrr20 += metrics::reciprocal_rank(&list, t.item, 20);
        n10 += metrics::ndcg(&list, t.item, 10);
        n20 += metrics::ndcg(&list, t.item, 20);
        cov10.extend(list.iter().take(10).copied());
        cov20.extend(list.iter().copied());
        progress(Step::Target);
    }
    let n = targets.len().max(1) as f64;
    times.sort_by(f64::total_cmp);
    let items = data.items.len().max(1) as f64;
    Scores {
        model: m.name().to_owned(),
        targets: targets.len(),
        hr10: hr10 / n,
        hr20: hr20 / n,
        mrr10: mrr10 / n,
        mrr20: mrr20 / n,
        ndcg10: n10 / n,
        ndcg20: n20 / n,
        coverage10: cov10.len() as f64 / items,
        coverage20: cov20.len() as f64 / items,
        mean_ms: times.iter().sum::<f64>() / n,
        p99_ms: times
            .get(((times.len() as f64) * 0.99) as usize)
            .or(times.last())
            .copied()
            .unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{baselines::MostPopular, data::Kind};

    fn data(rows: &[(u32, u32, i64)], repeats: bool) -> Dataset {
        Dataset {
            interactions: rows
                .iter()
                .map(|&(user, item, ts)| Interaction {
                    user,
                    item,
                    ts,
                    kind: Kind::View,
                })
                .collect(),
            users: (0..3).map(|u| u.to_string()).collect(),
            items: (0..4).map(|i| i.to_string()).collect(),
            repeats,
        }
    }

    #[test]
    fn the_protocol_worked_by_hand() {
        // Train (first 80 % = 8 of 10): item 0 ×3, item 1 ×2, item 2 ×2, item 3 ×1.
        let d = data(
            &[
                (0, 0, 1),
                (1, 0, 2),
                (2, 0, 3),
                (0, 1, 4),
                (1, 1, 5),
                (0, 2, 6),
                (2, 2, 7),
                (1, 3, 8),
                // Test: user 0 takes 3 (history 0,1,2 → popular unseen: [3]), user 1 takes 2.
                (0, 3, 9),
                (1, 2, 10),
            ],
            false,
        );
        let (train, cut) = split(&d, &Protocol::default());
        assert_eq!((train.len(), cut), (8, 8));
        let pop = MostPopular::fit(&train, 4);
        let s = &run(&d, &Protocol::default(), &[&pop])[0];
        assert_eq!(s.targets, 2);
        // User 0: seen {0,1,2} → list [3], rank 1. User 1: seen {0,1,3} → list [2], rank 1.
        assert_eq!((s.hr10, s.mrr10, s.ndcg10), (1.0, 1.0, 1.0));
        // Items 3 and 2 were recommended: 2 of 4.
        assert_eq!(s.coverage10, 0.5);
    }

    #[test]
    fn seen_items_are_no_targets_without_repeats_and_cold_users_are_skipped() {
        let d = data(
            &[
                (0, 0, 1),
                (0, 1, 2),
                (0, 2, 3),
                (1, 0, 4),
                (0, 0, 5),
                (2, 1, 6),
            ],
            false,
        );
        let p = Protocol {
            train_fraction: 0.6,
            max_targets: None,
        };
        let (_, cut) = split(&d, &p);
        assert_eq!(cut, 3);
        // (1,0) cold user, (0,0) seen, (2,1) cold: no targets.
        assert_eq!(targets(&d, cut, &p).len(), 0);
        let d = Dataset { repeats: true, ..d };
        // With repeats, (0,0) counts.
        assert_eq!(targets(&d, cut, &p).len(), 1);
    }

    #[test]
    fn a_basket_is_never_split_by_the_cut() {
        let d = data(
            &[(0, 0, 1), (0, 1, 2), (1, 0, 3), (1, 1, 3), (1, 2, 3)],
            true,
        );
        let (_, cut) = split(
            &d,
            &Protocol {
                train_fraction: 0.6,
                max_targets: None,
            },
        );
        assert_eq!(cut, 5);
    }
}
