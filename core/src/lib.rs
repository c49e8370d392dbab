//! Contracts between trailwatch's stages: the lake's layout and table schemas, the store traits
//! every stage reads and writes through, S3 key decoding, and event-time handling.
//!
//! This crate is the leaf of the workspace: `ingest`, `detect` and `alert` depend on it and never
//! on each other. The AWS SDK adapter sits behind the `aws` feature so pure libraries stay small.

pub mod finding;
pub mod lake;
pub mod notification;
pub mod s3key;
pub mod schema;
pub mod store;
pub mod time;

#[cfg(feature = "aws")]
pub mod s3;

#[cfg(feature = "test-support")]
pub mod testing;
