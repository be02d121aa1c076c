//! Ranking metrics for one held-out target in a list of recommendations.

/// The target's 1-based rank among the first `k` recommendations.
pub fn rank(list: &[u32], target: u32, k: usize) -> Option<usize> {
    list.iter()
        .take(k)
        .position(|&i| i == target)
        .map(|p| p + 1)
}

/// 1 if the target is in the first `k`, else 0.
pub fn hit(list: &[u32], target: u32, k: usize) -> f64 {
    f64::from(u8::from(rank(list, target, k).is_some()))
}

/// 1 / rank of the target within the first `k`, else 0.
pub fn reciprocal_rank(list: &[u32], target: u32, k: usize) -> f64 {
    rank(list, target, k).map_or(0.0, |r| 1.0 / r as f64)
}

/// NDCG for one relevant item: 1 / log2(rank + 1) within the first `k`
/// (the ideal DCG is 1), else 0.
pub fn ndcg(list: &[u32], target: u32, k: usize) -> f64 {
    rank(list, target, k).map_or(0.0, |r| 1.0 / ((r + 1) as f64).log2())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_by_hand() {
        let list = [5, 9, 2, 7];
        // Target at rank 3.
        assert_eq!(rank(&list, 2, 10), Some(3));
        assert_eq!(hit(&list, 2, 10), 1.0);
        assert_eq!(hit(&list, 2, 2), 0.0);
        assert!((reciprocal_rank(&list, 2, 10) - 1.0 / 3.0).abs() < 1e-12);
        // 1 / log2(4) = 0.5
        assert!((ndcg(&list, 2, 10) - 0.5).abs() < 1e-12);
        // Rank 1: every metric is 1.
        assert_eq!(
            (
                hit(&list, 5, 1),
                reciprocal_rank(&list, 5, 1),
                ndcg(&list, 5, 1)
            ),
            (1.0, 1.0, 1.0)
        );
        // Missing: all 0.
        assert_eq!(
            (
                hit(&list, 4, 10),
                reciprocal_rank(&list, 4, 10),
                ndcg(&list, 4, 10)
            ),
            (0.0, 0.0, 0.0)
        );
    }
}
