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

impl MostPopular {
    /// Tops `out` up to `k` with popular items (when a model had too little
    /// to go on), never repeating one.
    pub fn fill(
        &self,
        mut out: Vec<u32>,
        history: &[u32],
        k: usize,
        exclude: &dyn Fn(u32) -> bool,
    ) -> Vec<u32> {
        if out.len() < k {
            let more = self.recommend(history, k, &|i| exclude(i) || out.contains(&i));
            out.extend(more.into_iter().take(k - out.len()));
        }
        out
    }
}

/// The `k` best-scored items, ties by id.
fn top_k(scores: HashMap<u32, f32>, k: usize) -> Vec<u32> {
    let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
    ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    ranked.into_iter().take(k).map(|(i, _)| i).collect()
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
        let out = top_k(scores, k);
        self.fallback.fill(out, history, k, exclude)
    }
}

/// Each user's distinct items, newest first, at most `cap`.
fn distinct_per_user(train: &[Interaction], cap: usize) -> Vec<Vec<u32>> {
    let mut by_user: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in train {
        by_user.entry(i.user).or_default().push(i.item);
    }
    let mut users: Vec<(u32, Vec<u32>)> = by_user.into_iter().collect();
    users.sort_by_key(|(u, _)| *u);
    users
        .into_iter()
        .map(|(_, list)| {
            let mut seen = std::collections::HashSet::new();
            let mut d: Vec<u32> = list
                .iter()
                .rev()
                .copied()
                .filter(|i| seen.insert(*i))
                .collect();
            d.truncate(cap);
            d
        })
        .collect()
}

/// EASE (Steck 2019): a linear item-to-item model with a closed form,
/// `B = I − P · diag(1 / diag(P))` with `P = (XᵀX + λI)⁻¹` and `diag(B) = 0`,
/// inverted with linfa-linalg's Cholesky. The dense inverse bounds the
/// catalogue it can learn: the `max_items` most popular items (others only
/// come from the popularity fill).
#[derive(Debug)]
pub struct Ease {
    /// Dense index of each learned item, by item id.
    index: HashMap<u32, usize>,
    items: Vec<u32>,
    /// `b[[i, j]]`: how much having item `i` speaks for item `j`.
    b: ndarray::Array2<f32>,
    fallback: MostPopular,
}

impl Ease {
    pub fn fit(
        train: &[Interaction],
        items: usize,
        max_items: usize,
        lambda: f64,
    ) -> Result<Self, crate::model::FitError> {
        use linfa_linalg::cholesky::InverseC;
        let fallback = MostPopular::fit(train, items);
        let kept: Vec<u32> = fallback.ranked.iter().copied().take(max_items).collect();
        let index: HashMap<u32, usize> = kept.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        let n = kept.len();
        let mut g = ndarray::Array2::<f64>::zeros((n, n));
        for list in distinct_per_user(train, usize::MAX) {
            let cols: Vec<usize> = list.iter().filter_map(|i| index.get(i).copied()).collect();
            for &a in &cols {
                for &b in &cols {
                    g[[a, b]] += 1.0;
                }
            }
        }
        for k in 0..n {
            g[[k, k]] += lambda;
        }
        let p = g.invc()?;
        let mut b = ndarray::Array2::<f32>::zeros((n, n));
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    b[[i, j]] = (-p[[i, j]] / p[[j, j]]) as f32;
                }
            }
        }
        Ok(Self {
            index,
            items: kept,
            b,
            fallback,
        })
    }
}

impl Recommender for Ease {
    fn name(&self) -> &'static str {
        "ease"
    }

    fn recommend(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let n = self.items.len();
        let mut scores = vec![0f32; n];
        let mut any = false;
        let mut seen = std::collections::HashSet::new();
        for h in history {
            if let Some(&row) = self.index.get(h)
                && seen.insert(row)
            {
                any = true;
                for (s, v) in scores.iter_mut().zip(self.b.row(row)) {
                    *s += v;
                }
            }
        }
        let mut out: Vec<u32> = Vec::new();
        if any {
            let mut ranked: Vec<(usize, f32)> = scores
                .into_iter()
                .enumerate()
                .filter(|&(j, _)| !exclude(self.items[j]))
                .collect();
            ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            out = ranked
                .into_iter()
                .take(k)
                .map(|(j, _)| self.items[j])
                .collect();
        }
        self.fallback.fill(out, history, k, exclude)
    }
}

