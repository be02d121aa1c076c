//! The candidate sources: next, co-occurrence, embedding neighbours,
//! popularity and repeats, fitted from the interaction log.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::*;
use crate::data::Interaction;

/// The fitted candidate sources.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sources {
    pub(super) next: Vec<Vec<(u32, f32)>>,
    pub(super) co: Vec<Vec<(u32, f32)>>,
    /// Nearest neighbours in the embedding (empty for items outside it).
    #[serde(default)]
    pub(super) embed: Vec<Vec<(u32, f32)>>,
    pub(super) popularity: Vec<f32>,
    pub(super) recent_popularity: Vec<f32>,
    /// Items by recent popularity, then overall.
    pub(super) popular: Vec<u32>,
}

pub(super) fn keep_top(m: HashMap<u32, f32>, keep: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = m.into_iter().collect();
    v.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    v.truncate(keep);
    v
}

/// An item's neighbour list in one source (empty for an item it lacks).
pub(super) fn neighbours(list: &[Vec<(u32, f32)>], item: u32) -> &[(u32, f32)] {
    list.get(item as usize).map_or(&[], Vec::as_slice)
}

/// The neighbours a request takes from one source for one history item.
pub(super) fn top<'a>(list: &'a [Vec<(u32, f32)>], item: u32, cfg: &Config) -> &'a [(u32, f32)] {
    let n = neighbours(list, item);
    &n[..n.len().min(cfg.per_source)]
}

impl Sources {
    pub fn fit(train: &[Interaction], items: usize, cfg: &Config) -> Self {
        let mut by_user: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in train {
            by_user.entry(i.user).or_default().push(i.item);
        }
        let mut users: Vec<(u32, Vec<u32>)> = by_user.into_iter().collect();
        users.sort_by_key(|(u, _)| *u);

        let mut count = vec![0f32; items];
        for i in train {
            count[i.item as usize] += 1.0;
        }
        let mut next: Vec<HashMap<u32, f32>> = vec![HashMap::new(); items];
        let mut users_of = vec![0f32; items];
        let mut pairs: Vec<HashMap<u32, f32>> = vec![HashMap::new(); items];
        for (_, seq) in &users {
            for (p, &a) in seq.iter().enumerate() {
                for (gap, &b) in seq.iter().skip(p + 1).take(cfg.window).enumerate() {
                    if a != b {
                        *next[a as usize].entry(b).or_default() += 1.0 / (1.0 + gap as f32);
                    }
                }
            }
            let mut seen = HashSet::new();
            let mut distinct: Vec<u32> = seq
                .iter()
                .rev()
                .copied()
                .filter(|i| seen.insert(*i))
                .collect();
            distinct.truncate(cfg.co_per_user);
            for &a in &distinct {
                users_of[a as usize] += 1.0;
                for &b in &distinct {
                    if a != b {
                        *pairs[a as usize].entry(b).or_default() += 1.0;
                    }
                }
            }
        }
        let next = next
            .into_iter()
            .enumerate()
            .map(|(a, m)| {
                let m = m
                    .into_iter()
                    .map(|(b, w)| (b, w / (count[a] * count[b as usize]).sqrt().max(1.0)))
                    .collect();
                keep_top(m, cfg.keep)
            })
            .collect();
        let co = pairs
            .into_iter()
            .enumerate()
            .map(|(a, m)| {
                let m = m
                    .into_iter()
                    .map(|(b, c)| (b, c / (users_of[a] * users_of[b as usize]).sqrt()))
                    .collect();
                keep_top(m, cfg.keep)
            })
            .collect();

        // Recent: the newest tenth of the log by time.
        let mut recent = vec![0f32; items];
        if let (Some(first), Some(last)) = (train.first(), train.last()) {
            let since = last.ts - (last.ts - first.ts) / 10;
            for i in train.iter().rev().take_while(|i| i.ts >= since) {
                recent[i.item as usize] += 1.0;
            }
        }
        let mut popular: Vec<u32> = (0..items as u32)
            .filter(|&i| count[i as usize] > 0.0)
            .collect();
        popular.sort_by(|&a, &b| {
            recent[b as usize]
                .total_cmp(&recent[a as usize])
                .then(count[b as usize].total_cmp(&count[a as usize]))
                .then(a.cmp(&b))
        });
        let embed = embed(&users, &count, cfg);
        Self {
            next,
            co,
            embed,
            popularity: count.iter().map(|c| c.ln_1p()).collect(),
            recent_popularity: recent.iter().map(|c| c.ln_1p()).collect(),
            popular,
        }
    }

