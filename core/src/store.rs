//! The small traits stages use to read objects and write the lake, so the libraries stay
//! synchronous and SDK-free: local folders implement them here, S3 in [`crate::s3`].

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// An object to read: an S3 object, or a local file (empty bucket, key is the path).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    /// The S3 ETag, when known: it names the version that was read.
    pub etag: Option<String>,
    pub size: Option<u64>,
    /// When the store says the object was last written (ms since the epoch), when listed: it
    /// tells a file that arrived since the last run from one read long ago.
    pub modified: Option<i64>,
}

impl ObjectRef {
    pub fn s3(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectRef { bucket: bucket.into(), key: key.into(), ..Default::default() }
    }

    pub fn local(path: &Path) -> Self {
        ObjectRef { key: path.to_string_lossy().into_owned(), ..Default::default() }
    }

    /// `s3://bucket/key`, or the path of a local file: how errors and rejects name the object.
    pub fn uri(&self) -> String {
        if self.bucket.is_empty() {
            self.key.clone()
        } else {
            format!("s3://{}/{}", self.bucket, self.key)
        }
    }
}

/// A store operation that failed, naming the object and whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[error("{op} {uri}: {message}")]
pub struct StoreError {
    pub op: &'static str,
    pub uri: String,
    pub message: String,
    /// True for throttling, 5xx, timeouts, network and permission errors: a retry (or a fix to a
    /// policy followed by a redrive) can succeed. False when the object is gone or invalid.
    pub retryable: bool,
}

/// Marks an I/O error from a store read as transient (the network, not the data), so decoders
/// can tell a dropped connection from a corrupt file.
#[derive(Debug)]
pub struct TransientIo(pub String);

impl std::fmt::Display for TransientIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TransientIo {}

/// True when `e` came from the store rather than from the bytes.
pub fn is_transient_io(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TransientIo>())
}

/// An object opened for streaming.
pub struct ObjectBody<'a> {
    pub reader: Box<dyn Read + Send + 'a>,
    /// The ETag of the version being read, as the store reported it when opening (not as an
    /// event claimed it): it names the object's lake files, so every route to the same object
    /// names them alike. `None` for local files, whose content hash is used instead.
    pub etag: Option<String>,
}

/// Where inputs come from.
pub trait ObjectSource: Sync {
    /// Opens the object for streaming; nothing is read up front.
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError>;
    /// Every object under `prefix` (a folder, recursively, for local files).
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError>;

    /// The objects under `prefix` whose keys sort after `start_after` (S3's `StartAfter`): a
    /// listing that skips what is known to be old, such as a lake's older date partitions.
    fn list_after(&self, bucket: &str, prefix: &str, start_after: &str) -> Result<Vec<ObjectRef>, StoreError> {
        Ok(self.list(bucket, prefix)?.into_iter().filter(|o| o.key.as_str() > start_after).collect())
    }

    /// The folders right below `prefix` (a `/`-terminated prefix), each as a prefix ending in
    /// `/`, sorted: S3's common prefixes, a local folder's subfolders.
    fn list_folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .list(bucket, prefix)?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(prefix)?;
                rest.find('/').map(|i| format!("{prefix}{}", &rest[..=i]))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// [`ObjectSource::list_folders`] of each prefix, in order. A lake's recent partitions are
    /// found per account and region folder: S3 sends these listings concurrently, since a hundred
    /// accounts in a dozen regions would otherwise wait on a thousand round trips in a row.
    fn list_folders_each(&self, bucket: &str, prefixes: &[String]) -> Result<Vec<Vec<String>>, StoreError> {
        prefixes.iter().map(|p| self.list_folders(bucket, p)).collect()
    }

    /// [`ObjectSource::list_after`] of each `(prefix, start_after)`, in order; concurrent on S3.
    fn list_after_each(&self, bucket: &str, requests: &[(String, String)]) -> Result<Vec<Vec<ObjectRef>>, StoreError> {
        requests.iter().map(|(p, after)| self.list_after(bucket, p, after)).collect()
    }
}