/// Session-kNN: the training users whose items overlap most with the
/// newest items of this history (cosine of the item sets) vote for their
/// other items, weighted by that similarity.
#[derive(Debug)]
pub struct SessionKnn {
    sessions: Vec<Vec<u32>>,
    /// Sessions holding each item, newest session last.
    by_item: Vec<Vec<u32>>,
    fallback: MostPopular,
    /// Newest history items compared.
    recent: usize,
    /// Sessions looked at per history item.
    sample: usize,
    /// Neighbours that vote.
    neighbours: usize,
}

impl SessionKnn {
    pub fn fit(train: &[Interaction], items: usize) -> Self {
        let sessions = distinct_per_user(train, 200);
        let mut by_item = vec![Vec::new(); items];
        for (s, list) in sessions.iter().enumerate() {
            for &i in list {
                by_item[i as usize].push(s as u32);
            }
        }
        Self {
            sessions,
            by_item,
            fallback: MostPopular::fit(train, items),
            recent: 20,
            sample: 500,
            neighbours: 100,
        }
    }
}

impl Recommender for SessionKnn {
    fn name(&self) -> &'static str {
        "session-knn"
    }

    fn recommend(&self, history: &[u32], k: usize, exclude: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        let query: Vec<u32> = history
            .iter()
            .rev()
            .copied()
            .filter(|i| seen.insert(*i))
            .take(self.recent)
            .collect();
        let mut overlap: HashMap<u32, f32> = HashMap::new();
        for &i in &query {
            if let Some(list) = self.by_item.get(i as usize) {
                for &s in list.iter().rev().take(self.sample) {
                    *overlap.entry(s).or_default() += 1.0;
                }
            }
        }
        let q = (query.len().max(1)) as f32;
        let mut near: Vec<(u32, f32)> = overlap
            .into_iter()
            .map(|(s, o)| (s, o / (q * self.sessions[s as usize].len() as f32).sqrt()))
            .collect();
        near.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        near.truncate(self.neighbours);
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (s, sim) in near {
            for &j in &self.sessions[s as usize] {
                if !exclude(j) {
                    *scores.entry(j).or_default() += sim;
                }
            }
        }
        let out = top_k(scores, k);
        self.fallback.fill(out, history, k, exclude)
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
    fn ease_matches_the_closed_form_worked_by_hand() {
        // One user took items 0 and 1: XᵀX = [[1,1],[1,1]]; with λ = 1,
        // P = [[2,1],[1,2]]⁻¹ = ⅓[[2,−1],[−1,2]], B₀₁ = −P₀₁ / P₁₁ = ½.
        let train = log(&[(0, 0), (0, 1)]);
        let m = Ease::fit(&train, 2, 10, 1.0).unwrap();
        let b01 = m.b[[m.index[&0], m.index[&1]]];
        assert!((b01 - 0.5).abs() < 1e-6, "{b01}");
        assert_eq!(m.b[[0, 0]], 0.0);
        assert_eq!(m.recommend(&[0], 1, &|i| i == 0), [1]);
    }

    #[test]
    fn ease_prefers_what_co_occurs_and_fills_with_popularity() {
        let train = log(&[
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 3),
        ]);
        let m = Ease::fit(&train, 4, 10, 0.5).unwrap();
        // Item 2 is the most popular, but item 1 goes with item 0.
        assert_eq!(m.recommend(&[0], 1, &|i| i == 0), [1]);
        // No history the model knows: popularity.
        assert_eq!(m.recommend(&[], 2, &|_| false), [2, 0]);
    }

    #[test]
    fn session_knn_votes_with_the_most_similar_users() {
        // Users 0–2 share items 0 and 1; user 0 also had 4, users 1 and 2
        // had 5. User 3 only had 0 and 6.
        let train = log(&[
            (0, 0),
            (0, 1),
            (0, 4),
            (1, 0),
            (1, 1),
            (1, 5),
            (2, 0),
            (2, 1),
            (2, 5),
            (3, 0),
            (3, 6),
        ]);
        let m = SessionKnn::fit(&train, 7);
        let r = m.recommend(&[0, 1], 2, &|i| i == 0 || i == 1);
        assert_eq!(r[0], 5, "{r:?}");
        assert!(r.contains(&4) || r.contains(&6));
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
