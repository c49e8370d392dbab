//! Ingest's errors. Each names the object it failed on, and says whether a retry can help.

use std::io;
use std::path::PathBuf;

use trailwatch_core::store::StoreError;

/// What was wrong with an object's bytes. None of these go away by retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// Truncated or corrupt gzip.
    Gzip,
    /// Decompression stopped by the byte or ratio cap.
    Bomb,
    /// Not JSON, or JSON cut off mid-value.
    Json,
    /// Valid JSON without a single CloudTrail record in it.
    NotCloudTrail,
    /// A payload carried in an encoding that does not decode (`awslogs.data` that is not base64).
    Encoding,
}

impl BadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BadKind::Gzip => "corrupt gzip",
            BadKind::Bomb => "decompression refused",
            BadKind::Json => "bad JSON",
            BadKind::NotCloudTrail => "not CloudTrail",
            BadKind::Encoding => "bad encoding",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the object or writing the lake failed in the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object's content cannot be ingested; it is recorded under `_rejected/`.
    #[error("{uri}: {}: {detail}", kind.as_str())]
    BadObject { uri: String, kind: BadKind, detail: String },
    /// The connection dropped while streaming the object.
    #[error("{uri}: reading failed at line {line}: {detail}")]
    Interrupted { uri: String, line: u64, detail: String },
    /// The local staging area failed (disk full, permissions).
    #[error("{uri}: staging in {}: {source}", path.display())]
    Staging { uri: String, path: PathBuf, source: io::Error },
    /// Arrow or Parquet refused a batch: a bug, reported with the object that triggered it.
    #[error("{uri}: writing Parquet: {detail}")]
    Encode { uri: String, detail: String },
    /// Storing the object's files in the lake failed partway. The files already stored were
    /// taken back (`left` names any that could not be), so readers see none of the object; a
    /// retry stores them all again.
    #[error("{uri}: storing its lake files failed ({source}); {removed} file(s) taken back{}", left_note(left))]
    Commit { uri: String, source: Box<StoreError>, removed: usize, left: Vec<String> },
}

fn left_note(left: &[String]) -> String {
    if left.is_empty() {
        String::new()
    } else {
        format!(", {} could not be removed: {}", left.len(), left.join(", "))
    }
}

impl IngestError {
    /// True when trying the same object again may succeed (throttling, network, disk, policy),
    /// false when its content is bad and it belongs under `_rejected/` instead.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store(e) => e.retryable,
            IngestError::BadObject { .. } => false,
            // The object's content is fine; the lake refused it (or the upload broke off), and
            // what was stored of it was taken back, so trying again is always safe.
            IngestError::Commit { .. } => true,
            IngestError::Interrupted { .. } | IngestError::Staging { .. } | IngestError::Encode { .. } => true,
        }
    }
}
