use std::path::PathBuf;

/// What a store call can fail with. Adapters map their own errors onto these
/// kinds so that callers handle one set, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write's condition did not hold; nothing was written.
    #[error("condition not met")]
    ConditionFailed,
    /// A transaction's condition did not hold for the operations at these
    /// indexes; nothing was written.
    #[error("transaction cancelled: condition not met for operation(s) {failed:?}")]
    TransactionCanceled { failed: Vec<usize> },
    /// Another transaction touched the same items at the same time and retries
    /// did not get through.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The item is larger than the backend accepts.
    #[error("item too large: {size} bytes, the limit is {limit} bytes")]
    ItemTooLarge { size: usize, limit: usize },
    /// A key attribute is longer than the backend accepts (DynamoDB: 2,048
    /// bytes for the partition key, 1,024 for the sort key).
    #[error("{attr} too large: {size} bytes, the limit is {limit} bytes")]
    KeyTooLarge {
        attr: &'static str,
        size: usize,
        limit: usize,
    },
    /// The items of one transaction add up to more than the backend takes
    /// at once (DynamoDB: 4 MB).
    #[error("transaction too large: about {size} bytes, the limit is {limit} bytes")]
    TransactionTooLarge { size: usize, limit: usize },
    /// The call itself is malformed (a bug in the caller).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The embedded data directory is held by another process.
    #[error(
        "the data file {} is in use by another shopstream process (is a server running?); \
         stop it, or do this through that server's API",
        path.display()
    )]
    InUse { path: PathBuf },
    /// The backend could not be reached or answered with a server error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be read back as the type asked for.
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Whether the store refused the request itself, so the same request
    /// fails the same way however often it is retried: an item, a key or a
    /// transaction too large, or a request the store finds invalid. (Races,
    /// throttling and outages are not: they pass.)
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::ItemTooLarge { .. }
                | StoreError::KeyTooLarge { .. }
                | StoreError::TransactionTooLarge { .. }
                | StoreError::Invalid(_)
        )
    }

    /// Whether a conditional write lost a race with another writer: read
    /// again and retry (see [`retry_contended`]).
    pub fn is_contention(&self) -> bool {
        matches!(
            self,
            StoreError::TransactionCanceled { .. } | StoreError::Conflict(_)
        )
    }
}

/// The tries of a read–modify–write that may lose races with other writers
/// ([`StoreError::is_contention`]): `while tries.next().await { … }` runs the
/// body at most `attempts` times, with a short jittered pause (growing,
/// under 0.3 s) before every try but the first.
#[derive(Debug)]
pub struct Contention {
    attempt: u32,
    attempts: u32,
}

impl Contention {
    pub fn new(attempts: u32) -> Self {
        Self {
            attempt: 0,
            attempts,
        }
    }

    /// Whether another try may run (after its pause).
    pub async fn next(&mut self) -> bool {
        if self.attempt >= self.attempts {
            return false;
        }
        if self.attempt > 0 {
            tokio::time::sleep(contention_pause(self.attempt - 1)).await;
        }
        self.attempt += 1;
        true
    }
}

/// Between `base` and twice `base`, where `base` doubles per try from 2 ms
/// up to 128 ms.
fn contention_pause(attempt: u32) -> std::time::Duration {
    use rand::Rng;
    let base = 2u64 << attempt.min(6);
    std::time::Duration::from_millis(base + rand::rng().random_range(0..base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tries_run_out_after_the_attempts() {
        let mut tries = Contention::new(4);
        let mut ran = 0;
        while tries.next().await {
            ran += 1;
        }
        assert_eq!(ran, 4);
        assert!(!tries.next().await, "no try after the last");
        assert!(StoreError::Conflict("x".into()).is_contention());
        assert!(StoreError::TransactionCanceled { failed: vec![0] }.is_contention());
        assert!(!StoreError::ConditionFailed.is_contention());
    }

    #[test]
    fn pauses_grow_and_stay_bounded() {
        for n in 0..10 {
            let base = 2u64 << n.min(6);
            let ms = contention_pause(n).as_millis() as u64;
            assert!((base..2 * base).contains(&ms), "{n}: {ms}");
        }
    }
}
