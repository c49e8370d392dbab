//! The detect stage: streaming anomaly detection over the lake's tables, with state that
//! survives between runs and invocations.
//!
//! Pure and synchronous: lake objects come in through [`ObjectSource`](trailwatch_core::store::ObjectSource),
//! state goes through [`state::StateStore`], findings come out as
//! [`Finding`](trailwatch_core::finding::Finding)s. The CLI and the detect Lambda ([`handler`]) wrap it.

pub mod config;
pub mod dedup;
pub mod detectors;
pub mod engine;
pub mod error;
pub mod event;
pub mod footer;
pub mod handler;
pub mod output;
pub mod read;
pub mod run;
pub mod sigma;
pub mod state;
pub mod stats;
pub mod strs;

#[cfg(feature = "aws")]
pub mod aws;
pub mod window;

pub use config::DetectConfig;
pub use engine::{Engine, Shard};
pub use error::DetectError;
pub use run::{detect_lake, DetectRun, LakeLocation};

#[cfg(test)]
pub(crate) mod tests_support {
    /// An RFC 3339 time in ms, for tests.
    pub fn t(s: &str) -> i64 {
        trailwatch_core::time::parse_rfc3339_millis(s).expect("valid time")
    }
}
