//! The learned model: several candidate sources, and a logistic-regression
//! ranker (linfa-logistic) over their scores, trained chronologically to
//! predict the next interaction.
//!
//! Candidate sources, all fitted from the interaction log:
//! - **next**: what users took *after* an item, within a few steps, weighed
//!   by how close it followed (order and recency, which EASE and plain
//!   co-occurrence ignore);
//! - **co**: item-to-item co-occurrence (cosine of the user sets);
//! - **embedding**: the nearest neighbours of an item in a low-rank
//!   factorisation of the user × item matrix (linfa-linalg's truncated SVD
//!   on a sample of the most popular items and most active users),
//!   precomputed at training time;
//! - **popular**: overall and in the newest tenth of the log (trending);
//! - **again**: the user's own items, where repeats happen (groceries).
//!
//! Features of a candidate for a history: the decayed sum of its *next*
//! scores from the newest history items, its *next* score from the newest
//! item alone, the decayed *co* score, log popularity overall and recently,
//! how often and how recently the user took it. The ranker learns their
//! weights on the last fifth of the training log, with sources fitted on the
//! four fifths before it; the sources are then refitted on everything.

use std::collections::{HashMap, HashSet};

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::{Recommender, data::Interaction};

/// The feature names, in the ranker's order.
pub const FEATURES: [&str; N] = [
    "next",
    "next_from_newest",
    "co",
    "popularity",
    "recent_popularity",
    "times_taken",
    "taken_recency",
    "embedding",
];

/// The number of features.
pub const N: usize = 8;

/// Weights used when there is nothing to learn them from: what follows and
/// what goes with the history first, then popularity.
const PRIOR: [f32; N] = [1.0, 1.0, 1.0, 0.1, 0.2, 0.5, 0.5, 0.5];

/// Training knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many steps ahead count as "after".
    pub window: usize,
    /// Neighbours kept per item and source.
    pub keep: usize,
    /// Newest items per user counted for co-occurrence (bounds the pairs).
    pub co_per_user: usize,
    /// Newest distinct history items a request looks at.
    pub recent: usize,
    /// Candidates taken from each source.
    pub per_source: usize,
    /// Training targets for the ranker (spread over the last fifth).
    pub max_targets: usize,
    /// Negative candidates kept per target.
    pub negatives: usize,
    /// Whether users take items again (then their own items are candidates).
    pub repeats: bool,
    /// Item embeddings: the truncated SVD's rank (0: no embedding source)…
    pub embed_dim: usize,
    /// …over this many of the most popular items…
    pub embed_items: usize,
    /// …and this many of the most active users (a dense matrix: the sample
    /// keeps it within memory and time at any catalogue size).
    pub embed_users: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: 5,
            keep: 100,
            co_per_user: 50,
            recent: 20,
            per_source: 100,
            max_targets: 5_000,
            negatives: 30,
            repeats: false,
            embed_dim: 32,
            embed_items: 3_000,
            embed_users: 5_000,
        }
    }
}

/// Why an item was recommended: the source that contributed most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Users took it after this item.
    After(u32),
    /// Users took it together with this item.
    With(u32),
    /// It is near this item in the learned embedding (similar taste).
    Like(u32),
    /// The user took it before.
    Again,
    /// It is popular (recently).
    Popular,
}

/// One ranked item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub item: u32,
    /// The ranker's probability that this is the next item.
    pub score: f32,
    pub reason: Reason,
}

/// The fitted candidate sources.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sources {
    next: Vec<Vec<(u32, f32)>>,
    co: Vec<Vec<(u32, f32)>>,
    /// Nearest neighbours in the embedding (empty for items outside it).
    #[serde(default)]
    embed: Vec<Vec<(u32, f32)>>,
    popularity: Vec<f32>,
    recent_popularity: Vec<f32>,
    /// Items by recent popularity, then overall.
    popular: Vec<u32>,
}

fn keep_top(m: HashMap<u32, f32>, keep: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = m.into_iter().collect();
    v.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    v.truncate(keep);
    v
}

