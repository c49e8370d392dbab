//! Detect's errors. Each names the lake object, state file or config it failed on and says
//! whether a retry can help.

/// What went wrong in detect.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The configuration file is not valid.
    #[error("config {origin}: {message}")]
    Config { origin: String, message: String },
    /// A lake object could not be listed or read from the store.
    #[error("{0}")]
    Store(#[from] trailwatch_core::store::StoreError),
    /// A lake file is not the Parquet the lake's schema promises. The file is skipped and
    /// reported; its neighbours are still read.
    #[error("lake file {uri}: {message}")]
    BadLakeFile { uri: String, message: String },
    /// The detector state could not be loaded or saved.
    #[error("state {location}: {message}")]
    State { location: String, message: String, retryable: bool },
    /// The findings could not be encoded or stored.
    #[error("findings {location}: {message}")]
    Findings { location: String, message: String, retryable: bool },
}

impl DetectError {
    /// True when running again can succeed without changing the input (throttling, network,
    /// a lost conditional write); false for bad config or bad files.
    pub fn is_retryable(&self) -> bool {
        match self {
            DetectError::Config { .. } | DetectError::BadLakeFile { .. } => false,
            DetectError::Store(e) => e.retryable,
            DetectError::State { retryable, .. } | DetectError::Findings { retryable, .. } => *retryable,
        }
    }
}
