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
