//! The embedding source: a low-rank factorisation of a sampled user × item
//! matrix (linfa-linalg's truncated SVD), each item's nearest neighbours
//! precomputed.

use std::collections::HashMap;

use ndarray::Array2;

use super::*;

/// Item embeddings from a truncated SVD (linfa-linalg's LOBPCG
/// `TruncatedSvd`) of the user × item matrix, and each embedded item's
/// nearest neighbours by cosine, precomputed here so that serving never
/// searches. The matrix is dense, so it is sampled: the `embed_items` most
/// popular items and the `embed_users` users with the most interactions
/// among them (rows scaled to unit length, so heavy users do not dominate).
/// Fewer items or users than twice the rank: no embedding.
pub(super) fn embed(
    users: &[(u32, Vec<u32>)],
    count: &[f32],
    cfg: &Config,
) -> Vec<Vec<(u32, f32)>> {
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
