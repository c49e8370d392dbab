//! `trailwatch run` hands the lake files its ingest just wrote to its detect in memory: the lake
//! is still written and remains the record, but detect does not read (or, for an S3 lake, GET)
//! them back. Bytes, not Arrow batches: ingest spills partitions to disk to keep its memory
//! bounded, so the files are what exists whole; detect still lists the lake to find what other
//! writers added. A handed file carries the version its put returned (S3's ETag of those very
//! bytes), not the one the listing shows: another writer may have replaced the object in
//! between, and recording the listed version would mark bytes never read as read.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use trailwatch_core::store::{LakeStore, ObjectBody, ObjectRef, ObjectSource, StoreError};
use trailwatch_detect::LakeLocation;

/// At most this many bytes of written files are kept for detect; beyond it, detect reads the
/// rest from the lake as a plain `trailwatch detect` would (a first run over years of logs).
pub const KEEP_BYTES: usize = 256 << 20;

/// A lake store that keeps a copy of each file it stores, by key relative to the lake root.
pub struct Tee<'a> {
    inner: &'a dyn LakeStore,
    /// The store names versions (S3): a put without one is not handed over.
    versioned: bool,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    files: HashMap<String, HandedFile>,
    bytes: usize,
    /// Set once a file did not fit: later files are not kept either, so what detect gets in
    /// memory is a prefix of the run, never a sample.
    full: bool,
}

impl<'a> Tee<'a> {
    pub fn new(inner: &'a dyn LakeStore) -> Self {
        Tee { inner, versioned: inner.root_uri().starts_with("s3://"), kept: Mutex::new(Kept::default()) }
    }

    /// The files kept, by key relative to the lake root.
    pub fn into_files(self) -> HashMap<String, HandedFile> {
        self.kept.into_inner().unwrap_or_else(|e| e.into_inner()).files
    }
}

impl LakeStore for Tee<'_> {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        // Read before storing: a local lake renames the staged file into place.
        let bytes = {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let fits = |n: u64| !kept.full && kept.bytes + n as usize <= KEEP_BYTES;
            key.ends_with(".parquet")
                .then(|| std::fs::metadata(local).ok().filter(|m| fits(m.len())))
                .flatten()
                .and_then(|_| std::fs::read(local).ok())
        };
        let version = self.inner.put_file(key, local)?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        // A key stored again replaces what was kept of it, or drops it when the new one did not fit.
        if let Some(old) = kept.files.remove(key) {
            kept.bytes -= old.bytes.len();
        }
        // A store that names versions but named none for this put: detect reads the file from
        // the lake, where the version it gets describes the bytes it gets.
        let unversioned = version.is_none() && self.versioned;
        match bytes {
            Some(b) if !unversioned => {
                kept.bytes += b.len();
                kept.files.insert(key.to_string(), HandedFile { bytes: Bytes::from(b), version: version.clone() });
            }
            _ if key.ends_with(".parquet") => kept.full = true,
            _ => {}
        }
        Ok(version)
    }

    fn staging_dir(&self) -> std::path::PathBuf {
        self.inner.staging_dir()
    }

    fn root_uri(&self) -> String {
        self.inner.root_uri()
    }

    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        self.inner.is_own_output(obj)
    }

    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        // An object whose files were taken back is not handed over either.
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = kept.files.remove(key) {
            kept.bytes -= f.bytes.len();
        }
        drop(kept);
        self.inner.delete_file(key)
    }
}

/// A file `trailwatch run` just stored: its bytes, and the version the store gave them.
#[derive(Debug, Clone)]
pub struct HandedFile {
    pub bytes: Bytes,
    /// The put's ETag on S3; `None` on a local lake, where detect hashes the bytes.
    pub version: Option<String>,
}

/// The lake as detect sees it, with the files `trailwatch run` just wrote served from memory.
pub struct Handed<'a> {
    pub inner: &'a dyn ObjectSource,
    pub lake: LakeLocation,
    pub files: HashMap<String, HandedFile>,
}

