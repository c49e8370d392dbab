//! Publishing with a retry budget, and the dead-letter place for what the budget cannot send.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::error::AlertError;
use crate::render::Message;

/// A publish that failed, and whether trying again can help (throttling, 5xx, network).
#[derive(Debug, Clone)]
pub struct PublishError {
    pub message: String,
    pub retryable: bool,
}

/// Where alerts are published: SNS in the Lambda and the CLI, anything in tests.
pub trait Publisher: Sync {
    /// The topic, for logs and dead letters.
    fn topic(&self) -> &str;
    /// One attempt (the adapter makes no retries of its own: the budget is [`RetryPolicy`]'s).
    /// Returns the message id.
    fn publish(&self, message: &Message) -> Result<String, PublishError>;
}

/// Attempts and backoff for one message. The SNS adapter disables the SDK's own retries, so
/// `max_attempts` is the whole budget.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter derived from the attempt and a seed (no RNG needed):
    /// full jitter over `[d/2, d]`.
    fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let d = self.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let frac = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(attempt as u64) >> 54) as u32; // 0..1024
        d / 2 + d / 2 * frac / 1024
    }
}

/// How a message fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Published {
        message_id: String,
        attempts: u32,
    },
    /// Not published: the budget was spent or the error was permanent.
    Failed {
        reason: String,
        attempts: u32,
    },
}

/// Publishes `message`, retrying retryable failures with backoff.
pub fn publish_with_retry(publisher: &dyn Publisher, message: &Message, policy: &RetryPolicy) -> Delivery {
    // Jitter seeded by the first finding id, so concurrent invocations spread their retries.
    let seed = message.findings.first().map_or(0, |(id, _)| {
        id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        match publisher.publish(message) {
            Ok(message_id) => return Delivery::Published { message_id, attempts: attempt },
            Err(e) if e.retryable && attempt < policy.max_attempts => {
                tracing::warn!(topic = publisher.topic(), attempt, error = %e.message, "publish failed, retrying");
                std::thread::sleep(policy.delay(attempt - 1, seed));
            }
            Err(e) => {
                let why = if e.retryable { "retry budget spent" } else { "permanent error" };
                return Delivery::Failed {
                    reason: format!("{why} after {attempt} attempts: {}", e.message),
                    attempts: attempt,
                };
            }
        }
    }
}

/// A message that could not be published, with the reason: what the dead-letter place holds.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    pub reason: String,
    pub topic: String,
    pub attempts: u32,
    pub subject: String,
    /// The (finding id, status) pairs it carried.
    pub findings: Vec<(String, String)>,
    /// The SNS message structure (`default` and `email` bodies) and attributes, ready to
    /// publish again.
    pub message: String,
    pub attributes: std::collections::BTreeMap<String, (String, String)>,
}

impl DeadLetterEntry {
    pub fn new(publisher: &dyn Publisher, message: &Message, reason: String, attempts: u32) -> Self {
        DeadLetterEntry {
            reason,
            topic: publisher.topic().to_string(),
            attempts,
            subject: message.subject.clone(),
            findings: message.findings.iter().map(|(id, s)| (id.clone(), s.as_str().to_string())).collect(),
            message: message.message_json(),
            attributes: message
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), (v.data_type().to_string(), v.string_value())))
                .collect(),
        }
    }
}

/// Where alerts go that could not be published.
pub trait DeadLetter: Sync {
    fn send(&self, entry: &DeadLetterEntry) -> Result<(), AlertError>;
}

/// The CLI's dead-letter place: `<STATE>/dead-letter.jsonl`, one entry a line.
pub struct FileDeadLetter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileDeadLetter {
    pub fn new(state_dir: &Path) -> Self {
        FileDeadLetter { path: state_dir.join("dead-letter.jsonl"), lock: Mutex::new(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DeadLetter for FileDeadLetter {
    fn send(&self, entry: &DeadLetterEntry) -> Result<(), AlertError> {
        let _guard = self.lock.lock().expect("dead letter lock");
        let err = |e: std::io::Error| AlertError::DeadLetter {
            location: self.path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut line = serde_json::to_vec(entry).expect("dead letters serialize");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(err)?;
        f.write_all(&line).map_err(err)
    }
}