/// Item embeddings from a truncated SVD (linfa-linalg's LOBPCG
/// `TruncatedSvd`) of the user × item matrix, and each embedded item's
/// nearest neighbours by cosine, precomputed here so that serving never
/// searches. The matrix is dense, so it is sampled: the `embed_items` most
/// popular items and the `embed_users` users with the most interactions
/// among them (rows scaled to unit length, so heavy users do not dominate).
/// Fewer items or users than twice the rank: no embedding.
fn embed(users: &[(u32, Vec<u32>)], count: &[f32], cfg: &Config) -> Vec<Vec<(u32, f32)>> {
    use linfa_linalg::{Order, lobpcg::TruncatedSvd};
    use rand::SeedableRng;

    let k = cfg.embed_dim;
    let mut top: Vec<u32> = (0..count.len() as u32)
        .filter(|&i| count[i as usize] > 0.0)
        .collect();
    top.sort_by(|&a, &b| {
        count[b as usize]
            .total_cmp(&count[a as usize])
            .then(a.cmp(&b))
    });
    top.truncate(cfg.embed_items);
    if k == 0 || top.len() < 2 * k {
        return Vec::new();
    }
    let col: HashMap<u32, usize> = top.iter().enumerate().map(|(c, &i)| (i, c)).collect();
    let mut rows: Vec<Vec<usize>> = users
        .iter()
        .map(|(_, seq)| {
            let mut r: Vec<usize> = seq.iter().filter_map(|i| col.get(i).copied()).collect();
            r.sort_unstable();
            r.dedup();
            r
        })
        .filter(|r| !r.is_empty())
        .collect();
    // Stable: among equally active users, user order decides.
    rows.sort_by_key(|r| std::cmp::Reverse(r.len()));
    rows.truncate(cfg.embed_users);
    if rows.len() < 2 * k {
        return Vec::new();
    }
    let mut m = Array2::<f64>::zeros((rows.len(), top.len()));
    for (r, cols) in rows.iter().enumerate() {
        let v = 1.0 / (cols.len() as f64).sqrt();
        for &c in cols {
            m[[r, c]] = v;
        }
    }
    let rng = rand::rngs::StdRng::seed_from_u64(7);
    let Ok(svd) = TruncatedSvd::new_with_rng(m, Order::Largest, rng)
        .precision(1e-3)
        .maxiter(200)
        .decompose(k)
    else {
        return Vec::new();
    };
    let (_, sigma, vt) = svd.values_vectors();
    // Items as rows of V·Σ, scaled to unit length: dot product = cosine.
    let mut e = Array2::<f32>::from_shape_fn((vt.ncols(), vt.nrows()), |(i, d)| {
        (vt[[d, i]] * sigma[d]) as f32
    });
    for mut row in e.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 1e-12 {
            row.mapv_inplace(|x| x / norm);
        }
    }
    let sim = e.dot(&e.t());
    let mut out = vec![Vec::new(); count.len()];
    for (a, row) in sim.rows().into_iter().enumerate() {
        let mut near: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .filter(|&(b, &s)| b != a && s > 0.0)
            .map(|(b, &s)| (top[b], s))
            .collect();
        let order = |x: &(u32, f32), y: &(u32, f32)| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0));
        if near.len() > cfg.keep {
            near.select_nth_unstable_by(cfg.keep, order);
            near.truncate(cfg.keep);
        }
        near.sort_by(order);
        out[top[a] as usize] = near;
    }
    out
}

/// An item's neighbour list in one source (empty for an item it lacks).
fn neighbours(list: &[Vec<(u32, f32)>], item: u32) -> &[(u32, f32)] {
    list.get(item as usize).map_or(&[], Vec::as_slice)
}

/// The neighbours a request takes from one source for one history item.
fn top<'a>(list: &'a [Vec<(u32, f32)>], item: u32, cfg: &Config) -> &'a [(u32, f32)] {
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
    fn candidates(
        &self,
        history: &[u32],
        cfg: &Config,
        exclude: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, [f32; N], Reason)> {
        let mut seen = HashSet::new();
        let recent: Vec<u32> = history
            .iter()
            .rev()
            .copied()
            .filter(|i| seen.insert(*i))
            .take(cfg.recent)
            .collect();
        // Per candidate: features and the best single contribution.
        let mut rows: HashMap<u32, ([f32; N], Reason, f32)> = HashMap::new();
        let n = self.items() as u32;
        let add = |rows: &mut HashMap<u32, ([f32; N], Reason, f32)>,
                   c: u32,
                   f: usize,
                   v: f32,
                   why: Reason| {
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

/// The whole model: sources and the ranker's weights.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Hybrid {
    pub sources: Sources,
    /// Feature scaling (mean, standard deviation), then weights.
    mean: Vec<f32>,
    scale: Vec<f32>,
    weights: Vec<f32>,
    intercept: f32,
    repeats: bool,
    #[serde(skip)]
    cfg: Option<Config>,
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
fn validate(
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
fn cut(train: &[Interaction], fraction: f64) -> usize {
    let n = train.len();
    let at = ((n as f64) * fraction) as usize;
    let mut cut = at;
    while cut > 0 && cut < n && train[cut].ts == train[cut - 1].ts {
        cut += 1;
    }
    if cut >= n { at.min(n) } else { cut }
}

impl Hybrid {
    /// Fits the sources and the ranker. `progress` hears each phase.
    pub fn fit(
        train: &[Interaction],
        items: usize,
        cfg: Config,
        progress: &dyn Fn(&str),
    ) -> Result<(Self, TrainingReport), String> {
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
            return Err(format!(
                "too little data to train the ranker: {targets} targets, {found} with a candidate"
            ));
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
            .fit(&linfa::Dataset::new(records, targets_arr))
            .map_err(|e| format!("the ranker did not fit: {e}"))?;
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

    fn cfg(&self) -> Config {
        self.cfg.clone().unwrap_or(Config {
            repeats: self.repeats,
            ..Config::default()
        })
    }

    /// The ranker's log-odds for a feature row (ranked on, as the
    /// probability saturates).
    fn logit(&self, f: &[f32; N]) -> f32 {
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
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.item.cmp(&b.1.item)));
        let mut out: Vec<Scored> = ranked.into_iter().take(k).map(|(_, s)| s).collect();
        if out.len() < k {
            // Rare: more excluded than candidates; the popular rest.
            for &c in self.sources.popular() {
                if out.len() >= k {
                    break;
                }
                if !exclude(c) && !out.iter().any(|s| s.item == c) {
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
        assert!(e.contains("too little data"), "{e}");
    }
}
