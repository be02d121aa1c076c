//! Unit tests of the sources, the ranker and its validation.

use std::collections::HashSet;

use super::*;
use crate::{
    Recommender,
    data::{Interaction, Kind},
};

fn log(pairs: &[(u32, u32)]) -> Vec<Interaction> {
    pairs
        .iter()
        .enumerate()
        .map(|(t, &(user, item))| Interaction {
            user,
            item,
            ts: t as i64,
            kind: Kind::View,
        })
        .collect()
}

#[test]
fn next_follows_order_and_co_ignores_it() {
    // Users 0 and 1 took 0 then 1; user 2 took 1 then 0.
    let train = log(&[(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 0)]);
    let s = Sources::fit(&train, 2, &Config::default());
    // count(0) = count(1) = 3: next(0→1) = 2 / 3, next(1→0) = 1 / 3.
    assert!((s.next[0][0].1 - 2.0 / 3.0).abs() < 1e-6, "{:?}", s.next);
    assert!((s.next[1][0].1 - 1.0 / 3.0).abs() < 1e-6, "{:?}", s.next);
    // Co-occurrence is symmetric: all three users had both: cos = 1.
    assert_eq!(s.co[0], [(1, 1.0)]);
    assert_eq!(s.co[1], [(0, 1.0)]);
}

#[test]
fn the_window_bounds_what_counts_as_after_and_decays_with_the_gap() {
    let train = log(&[(0, 0), (0, 1), (0, 2), (0, 3)]);
    let cfg = Config {
        window: 2,
        ..Config::default()
    };
    let s = Sources::fit(&train, 4, &cfg);
    // From 0: 1 at gap 0 (weight 1), 2 at gap 1 (weight ½), 3 is too far.
    assert_eq!(s.next[0], [(1, 1.0), (2, 0.5)]);
}

#[test]
fn recent_popularity_ranks_what_is_hot_now_first() {
    // Item 0 was popular long ago; item 1 is taken in the newest tenth.
    let mut train = log(&[(0, 0), (1, 0), (2, 0)]);
    train.push(Interaction {
        user: 3,
        item: 1,
        ts: 100,
        kind: Kind::View,
    });
    let s = Sources::fit(&train, 2, &Config::default());
    assert_eq!(s.popular(), [1, 0]);
}

/// A log where each user takes three items in a row of a ring of ten:
/// `a`, `a + 1`, `a + 2` — what follows an item is what comes next.
fn chains() -> Vec<Interaction> {
    let mut rows = Vec::new();
    for u in 0..300u32 {
        for s in 0..3 {
            rows.push(Interaction {
                user: u,
                item: (u % 10 + s) % 10,
                ts: rows.len() as i64,
                kind: Kind::View,
            });
        }
    }
    rows
}

#[test]
fn the_ranker_learns_that_what_follows_predicts_the_next_item() {
    let train = chains();
    let (m, report) = Hybrid::fit(&train, 10, Config::default(), &|_| ()).unwrap();
    assert!(report.targets > 0 && report.targets_with_candidate > 0);
    // The "next" features carry positive weight.
    assert!(
        report.weights[0].1 > 0.0 || report.weights[1].1 > 0.0,
        "{report:?}"
    );
    // 3 and 5 both co-occur with 4, but 5 follows it: ranked first,
    // with "after 4" as the reason.
    let r = m.rank(&[4], 3, &|i| i == 4);
    assert_eq!(r[0].item, 5, "{r:?} {report:?}");
    assert_eq!(r[0].reason, Reason::After(4));
    assert!(r[0].score >= r[1].score);
    // Excluded items never come back, even as fill.
    let r = m.rank(&[4], 10, &|i| i == 5);
    assert!(r.iter().all(|s| s.item != 5));
    assert_eq!(r.len(), 9);
    // Validated on later interactions: chains are predictable, so the
    // next item is nearly always ranked first, and NDCG can never
    // exceed HR.
    let v = report.validation.expect("validated");
    assert!(v.targets > 0, "{v:?}");
    assert!(v.hr_at_10 > 0.9 && v.hr_at_10 <= 1.0, "{v:?}");
    assert!(v.ndcg_at_10 > 0.8 && v.ndcg_at_10 <= v.hr_at_10, "{v:?}");
}

