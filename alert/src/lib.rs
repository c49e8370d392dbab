//! Alert: findings become messages people act on. One SNS publish per alert carries a readable
//! `email` body and the finding JSON for machines; episodes alert once when they open and once
//! when they close; repeats fold into the open alert and bursts into one digest per account;
//! every (finding id, status) is recorded as sent with a conditional write, so a retried
//! invocation never mails twice.
//!
//! The library is synchronous and SDK-free; the SNS, SQS and DynamoDB adapters are behind the
//! `aws` feature.

pub mod alerter;
pub mod error;
pub mod handler;
pub mod publish;
pub mod render;
pub mod sent;
pub mod text;

#[cfg(feature = "aws")]
pub mod aws;

pub use alerter::{alert, parse_fold_window_minutes, AlertConfig, AlertReport};
pub use error::AlertError;
pub use publish::{DeadLetter, DeadLetterEntry, FileDeadLetter, PublishError, Publisher, RetryPolicy};
pub use sent::{FileSent, MemorySent, SentStore};
