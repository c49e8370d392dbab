//! Errors of the alert library, each naming what it failed on and whether a retry can help.

/// What went wrong while alerting.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The sent-records store (a local file or DynamoDB) could not be read or written.
    #[error("alert state {location}: {message}")]
    State { location: String, message: String, retryable: bool },
    /// An alert could not be published nor written to the dead-letter place: nothing may be
    /// acknowledged, so the caller must retry.
    #[error("dead letter {location}: {message}")]
    DeadLetter { location: String, message: String },
    /// A findings object from the lake could not be read.
    #[error("findings {uri}: {message}")]
    Findings { uri: String, message: String, retryable: bool },
}

impl AlertError {
    /// Whether running the same event again can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlertError::State { retryable, .. } | AlertError::Findings { retryable, .. } => *retryable,
            AlertError::DeadLetter { .. } => true,
        }
    }
}