#[test]
fn validation_counts_a_hit_at_its_rank() {
    // Users 0–19 go 1 → 2; user 20 goes 1 → 2 after the cut: with 1 in
    // its history, 2 is what follows — the first item, so HR = NDCG = 1.
    let mut log = Vec::new();
    for u in 0..20u32 {
        for item in [1, 2] {
            log.push(Interaction {
                user: u,
                item,
                ts: log.len() as i64,
                kind: Kind::View,
            });
        }
    }
    let split = log.len();
    log.push(Interaction {
        user: 20,
        item: 1,
        ts: 100,
        kind: Kind::View,
    });
    log.push(Interaction {
        user: 20,
        item: 2,
        ts: 101,
        kind: Kind::View,
    });
    let cfg = Config::default();
    let m = Hybrid {
        sources: Sources::fit(&log[..split], 3, &cfg),
        mean: vec![0.0; N],
        scale: vec![1.0; N],
        weights: PRIOR.to_vec(),
        intercept: 0.0,
        repeats: false,
        cfg: Some(cfg),
    };
    // Target: the second interaction after the cut (index 1).
    let v = validate(&m, &log, split, &HashSet::from([1]), false);
    assert_eq!(v.targets, 1);
    assert_eq!((v.hr_at_10, v.ndcg_at_10), (1.0, 1.0), "{v:?}");
    // An item nobody took is never in the list: a miss.
    log[split + 1].item = 0;
    let v = validate(&m, &log, split, &HashSet::from([1]), false);
    assert_eq!((v.hr_at_10, v.ndcg_at_10), (0.0, 0.0), "{v:?}");
}

#[test]
fn a_serialised_model_ranks_the_same() {
    let (m, _) = Hybrid::fit(&chains(), 10, Config::default(), &|_| ()).unwrap();
    let back: Hybrid = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(
        m.recommend(&[1, 2], 5, &|_| false),
        back.recommend(&[1, 2], 5, &|_| false)
    );
}

#[test]
fn a_model_saved_before_the_embedding_still_loads_and_ranks() {
    let (m, _) = Hybrid::fit(&chains(), 10, Config::default(), &|_| ()).unwrap();
    let mut v = serde_json::to_value(&m).unwrap();
    v["sources"].as_object_mut().unwrap().remove("embed");
    for k in ["mean", "scale", "weights"] {
        v[k].as_array_mut().unwrap().truncate(7);
    }
    let old: Hybrid = serde_json::from_value(v).unwrap();
    let r = old.recommend(&[1, 2], 5, &|_| false);
    assert_eq!(r.len(), 5);
    // Without the embedding (too small a catalogue for it here), the
    // eighth feature is zero everywhere: the ranking is the same.
    assert_eq!(r, m.recommend(&[1, 2], 5, &|_| false));
}

#[test]
fn with_repeats_the_users_own_items_are_candidates() {
    let cfg = Config {
        repeats: true,
        ..Config::default()
    };
    let train = chains();
    let (m, _) = Hybrid::fit(&train, 10, cfg, &|_| ()).unwrap();
    let r = m.rank(&[7], 20, &|_| false);
    let again = r.iter().find(|s| s.item == 7).expect("own item offered");
    assert_eq!(again.reason, Reason::Again);
}

#[test]
fn a_log_written_in_one_instant_still_trains() {
    let mut train = chains();
    for i in &mut train {
        i.ts = 7;
    }
    let (m, report) = Hybrid::fit(&train, 10, Config::default(), &|_| ()).unwrap();
    assert!(report.targets > 0);
    assert_eq!(m.recommend(&[4], 1, &|i| i == 4), [5]);
}

#[test]
fn two_items_rank_with_prior_weights() {
    let train = log(&[
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
    ]);
    let (m, report) = Hybrid::fit(&train, 2, Config::default(), &|_| ()).unwrap();
    assert!(!report.learned);
    let r = m.rank(&[0], 1, &|i| i == 0);
    assert_eq!((r[0].item, r[0].reason), (1, Reason::After(0)));
}

#[test]
fn the_embedding_puts_items_of_one_taste_together() {
    // Two tastes: users 0–9 take items 0–4, users 10–19 items 5–9.
    let mut log = Vec::new();
    for u in 0..20u32 {
        let items = if u < 10 { 0..5u32 } else { 5..10 };
        for i in items {
            log.push(Interaction {
                user: u,
                item: i,
                ts: log.len() as i64,
                kind: Kind::View,
            });
        }
    }
    let cfg = Config {
        embed_dim: 2,
        ..Config::default()
    };
    let s = Sources::fit(&log, 10, &cfg);
    for (a, same) in [(0u32, 0..5u32), (7, 5..10)] {
        let near = &s.embed[a as usize];
        let top: HashSet<u32> = near.iter().take(4).map(|(i, _)| *i).collect();
        let expected: HashSet<u32> = same.clone().filter(|&i| i != a).collect();
        assert_eq!(top, expected, "{near:?}");
        assert!(near[..4].iter().all(|(_, s)| *s > 0.99), "{near:?}");
        assert!(near[4..].iter().all(|(_, s)| *s < 0.01), "{near:?}");
    }
    // Too few items for the rank: no embedding, and no candidates from it.
    let s = Sources::fit(
        &log,
        10,
        &Config {
            embed_dim: 32,
            ..Config::default()
        },
    );
    assert!(s.embed.is_empty());
}

#[test]
fn too_little_data_is_a_clear_error() {
    let e = Hybrid::fit(&log(&[(0, 0)]), 1, Config::default(), &|_| ()).unwrap_err();
    assert!(matches!(e, FitError::TooLittleData { .. }), "{e}");
    assert!(e.to_string().contains("too little data"), "{e}");
}
