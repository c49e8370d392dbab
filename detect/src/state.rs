//! Where detector state lives between runs and invocations: a manifest of the lake objects
//! already read, the deployment's clock, and one file per account-region shard, each
//! versioned JSON compressed with zstd.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trailwatch_core::time::EpochMillis;

use crate::engine::{Shard, STATE_VERSION};
use crate::error::DetectError;

/// What detect remembers besides the shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// The deployment's confirmed clock: the newest event time two sources agree on.
    pub clock: Option<EpochMillis>,
    /// The newest modification time (the store's own clock) among the lake files the last
    /// committed full listing saw: files modified at or after it arrived since.
    #[serde(default)]
    pub last_listed: Option<EpochMillis>,
    /// The files modified exactly at `last_listed`: a file stamped in that same instant (S3 has
    /// one-second stamps) but not among them arrived after the listing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_listed_keys: Vec<String>,
    /// When (wall clock) a run last listed every partition of the lake; runs in between list
    /// only the partitions inside the retention ([`crate::run::FULL_LISTING_EVERY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_listing: Option<EpochMillis>,
    /// The deployment's hash key as hex ([`HashKey`](crate::stats::HashKey)), made on the first
    /// run: every hash in the shards is keyed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Meta {
    /// The deployment's hash key, made (and kept in `self`, to be saved) when there is none.
    pub fn hash_key(&mut self) -> Result<crate::stats::HashKey, DetectError> {
        use crate::stats::HashKey;
        match &self.secret {
            Some(s) => HashKey::from_hex(s).ok_or_else(|| DetectError::State {
                location: "meta.json".into(),
                message: "secret is not 32 hex digits".into(),
                retryable: false,
            }),
            None => {
                let k = HashKey::random();
                self.secret = Some(k.to_hex());
                Ok(k)
            }
        }
    }
}

/// A place to keep detect's state.
pub trait StateStore {
    fn load_meta(&self) -> Result<Meta, DetectError>;
    fn save_meta(&self, meta: &Meta) -> Result<(), DetectError>;
    fn load_shards(&self) -> Result<Vec<Shard>, DetectError>;
    fn save_shard(&self, shard: &Shard) -> Result<(), DetectError>;
}

/// Serializes a shard: JSON, zstd-compressed.
pub fn encode_shard(shard: &Shard) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(shard).map_err(|e| e.to_string())?;
    zstd::encode_all(&json[..], 3).map_err(|e| e.to_string())
}

/// Reads a shard written by [`encode_shard`], refusing other versions.
pub fn decode_shard(bytes: &[u8]) -> Result<Shard, String> {
    let json = zstd::decode_all(bytes).map_err(|e| format!("not zstd: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let version = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != STATE_VERSION as u64 {
        return Err(format!("state version {version}, this build reads {STATE_VERSION}: remove it to start afresh"));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// State in a local folder: `meta.json` and `shards/<account>_<region>.json.zst`. Files are
/// written to a temporary name and renamed, so a crash never leaves half a file.
#[derive(Debug, Clone)]
pub struct DirState {
    root: PathBuf,
}

impl DirState {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirState { root: root.into() }
    }

    fn err(&self, path: &Path, e: impl std::fmt::Display) -> DetectError {
        DetectError::State { location: path.display().to_string(), message: e.to_string(), retryable: false }
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), DetectError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| self.err(dir, e))?;
        }
        let tmp = path.with_extension("partial");
        let mut f = fs::File::create(&tmp).map_err(|e| self.err(&tmp, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| self.err(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| self.err(path, e))
    }
}

impl StateStore for DirState {
    fn load_meta(&self) -> Result<Meta, DetectError> {
        let p = self.root.join("meta.json");
        match fs::read(&p) {
            Ok(b) => {
                let m: Meta = serde_json::from_slice(&b).map_err(|e| self.err(&p, e))?;
                if m.version != STATE_VERSION {
                    return Err(self.err(&p, format!("state version {}, this build reads {STATE_VERSION}", m.version)));
                }
                Ok(m)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Meta { version: STATE_VERSION, ..Meta::default() })
            }
            Err(e) => Err(self.err(&p, e)),
        }
    }

    fn save_meta(&self, meta: &Meta) -> Result<(), DetectError> {
        let p = self.root.join("meta.json");
        let b = serde_json::to_vec_pretty(meta).map_err(|e| self.err(&p, e))?;
        self.write_atomic(&p, &b)
    }

    fn load_shards(&self) -> Result<Vec<Shard>, DetectError> {
        let dir = self.root.join("shards");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.err(&dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".json.zst"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| fs::read(p).map_err(|e| self.err(p, e)).and_then(|b| decode_shard(&b).map_err(|e| self.err(p, e))))
            .collect()
    }

    fn save_shard(&self, shard: &Shard) -> Result<(), DetectError> {
        let p = self.root.join("shards").join(format!("{}_{}.json.zst", shard.account, shard.region));
        let b = encode_shard(shard).map_err(|e| self.err(&p, e))?;
        self.write_atomic(&p, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_keeps_its_hash_key_and_two_deployments_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (DirState::new(tmp.path().join("a")), DirState::new(tmp.path().join("b")));
        let mut ma = a.load_meta().unwrap();
        let ka = ma.hash_key().unwrap();
        a.save_meta(&ma).unwrap();
        let mut mb = b.load_meta().unwrap();
        let kb = mb.hash_key().unwrap();
        assert_ne!(ka, kb);
        assert_ne!(ka.str("role/admin"), kb.str("role/admin"));
        // Stable across runs: the next run reads the same key back.
        assert_eq!(a.load_meta().unwrap().hash_key().unwrap(), ka);
        let mut bad = Meta { secret: Some("zz".into()), ..Meta::default() };
        assert!(bad.hash_key().is_err());
    }
}