    pub fn items(&self) -> usize {
        self.popularity.len()
    }

    /// Items most like `item` (co-occurrence, then what follows it).
    pub fn similar(&self, item: u32) -> Vec<(u32, f32)> {
        let mut out: Vec<(u32, f32)> = self.co.get(item as usize).cloned().unwrap_or_default();
        for &(j, s) in neighbours(&self.next, item) {
            if !out.iter().any(|(i, _)| *i == j) {
                out.push((j, s * 0.5));
            }
        }
        out
    }

    /// Items by recent popularity.
    pub fn popular(&self) -> &[u32] {
        &self.popular
    }

    /// Every candidate for a history with its feature row, and the history
    /// item that spoke most for it (for the reason).
    pub(super) fn candidates(
        &self,
        history: &[u32],
        cfg: &Config,
        exclude: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, [f32; N], Reason)> {
        let mut seen = ItemSet::default();
        let recent: Vec<u32> = history
            .iter()
            .rev()
            .copied()
            .filter(|i| seen.insert(*i))
            .take(cfg.recent)
            .collect();
        // Per candidate: features and the best single contribution.
        let mut rows: ItemMap<([f32; N], Reason, f32)> = ItemMap::default();
        let n = self.items() as u32;
        let add =
            |rows: &mut ItemMap<([f32; N], Reason, f32)>, c: u32, f: usize, v: f32, why: Reason| {
                if c >= n || exclude(c) {
                    return;
                }
                let e = rows.entry(c).or_insert(([0.0; N], Reason::Popular, 0.0));
                e.0[f] += v;
                if v > e.2 {
                    e.1 = why;
                    e.2 = v;
                }
            };
        for (age, &h) in recent.iter().enumerate() {
            let w = 1.0 / (1.0 + age as f32);
            for &(c, s) in top(&self.next, h, cfg) {
                add(&mut rows, c, 0, w * s, Reason::After(h));
                if age == 0 {
                    add(&mut rows, c, 1, s, Reason::After(h));
                }
            }
            for &(c, s) in top(&self.co, h, cfg) {
                add(&mut rows, c, 2, w * s, Reason::With(h));
            }
            for &(c, s) in top(&self.embed, h, cfg) {
                add(&mut rows, c, 7, w * s, Reason::Like(h));
            }
        }
        for &c in self.popular.iter().take(cfg.per_source) {
            add(&mut rows, c, 3, 0.0, Reason::Popular);
        }
        if cfg.repeats {
            for (age, &h) in history.iter().rev().enumerate() {
                add(&mut rows, h, 5, 1.0, Reason::Again);
                let e = rows.get_mut(&h);
                if let Some(e) = e
                    && e.0[6] == 0.0
                {
                    e.0[6] = 1.0 / (1.0 + age as f32);
                    e.1 = Reason::Again;
                    e.2 = f32::INFINITY;
                }
            }
        }
        let mut out: Vec<(u32, [f32; N], Reason)> = rows
            .into_iter()
            .map(|(c, (mut f, why, _))| {
                f[3] = self.popularity[c as usize];
                f[4] = self.recent_popularity[c as usize];
                f[5] = f[5].ln_1p();
                (c, f, why)
            })
            .collect();
        out.sort_by_key(|(c, _, _)| *c);
        out
    }
}