/// Where the lake lives.
pub trait LakeStore: Sync {
    /// Stores the local file at `key` (relative to the lake root), replacing any object there.
    /// Returns the stored version when the store names versions (S3's ETag of exactly these
    /// bytes, which a later listing may no longer show if another writer replaced the object);
    /// `None` for local files, whose version is a hash of their content.
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError>;
    /// A local folder where files are staged before [`LakeStore::put_file`].
    fn staging_dir(&self) -> PathBuf;
    /// The lake's root as a user would write it (`./lake`, `s3://bucket/prefix`).
    fn root_uri(&self) -> String;
    /// True when `obj` is something the pipeline wrote itself (lake files, rejects, staging):
    /// such objects are never read back as input, so the pipeline cannot loop on itself.
    fn is_own_output(&self, obj: &ObjectRef) -> bool;
    /// Removes the file at `key` (relative to the lake root); a key that is not there is not an
    /// error. Ingest uses it to take back the files of an object whose upload failed midway, so
    /// readers see all of an object's files or none. Stores that cannot delete say so.
    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        Err(StoreError {
            op: "delete",
            uri: format!("{}/{key}", self.root_uri().trim_end_matches('/')),
            message: "this store cannot delete files".into(),
            retryable: false,
        })
    }
}

/// True when both files exist and hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

/// Local files and folders as an [`ObjectSource`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFiles;

fn local_err(op: &'static str, path: &Path, e: io::Error) -> StoreError {
    StoreError {
        op,
        uri: path.display().to_string(),
        retryable: matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::TimedOut),
        message: e.to_string(),
    }
}

impl ObjectSource for LocalFiles {
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError> {
        let path = Path::new(&obj.key);
        let file = fs::File::open(path).map_err(|e| local_err("open", path, e))?;
        Ok(ObjectBody { reader: Box::new(file), etag: None })
    }

