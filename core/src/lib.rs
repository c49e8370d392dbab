//! Contracts between trailwatch's stages: the lake's layout and table schemas, the store traits
//! every stage reads and writes through, S3 key decoding, and event-time handling.
//!
//! This crate is the leaf of the workspace: `ingest`, `detect` and `alert` depend on it and never
//! on each other. What their Lambdas share also lives here: the environment reader ([`env`]),
//! the SQS batch reply ([`batch`]) and, behind the `aws` feature so pure libraries stay small,
//! the SDK setup and retry rule (`aws`) and the S3 adapter (`s3`).

pub mod athena;
pub mod batch;
pub mod env;
pub mod finding;
pub mod lake;
pub mod metrics;
pub mod notification;
pub mod s3key;
pub mod schema;
pub mod store;
pub mod time;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod s3;

#[cfg(feature = "lambda")]
pub mod lambda;

#[cfg(feature = "test-support")]
pub mod testing;
