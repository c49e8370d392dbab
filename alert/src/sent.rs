//! What has been alerted: one record per (finding id, status), written with a conditional
//! write, and the last alerted episode per kind and subject for folding repeats.
//!
//! SNS standard topics do not deduplicate, so this store is what keeps a retried invocation or a
//! re-run from mailing twice. The order is check, publish, record: a crash between publish and
//! record sends the alert again on the retry (a duplicate), never loses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use trailwatch_core::time::EpochMillis;

use crate::error::AlertError;

/// How a finding's alert went out, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sent {
    /// Its own message.
    Alone,
    /// A line of a digest.
    Digest,
    /// Folded into an earlier open alert of the same kind and subject.
    Folded,
    /// Publishing failed past the retry budget; the message is in the dead-letter place.
    DeadLetter,
}

/// Records of sent alerts, with conditional writes.
pub trait SentStore: Sync {
    /// The record for `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Sent>, AlertError>;
    /// Writes the record only if none exists. `Ok(false)` when another writer recorded it first.
    fn put_if_absent(&self, key: &str, how: Sent, event_time: EpochMillis) -> Result<bool, AlertError>;
    /// Claims `group` (kind, account, region, subject) for the episode `episode` starting at
    /// `start` with severity rank `severity`: true when no other open episode of the group holds
    /// it within `window_ms` of `start` at the same or a higher severity (or when this episode
    /// holds it already), so this one alerts; false when it folds into the holder.
    fn claim_group(
        &self,
        group: &str,
        episode: &str,
        start: EpochMillis,
        window_ms: i64,
        severity: u8,
    ) -> Result<bool, AlertError>;
    /// The holder's episode ended: the next episode of the group alerts again.
    fn release_group(&self, group: &str, episode: &str) -> Result<(), AlertError>;
}

/// The record key of a finding's status.
pub fn sent_key(id: &str, status: trailwatch_core::finding::Status) -> String {
    format!("sent#{id}#{}", status.as_str())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileData {
    version: u32,
    /// Key → how it was sent, and when it was recorded (wall clock, for pruning).
    sent: BTreeMap<String, (Sent, i64)>,
    /// Group → holder episode, its start (event time), severity rank, recorded (wall clock).
    groups: BTreeMap<String, (String, EpochMillis, u8, i64)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// How long records are kept after they were written (wall clock, like DynamoDB's TTL): far
/// longer than any retry or re-run, short enough that the file stays small. Not event time: a
/// re-run over a long history must still find its early records.
const KEEP_MS: i64 = 30 * 24 * 3_600_000;

/// The CLI's store: `<STATE>/alerts-sent.json`, rewritten atomically after each change. Without
/// a file ([`FileSent::in_memory`], or [`MemorySent`]) the records live in memory only.
pub struct FileSent {
    path: Option<PathBuf>,
    data: Mutex<FileData>,
}

/// An in-memory store, for tests and dry runs: a [`FileSent`] without a file.
pub type MemorySent = FileSent;

impl Default for FileSent {
    fn default() -> Self {
        FileSent::in_memory()
    }
}

impl FileSent {
    pub fn open(state_dir: &Path) -> Result<FileSent, AlertError> {
        let path = state_dir.join("alerts-sent.json");
        let err = |m: String| AlertError::State { location: path.display().to_string(), message: m, retryable: false };
        let data = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(format!("not a sent-alerts file: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileData { version: 1, ..Default::default() },
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(FileSent { path: Some(path), data: Mutex::new(data) })
    }

    /// A store kept in memory only.
    pub fn in_memory() -> FileSent {
        FileSent { path: None, data: Mutex::new(FileData::default()) }
    }

    /// Runs `change` on the records under the lock and, when it reports a change, saves them.
    fn update<T>(&self, change: impl FnOnce(&mut FileData) -> (T, bool)) -> Result<T, AlertError> {
        let mut data = self.data.lock().expect("sent lock");
        let (out, changed) = change(&mut data);
        if changed {
            self.save(&mut data)?;
        }
        Ok(out)
    }

    fn save(&self, data: &mut FileData) -> Result<(), AlertError> {
        let Some(path) = &self.path else { return Ok(()) };
        let oldest = now_ms() - KEEP_MS;
        data.sent.retain(|_, v| v.1 >= oldest);
        data.groups.retain(|_, v| v.3 >= oldest);
        let err = |e: std::io::Error| AlertError::State {
            location: path.display().to_string(),
            message: e.to_string(),
            retryable: false,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&*data).expect("sent records serialize")).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

impl FileData {
    fn put_if_absent(&mut self, key: &str, how: Sent) -> bool {
        if self.sent.contains_key(key) {
            return false;
        }
        self.sent.insert(key.to_string(), (how, now_ms()));
        true
    }

    fn claim_group(&mut self, group: &str, episode: &str, start: EpochMillis, window_ms: i64, severity: u8) -> bool {
        if let Some((holder, t, sev, _)) = self.groups.get(group) {
            if holder == episode {
                return true;
            }
            if (start - t).abs() < window_ms && severity <= *sev {
                return false;
            }
        }
        self.groups.insert(group.to_string(), (episode.to_string(), start, severity, now_ms()));
        true
    }

    /// True when something changed.
    fn release_group(&mut self, group: &str, episode: &str) -> bool {
        if self.groups.get(group).is_some_and(|g| g.0 == episode) {
            self.groups.remove(group);
            return true;
        }
        false
    }
}

impl SentStore for FileSent {
    fn get(&self, key: &str) -> Result<Option<Sent>, AlertError> {
        Ok(self.data.lock().expect("sent lock").sent.get(key).map(|v| v.0))
    }

    fn put_if_absent(&self, key: &str, how: Sent, _event_time: EpochMillis) -> Result<bool, AlertError> {
        self.update(|d| {
            let fresh = d.put_if_absent(key, how);
            (fresh, fresh)
        })
    }

    fn claim_group(
        &self,
        group: &str,
        episode: &str,
        start: EpochMillis,
        window_ms: i64,
        severity: u8,
    ) -> Result<bool, AlertError> {
        self.update(|d| {
            let won = d.claim_group(group, episode, start, window_ms, severity);
            (won, won)
        })
    }

    fn release_group(&self, group: &str, episode: &str) -> Result<(), AlertError> {
        self.update(|d| ((), d.release_group(group, episode)))
    }
}
