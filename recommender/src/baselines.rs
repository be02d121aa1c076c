//! Baselines every model is compared with.

use std::collections::HashMap;

use crate::{Recommender, data::Interaction};

/// The items with the most interactions in training, for everyone.
#[derive(Debug)]
pub struct MostPopular {
    ranked: Vec<u32>,
}

impl MostPopular {
    pub fn fit(train: &[Interaction], items: usize) -> Self {
        let mut counts = vec![0u32; items];
        for i in train {
            counts[i.item as usize] += 1;
        }
        let mut ranked: Vec<u32> = (0..items as u32)
            .filter(|&i| counts[i as usize] > 0)
            .collect();
        // Most interactions first; ties by id, so results are reproducible.
        ranked.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
        Self { ranked }
    }
}

impl Recommender for MostPopular {
    fn name(&self) -> &'static str {
        "most-popular"
    }

    fn recommend(&self, _history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32> {
        self.ranked
            .iter()
            .copied()
            .filter(|&i| !exclude(i))
            .take(k)
            .collect()
    }
}

/// Item-kNN on co-occurrence: two items are similar when the same users
/// touched both (cosine of their user sets); a user's candidates are the
/// neighbours of their most recent items, scored by summed similarity.
#[derive(Debug)]
pub struct ItemKnn {
    /// Each item's nearest neighbours, most similar first.
    neighbours: Vec<Vec<(u32, f32)>>,
    fallback: MostPopular,
    /// How many of the newest history items are looked at.
    recent: usize,
}

impl ItemKnn {
    /// `per_user` caps the items per user counted (their newest), which
    /// bounds the pair count; `keep` is neighbours kept per item.
    pub fn fit(train: &[Interaction], items: usize, per_user: usize, keep: usize) -> Self {
        let mut by_user: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in train {
            by_user.entry(i.user).or_default().push(i.item);
        }
        let mut count = vec![0f32; items];
        let mut pairs: Vec<HashMap<u32, f32>> = vec![HashMap::new(); items];
        for list in by_user.values_mut() {
            // Distinct items, newest kept.
            let mut seen = std::collections::HashSet::new();
            let mut distinct: Vec<u32> = list
                .iter()
                .rev()
                .copied()
                .filter(|i| seen.insert(*i))
                .collect();
            distinct.truncate(per_user);
            for &a in &distinct {
                count[a as usize] += 1.0;
                for &b in &distinct {
                    if a != b {
                        *pairs[a as usize].entry(b).or_default() += 1.0;
                    }
                }
            }
        }
        let neighbours = pairs
            .into_iter()
            .enumerate()
            .map(|(a, m)| {
                let mut n: Vec<(u32, f32)> = m
                    .into_iter()
                    .map(|(b, c)| (b, c / (count[a] * count[b as usize]).sqrt()))
                    .collect();
                n.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                n.truncate(keep);
                n
            })
            .collect();
        Self {
            neighbours,
            fallback: MostPopular::fit(train, items),
            recent: 20,
        }
    }
}

impl Recommender for ItemKnn {
    fn name(&self) -> &'static str {
        "item-knn"
    }

    fn recommend(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (age, &h) in history.iter().rev().take(self.recent).enumerate() {
            // Newer history weighs more.
            let w = 1.0 / (1.0 + age as f32 * 0.1);
            for &(j, s) in self.neighbours.get(h as usize).map_or(&[][..], |v| &v[..]) {
                if !exclude(j) {
                    *scores.entry(j).or_default() += w * s;
                }
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut out: Vec<u32> = ranked.into_iter().take(k).map(|(i, _)| i).collect();
        if out.len() < k {
            // Too little history: fill with what is popular.
            let more = self
                .fallback
                .recommend(history, k, &|i| exclude(i) || out.contains(&i));
            out.extend(more.into_iter().take(k - out.len()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Kind;

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
    fn most_popular_ranks_by_count_then_id_and_skips_excluded() {
        let train = log(&[(0, 2), (1, 2), (2, 1), (0, 1), (1, 0)]);
        let m = MostPopular::fit(&train, 4);
        assert_eq!(m.recommend(&[], 10, &|_| false), [1, 2, 0]);
        assert_eq!(m.recommend(&[], 10, &|i| i == 1), [2, 0]);
    }

    #[test]
    fn item_knn_follows_co_occurrence() {
        // Users 0 and 1 took items 0 and 1 together; user 2 took 0 and 2.
        let train = log(&[
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (2, 0),
            (2, 2),
            (3, 3),
            (4, 3),
        ]);
        let m = ItemKnn::fit(&train, 4, 100, 10);
        // cos(0,1) = 2 / sqrt(3·2) = 0.816; cos(0,2) = 1 / sqrt(3·1) = 0.577.
        assert_eq!(m.recommend(&[0], 2, &|i| i == 0), [1, 2]);
        // Item 3 shares no user with 0: it only comes as popularity fill.
        assert_eq!(m.recommend(&[0], 3, &|i| i == 0), [1, 2, 3]);
        // From item 2, item 0 is the one neighbour.
        assert_eq!(m.recommend(&[2], 1, &|i| i == 2), [0]);
    }
}
