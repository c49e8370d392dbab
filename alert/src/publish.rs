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
    /// The wait after failed attempt `attempt` (0-based): exponential backoff capped at
    /// `max_delay`, with jitter drawn fresh for every wait, uniform over `[d/2, d]`. The
    /// randomness is per attempt, not per message, so invocations retrying the same message
    /// (an SQS redelivery racing a Lambda retry, say) do not back off in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_u64())
    }

    /// [`RetryPolicy::delay`] for a given 64-bit random value.
    fn delay_with(&self, attempt: u32, random: u64) -> Duration {
        let d = self.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let frac = (random >> 54) as u32; // 0..1024
        d / 2 + d / 2 * frac / 1024
    }
}

/// A fresh random value for each call, without an RNG dependency: SipHash with std's per-process
/// random keys (`RandomState`, seeded from the OS) over the clock, the process id and a counter.
fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
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
    publish_with_sleep(publisher, message, policy, &mut std::thread::sleep)
}

/// [`publish_with_retry`] with the wait between attempts given (tests record it).
fn publish_with_sleep(
    publisher: &dyn Publisher,
    message: &Message,
    policy: &RetryPolicy,
    sleep: &mut dyn FnMut(Duration),
) -> Delivery {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match publisher.publish(message) {
            Ok(message_id) => return Delivery::Published { message_id, attempts: attempt },
            Err(e) if e.retryable && attempt < policy.max_attempts => {
                let wait = policy.delay(attempt - 1);
                tracing::warn!(topic = publisher.topic(), attempt, error = %e.message, wait_ms = wait.as_millis() as u64, "publish failed, retrying");
                sleep(wait);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trailwatch_core::finding::Status;

    use super::*;

    /// Fails every attempt with a retryable error.
    struct Throttled;

    impl Publisher for Throttled {
        fn topic(&self) -> &str {
            "test"
        }
        fn publish(&self, _: &Message) -> Result<String, PublishError> {
            Err(PublishError { message: "Throttling (400)".into(), retryable: true })
        }
    }

    fn message() -> Message {
        Message {
            subject: "s".into(),
            email: "e".into(),
            default: "{}".into(),
            attributes: BTreeMap::new(),
            findings: vec![("same-finding-id".into(), Status::Open)],
        }
    }

    /// The waits of one retry sequence of the same message.
    fn waits(policy: &RetryPolicy) -> Vec<Duration> {
        let mut waits = Vec::new();
        let d = publish_with_sleep(&Throttled, &message(), policy, &mut |w| waits.push(w));
        assert!(matches!(d, Delivery::Failed { attempts, .. } if attempts == policy.max_attempts), "{d:?}");
        waits
    }

    #[test]
    fn retries_of_one_message_do_not_back_off_in_lockstep() {
        let policy =
            RetryPolicy { max_attempts: 8, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) };
        let first = waits(&policy);
        assert_eq!(first.len(), 7);
        // Same message, same policy: the waits still differ (32 random draws alike by chance
        // has odds of about 2^-70).
        let others: Vec<_> = (0..4).map(|_| waits(&policy)).collect();
        assert!(others.iter().all(|w| w != &first), "{first:?} repeated in {others:?}");
        for seq in std::iter::once(&first).chain(&others) {
            for (attempt, w) in seq.iter().enumerate() {
                let d = (policy.base_delay * (1 << attempt)).min(policy.max_delay);
                assert!(*w >= d / 2 && *w <= d, "attempt {attempt}: {w:?} outside [{:?}, {d:?}]", d / 2);
            }
        }
    }

    #[test]
    fn jitter_spans_its_range_and_stays_bounded() {
        let policy = RetryPolicy::default();
        for attempt in [0, 1, 5, 40] {
            let d = (policy.base_delay.saturating_mul(1 << attempt.min(16))).min(policy.max_delay);
            let draws: Vec<Duration> = (0..2000).map(|_| policy.delay(attempt)).collect();
            assert!(draws.iter().all(|w| *w >= d / 2 && *w <= d), "attempt {attempt}");
            let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
            // 2000 uniform draws cover most of the range.
            assert!(*lo < d / 2 + d / 10 && *hi > d - d / 10, "attempt {attempt}: {lo:?}..{hi:?} of {d:?}");
        }
        assert_eq!(policy.delay_with(0, 0), policy.base_delay / 2);
        assert!(policy.delay_with(3, u64::MAX) <= policy.base_delay * 8);
    }
}