impl ObjectSource for Handed<'_> {
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError> {
        if obj.bucket == self.lake.bucket {
            if let Some(f) = self.files.get(self.lake.relative(&obj.key)) {
                return Ok(ObjectBody { reader: Box::new(Cursor::new(f.bytes.clone())), etag: f.version.clone() });
            }
        }
        self.inner.open(obj)
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError> {
        self.inner.list(bucket, prefix)
    }

    fn list_after(&self, bucket: &str, prefix: &str, start_after: &str) -> Result<Vec<ObjectRef>, StoreError> {
        self.inner.list_after(bucket, prefix, start_after)
    }

    fn list_folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_folders(bucket, prefix)
    }

    fn list_folders_each(&self, bucket: &str, prefixes: &[String]) -> Result<Vec<Vec<String>>, StoreError> {
        self.inner.list_folders_each(bucket, prefixes)
    }

    fn list_after_each(&self, bucket: &str, requests: &[(String, String)]) -> Result<Vec<Vec<ObjectRef>>, StoreError> {
        self.inner.list_after_each(bucket, requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use trailwatch_core::s3::{S3Lake, S3Source};
    use trailwatch_core::store::LocalLake;

    #[test]
    fn kept_files_are_served_from_memory_and_taken_back_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path());
        let tee = Tee::new(&lake);
        std::fs::create_dir_all(lake.staging_dir()).unwrap();
        for (key, body) in [("cloudtrail/a/x.parquet", "one"), ("cloudtrail/a/y.parquet", "two")] {
            let staged = lake.staging_dir().join("s");
            std::fs::write(&staged, body).unwrap();
            tee.put_file(key, &staged).unwrap();
        }
        tee.delete_file("cloudtrail/a/y.parquet").unwrap();
        let files = tee.into_files();
        assert_eq!(files.keys().collect::<Vec<_>>(), vec!["cloudtrail/a/x.parquet"]);

        let prefix = dir.path().to_string_lossy().into_owned();
        let handed = Handed {
            inner: &trailwatch_core::store::LocalFiles,
            lake: LakeLocation { bucket: String::new(), prefix: prefix.clone() },
            files,
        };
        // Changed on disk after the run wrote it: the handed copy is what the run wrote.
        let on_disk = dir.path().join("cloudtrail/a/x.parquet");
        std::fs::write(&on_disk, "changed").unwrap();
        let mut body = String::new();
        handed.open(&ObjectRef::local(&on_disk)).unwrap().reader.read_to_string(&mut body).unwrap();
        assert_eq!(body, "one");
        // Anything else comes from the lake.
        let other = dir.path().join("cloudtrail/a/z.parquet");
        std::fs::write(&other, "three").unwrap();
        let mut body = String::new();
        handed.open(&ObjectRef::local(&other)).unwrap().reader.read_to_string(&mut body).unwrap();
        assert_eq!(body, "three");
    }

    /// A lake in bucket `lake` of a moto S3 server started for the test (stopped when dropped).
    struct MotoLake {
        _moto: trailwatch_core::testing::Moto,
        rt: tokio::runtime::Runtime,
        s3: aws_sdk_s3::Client,
        staging: tempfile::TempDir,
        lake: S3Lake,
    }

    impl MotoLake {
        fn start() -> Self {
            let moto = trailwatch_core::testing::Moto::start();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let shared = rt.block_on(trailwatch_core::aws::load(Some(&moto.endpoint)));
            let s3 = trailwatch_core::aws::s3(&shared, None);
            rt.block_on(s3.create_bucket().bucket("lake").send()).unwrap();
            let staging = tempfile::tempdir().unwrap();
            let lake = S3Lake::new(s3.clone(), rt.handle().clone(), "lake", "", staging.path().to_path_buf());
            MotoLake { _moto: moto, rt, s3, staging, lake }
        }
    }

    /// Against moto's S3: an object replaced between this run's put and detect's listing is
    /// handed over with the version of the bytes this run wrote, so detect does not record the
    /// replacement as read, and a later run reads it.
    #[test]
    fn a_handed_file_carries_the_version_of_its_own_bytes_not_the_listed_one() {
        let MotoLake { _moto, rt, s3, staging, lake } = MotoLake::start();
        let tee = Tee::new(&lake);
        let key = "cloudtrail/account_id=111122223333/region=eu-west-1/date=2026-01-05/a.parquet";
        let staged = staging.path().join("staged");
        std::fs::write(&staged, "written by this run").unwrap();
        let put = tee.put_file(key, &staged).unwrap().expect("S3 names the version it stored");

        // A re-delivery replaces the object before detect lists the lake.
        rt.block_on(s3.put_object().bucket("lake").key(key).body(b"a re-delivery".to_vec().into()).send()).unwrap();
        let src = S3Source::new(s3.clone(), rt.handle().clone());
        let listed = src.list("lake", "cloudtrail/").unwrap();
        assert_eq!(listed.len(), 1);
        let listed_version = listed[0].etag.as_deref().unwrap().trim_matches('"').to_string();
        assert_ne!(listed_version, put, "the listing shows the replacement");

        let handed = Handed {
            inner: &src,
            lake: LakeLocation { bucket: "lake".into(), prefix: String::new() },
            files: tee.into_files(),
        };
        let body = handed.open(&listed[0]).unwrap();
        assert_eq!(body.etag.as_deref(), Some(put.as_str()));
        let mut text = String::new();
        { body }.reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "written by this run");
    }

    /// The same race through a whole run: `trailwatch run`'s detect records the version its own
    /// put returned, so the next run, listing the replacement's version, reads the replacement.
    #[test]
    fn a_replacement_between_the_put_and_the_listing_is_read_by_the_next_run() {
        use trailwatch_core::store::{LocalFiles, LocalLake};
        use trailwatch_detect::state::DirState;
        let MotoLake { _moto, rt, s3, staging: _staging, lake } = MotoLake::start();
        let fixture = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/cloudtrail").join(name);
            ObjectRef::local(&path)
        };
        let cfg = trailwatch_ingest::Config::default();
        let now = trailwatch_core::time::wall_clock_millis();

        // This run's ingest, through the tee.
        let tee = Tee::new(&lake);
        let ours = fixture("stratus-aws.discovery.ec2-download-user-data.json");
        let written = trailwatch_ingest::ingest_object_at(&LocalFiles, &ours, &tee, &cfg, now).unwrap();
        let key = written.lake_keys.iter().find(|k| k.ends_with(".parquet")).expect("a lake file").clone();
        let handed = tee.into_files();
        assert!(handed.contains_key(&key));

        // Another delivery replaces that object before detect lists the lake: other valid rows.
        let other = tempfile::tempdir().unwrap();
        let theirs = fixture("stratus-aws.defense-evasion.cloudtrail-stop.json");
        let r = trailwatch_ingest::ingest_object_at(&LocalFiles, &theirs, &LocalLake::new(other.path()), &cfg, now)
            .unwrap();
        let replacement =
            std::fs::read(other.path().join(r.lake_keys.iter().find(|k| k.ends_with(".parquet")).unwrap())).unwrap();
        rt.block_on(s3.put_object().bucket("lake").key(&key).body(replacement.into()).send()).unwrap();

        let (state, dcfg) = (tempfile::tempdir().unwrap(), trailwatch_detect::DetectConfig::default());
        let store = DirState::new(state.path());
        let loc = LakeLocation { bucket: "lake".into(), prefix: String::new() };
        let src = S3Source::new(s3.clone(), rt.handle().clone());
        let first = trailwatch_detect::detect_lake(
            &Handed { inner: &src, lake: loc.clone(), files: handed },
            &loc,
            &store,
            &dcfg,
            now,
        )
        .unwrap();
        let read = first.files_read;
        assert!(read >= 1 && first.files_failed.is_empty(), "{:?}", first.files_failed);
        first.commit(&store).unwrap();
        // The next run lists the replacement's version, which no run has read.
        let second = trailwatch_detect::detect_lake(&src, &loc, &store, &dcfg, now).unwrap();
        assert_eq!((second.files_read, second.files_failed.len()), (1, 0), "the replacement is read");
        second.commit(&store).unwrap();
        let third = trailwatch_detect::detect_lake(&src, &loc, &store, &dcfg, now).unwrap();
        assert_eq!(third.files_read, 0, "and then known");
    }
}