    fn list(&self, _bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError> {
        walk(Path::new(prefix), None)
    }

    fn list_after(&self, _bucket: &str, prefix: &str, start_after: &str) -> Result<Vec<ObjectRef>, StoreError> {
        walk(Path::new(prefix), Some(start_after))
    }

    fn list_folders(&self, _bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = Path::new(prefix);
        let mut out: Vec<String> = fs::read_dir(dir)
            .map_err(|e| local_err("list", dir, e))?
            .filter_map(|e| e.ok())
            // Through symlinks, as the full walk goes (`metadata` follows them).
            .filter(|e| e.path().is_dir())
            .map(|e| format!("{}/", e.path().display()))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// The files below `root`, in key order; with `after`, only keys that sort after it, without
/// entering folders whose every key sorts before it.
fn walk(root: &Path, after: Option<&str>) -> Result<Vec<ObjectRef>, StoreError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::metadata(&p).map_err(|e| local_err("stat", &p, e))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(&p)
                .map_err(|e| local_err("list", &p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| after.is_none_or(|a| may_follow(e, a)))
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if meta.is_file() {
            if after.is_some_and(|a| p.to_string_lossy().as_ref() <= a) {
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            out.push(ObjectRef { size: Some(meta.len()), modified, ..ObjectRef::local(&p) });
        }
    }
    Ok(out)
}

/// Whether a key at or below `path` can sort after `after`.
fn may_follow(path: &Path, after: &str) -> bool {
    let p = path.to_string_lossy();
    p.as_ref() > after || after.starts_with(p.as_ref())
}

/// A lake in a local folder. Files are staged under `_staging/` inside it and renamed into
/// place, so a reader never sees a half-written file and a crash leaves only staging debris.
#[derive(Debug, Clone)]
pub struct LocalLake {
    root: PathBuf,
}

impl LocalLake {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalLake { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl LakeStore for LocalLake {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        let dest = self.root.join(key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| local_err("mkdir", parent, e))?;
        }
        // The same bytes again (a re-run over the same inputs): keep the file as it is, so its
        // modification time still says when it first arrived and detect does not take it for a
        // late delivery.
        if same_bytes(local, &dest) {
            let _ = fs::remove_file(local);
            return Ok(None);
        }
        if fs::rename(local, &dest).is_err() {
            // Staging on another filesystem: copy to a sibling, then rename atomically.
            let tmp = dest.with_extension("partial");
            fs::copy(local, &tmp).map_err(|e| local_err("copy", &tmp, e))?;
            fs::rename(&tmp, &dest).map_err(|e| local_err("rename", &dest, e))?;
            let _ = fs::remove_file(local);
        }
        Ok(None)
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join(crate::lake::STAGING_DIR)
    }

    fn root_uri(&self) -> String {
        self.root.display().to_string()
    }

    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        let path = self.root.join(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(local_err("delete", &path, e)),
            _ => Ok(()),
        }
    }

    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        if !obj.bucket.is_empty() {
            return false;
        }
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        abs(Path::new(&obj.key)).starts_with(abs(&self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recent-only listing of local files sees what a full one filtered by key would.
    #[test]
    fn local_listing_after_a_key_and_of_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cloudtrail");
        for (acct, region, date) in [
            ("1", "eu-west-1", "2026-01-04"),
            ("1", "eu-west-1", "2026-01-05"),
            ("1", "eu-west-10", "2026-01-01"),
            ("1", "us-east-1", "2026-01-06"),
            ("2", "eu-west-1", "2026-01-03"),
        ] {
            let p = root.join(format!("account_id={acct}/region={region}/date={date}"));
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("a.parquet"), "x").unwrap();
        }
        let prefix = format!("{}/", root.display());
        let accounts = LocalFiles.list_folders("", &prefix).unwrap();
        assert_eq!(accounts, vec![format!("{prefix}account_id=1/"), format!("{prefix}account_id=2/")]);
        let regions = LocalFiles.list_folders("", &accounts[0]).unwrap();
        assert_eq!(regions.len(), 3);
        let eu = &regions[0];
        assert!(eu.ends_with("region=eu-west-1/"), "{eu}");
        let after = format!("{eu}date=2026-01-05");
        let recent = LocalFiles.list_after("", eu, &after).unwrap();
        assert_eq!(recent.len(), 1);
        assert!(recent[0].key.ends_with("date=2026-01-05/a.parquet"), "{:?}", recent[0]);
        // The same as the default: the whole listing filtered by key.
        let all = LocalFiles.list("", &prefix).unwrap();
        let filtered: Vec<_> = all.iter().filter(|o| o.key.as_str() > after.as_str()).map(|o| &o.key).collect();
        assert_eq!(filtered.len(), 4, "keys after it include other regions and accounts");
        assert!(filtered.contains(&&recent[0].key));
        // A linked account folder is listed like the others, as the full walk reads it.
        #[cfg(unix)]
        {
            let elsewhere = dir.path().join("elsewhere/account_id=3/region=eu-west-1/date=2026-01-05");
            fs::create_dir_all(&elsewhere).unwrap();
            std::os::unix::fs::symlink(dir.path().join("elsewhere/account_id=3"), root.join("account_id=3")).unwrap();
            let accounts = LocalFiles.list_folders("", &prefix).unwrap();
            assert_eq!(accounts.last().unwrap(), &format!("{prefix}account_id=3/"));
        }
    }

    #[test]
    fn local_lake_replaces_files() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path());
        fs::create_dir_all(lake.staging_dir()).unwrap();
        for body in ["one", "two"] {
            let staged = lake.staging_dir().join("x");
            fs::write(&staged, body).unwrap();
            lake.put_file("t/a=1/f.parquet", &staged).unwrap();
        }
        assert_eq!(fs::read_to_string(dir.path().join("t/a=1/f.parquet")).unwrap(), "two");
        lake.delete_file("t/a=1/f.parquet").unwrap();
        assert!(!dir.path().join("t/a=1/f.parquet").exists());
        lake.delete_file("t/a=1/f.parquet").unwrap();
        let staged = lake.staging_dir().join("x");
        fs::write(&staged, "two").unwrap();
        lake.put_file("t/a=1/f.parquet", &staged).unwrap();
        let listed = LocalFiles.list("", dir.path().join("t").to_str().unwrap()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(lake.is_own_output(&listed[0]));
        assert!(!lake.is_own_output(&ObjectRef::local(Path::new("/elsewhere/x.json"))));
        assert!(!lake.is_own_output(&ObjectRef::s3("b", "t/a=1/f.parquet")));
        assert_eq!(listed[0].size, Some(3));
        // The same bytes again keep the first file and its modification time.
        let first = listed[0].modified;
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&staged, "two").unwrap();
        lake.put_file("t/a=1/f.parquet", &staged).unwrap();
        assert!(!staged.exists());
        let again = LocalFiles.list("", dir.path().join("t").to_str().unwrap()).unwrap();
        assert_eq!(again[0].modified, first);
    }

    #[test]
    fn transient_marker_survives_io_error() {
        let e = io::Error::other(TransientIo("reset".into()));
        assert!(is_transient_io(&e));
        assert!(!is_transient_io(&io::Error::new(io::ErrorKind::InvalidData, "bad gzip")));
    }
}
