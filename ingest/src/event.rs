//! S3 object notifications: moved to `trailwatch_core::notification`, shared with detect.

pub use trailwatch_core::notification::*;
