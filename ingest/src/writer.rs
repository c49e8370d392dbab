//! Writes rows to Parquet files per Hive partition, and rejects to JSON Lines, staged locally and
//! handed to the lake only when the whole object has been read, so a failed object leaves nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use serde::Serialize;
use trailwatch_core::lake::{self, Partition};
use trailwatch_core::store::LakeStore;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::IngestError;

/// Rows of one lake table being accumulated into a `RecordBatch`.
pub trait TableBatch: Default {
    /// One parsed row, borrowing from the input.
    type Row<'r>;
    /// The lake table the rows belong to.
    const TABLE: &'static str;
    fn schema() -> SchemaRef;
    /// Appends a row; `size` is its input size, for memory accounting.
    fn push(&mut self, row: &Self::Row<'_>, size: usize);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Approximate input bytes buffered.
    fn approx_bytes(&self) -> usize;
    /// The buffered rows as a batch; the builder is empty afterwards.
    fn finish(&mut self) -> RecordBatch;
}

/// Bounds on what the writer keeps in memory.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Rows a partition buffers before they are encoded.
    pub batch_rows: usize,
    /// JSON bytes buffered across all partitions before every buffer is encoded.
    pub max_buffered_bytes: usize,
    /// Parquet writers open at once; the least recently used is closed beyond this, and its
    /// partition continues in a new part file if more rows arrive.
    pub max_open_partitions: usize,
    /// Memory all Parquet writers together may hold for their row groups in progress (they keep
    /// dictionaries and encoded pages until a row group closes). Beyond it, the largest row group
    /// is closed early: smaller row groups, bounded memory.
    pub max_writer_bytes: usize,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            batch_rows: 1024,
            max_buffered_bytes: 4 << 20,
            max_open_partitions: 16,
            max_writer_bytes: 12 << 20,
        }
    }
}

struct OpenPart<B> {
    writer: ArrowWriter<File>,
    batch: B,
    part: u32,
    path: PathBuf,
    last_used: u64,
}

/// The Parquet side of one object's ingest, for one table.
pub struct PartitionedWriter<B> {
    uri: String,
    dir: tempfile::TempDir,
    limits: WriterLimits,
    open: HashMap<Partition, OpenPart<B>>,
    closed: Vec<(Partition, u32, PathBuf)>,
    parts: HashMap<Partition, u32>,
    buffered: usize,
    tick: u64,
    rows: u64,
}

fn staging_err(uri: &str, path: &Path, source: std::io::Error) -> IngestError {
    IngestError::Staging { uri: uri.to_string(), path: path.to_path_buf(), source }
}

fn encode_err(uri: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Encode { uri: uri.to_string(), detail: e.to_string() }
}

/// A private staging folder for one object inside the lake's staging area.
pub fn staging_dir(lake: &dyn LakeStore, uri: &str) -> Result<tempfile::TempDir, IngestError> {
    let root = lake.staging_dir();
    std::fs::create_dir_all(&root).map_err(|e| staging_err(uri, &root, e))?;
    tempfile::Builder::new().prefix("ingest-").tempdir_in(&root).map_err(|e| staging_err(uri, &root, e))
}

impl<B: TableBatch> PartitionedWriter<B> {
    pub fn new(lake: &dyn LakeStore, uri: &str, limits: WriterLimits) -> Result<Self, IngestError> {
        Ok(PartitionedWriter {
            uri: uri.to_string(),
            dir: staging_dir(lake, uri)?,
            limits,
            open: HashMap::new(),
            closed: Vec::new(),
            parts: HashMap::new(),
            buffered: 0,
            tick: 0,
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The object's private staging folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn push(&mut self, p: Partition, row: &B::Row<'_>, size: usize) -> Result<(), IngestError> {
        self.tick += 1;
        if !self.open.contains_key(&p) {
            if self.open.len() >= self.limits.max_open_partitions {
                self.close_least_recent()?;
            }
            let part = *self.parts.entry(p.clone()).and_modify(|n| *n += 1).or_insert(0);
            let path = self.dir.path().join(format!("{}.parquet", self.closed.len() + self.open.len()));
            let file = File::create(&path).map_err(|e| staging_err(&self.uri, &path, e))?;
            let writer = ArrowWriter::try_new(file, B::schema(), Some(lake::writer_properties()))
                .map_err(|e| encode_err(&self.uri, e))?;
            self.open.insert(p.clone(), OpenPart { writer, batch: B::default(), part, path, last_used: 0 });
        }
        let open = self.open.get_mut(&p).expect("inserted above");
        open.last_used = self.tick;
        open.batch.push(row, size);
        self.buffered += size;
        self.rows += 1;
        if open.batch.len() >= self.limits.batch_rows {
            self.buffered -= open.batch.approx_bytes();
            write(&self.uri, open)?;
            self.bound_writers()?;
        }
        if self.buffered > self.limits.max_buffered_bytes {
            self.flush_all()?;
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), IngestError> {
        for open in self.open.values_mut() {
            if !open.batch.is_empty() {
                write(&self.uri, open)?;
            }
        }
        self.buffered = 0;
        self.bound_writers()
    }

    /// Closes row groups early, largest first, while the writers hold more than their budget.
    fn bound_writers(&mut self) -> Result<(), IngestError> {
        loop {
            let total: usize = self.open.values().map(|o| o.writer.memory_size()).sum();
            if total <= self.limits.max_writer_bytes {
                return Ok(());
            }
            let largest = self.open.values_mut().max_by_key(|o| o.writer.memory_size()).expect("writers hold memory");
            largest.writer.flush().map_err(|e| encode_err(&self.uri, e))?;
        }
    }

    fn close(&mut self, p: Partition) -> Result<(), IngestError> {
        let mut open = self.open.remove(&p).expect("closing an open partition");
        if !open.batch.is_empty() {
            self.buffered -= open.batch.approx_bytes();
            write(&self.uri, &mut open)?;
        }
        open.writer.close().map_err(|e| encode_err(&self.uri, e))?;
        self.closed.push((p, open.part, open.path));
        Ok(())
    }

    fn close_least_recent(&mut self) -> Result<(), IngestError> {
        if let Some(p) = self.open.iter().min_by_key(|(_, o)| o.last_used).map(|(p, _)| p.clone()) {
            self.close(p)?;
        }
        Ok(())
    }

    /// Closes every file and stores it in the lake as `<partition>/<stem>[-<part>].parquet`.
    /// Returns the lake keys written. All or nothing: see [`store_all`].
    pub fn commit(self, lake: &dyn LakeStore, stem: &str) -> Result<Vec<String>, IngestError> {
        let uri = self.uri.clone();
        let staged = self.finish(stem)?;
        store_all(lake, &uri, &staged.files)
    }

    /// Closes every file and names it `<partition>/<stem>[-<part>].parquet`, without storing it.
    pub fn finish(mut self, stem: &str) -> Result<Staged, IngestError> {
        let parts: Vec<Partition> = self.open.keys().cloned().collect();
        for p in parts {
            self.close(p)?;
        }
        self.closed.sort();
        let files = self
            .closed
            .drain(..)
            .map(|(p, part, path)| {
                let name = if part == 0 { format!("{stem}.parquet") } else { format!("{stem}-{part}.parquet") };
                (format!("{}/{name}", p.dir(B::TABLE)), path)
            })
            .collect();
        Ok(Staged { files, _dir: self.dir })
    }
}

/// An object's files, closed and named, waiting in their staging folder to be stored.
pub struct Staged {
    /// `(lake key, staged file)`, in the order they are stored.
    pub files: Vec<(String, PathBuf)>,
    /// Keeps the staging folder until the files are stored.
    _dir: tempfile::TempDir,
}

/// Stores an object's staged files, all or nothing: Athena lists a partition's files with no
/// regard for markers or manifests, so when a store fails partway every key of the object is
/// deleted again (those stored now, and any copy an earlier run left under the keys not reached
/// yet), and the error, [`IngestError::Commit`], is retryable. Returns the keys stored.
pub fn store_all(lake: &dyn LakeStore, uri: &str, files: &[(String, PathBuf)]) -> Result<Vec<String>, IngestError> {
    for (key, path) in files {
        if let Err(source) = lake.put_file(key, path) {
            // A put that failed may still have landed (a timeout after the write), so the failed
            // key is taken back too.
            let mut removed = 0;
            let mut left = Vec::new();
            for (k, _) in files {
                match lake.delete_file(k) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::error!(object = %uri, key = %k, error = %e, "taking back a stored file failed");
                        left.push(k.clone());
                    }
                }
            }
            tracing::warn!(object = %uri, key = %key, error = %source, removed, "storing the object's files failed; its files were taken back");
            return Err(IngestError::Commit { uri: uri.to_string(), source: Box::new(source), removed, left });
        }
    }
    Ok(files.iter().map(|(k, _)| k.clone()).collect())
}

/// Encodes a partition's buffered rows.
fn write<B: TableBatch>(uri: &str, open: &mut OpenPart<B>) -> Result<(), IngestError> {
    let batch = open.batch.finish();
    open.writer.write(&batch).map_err(|e| encode_err(uri, e))
}

/// One rejected record or object, as written under `_rejected/`.
#[derive(Debug, Serialize)]
pub struct RejectLine<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The SQS message id of a rejected message (one that named no object it could be filed under).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
    pub reason: &'a str,
    /// The record's text, cut at [`MAX_REJECT_TEXT`] bytes, so it can be fixed and replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<&'a str>,
}

/// Longest record text kept in a reject line.
pub const MAX_REJECT_TEXT: usize = 64 << 10;

/// Rejects of one object, staged as JSON Lines.
pub struct RejectWriter {
    uri: String,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
}

impl RejectWriter {
    pub fn new(dir: &Path, uri: &str) -> Self {
        RejectWriter { uri: uri.to_string(), path: dir.join("rejected.jsonl"), out: None, count: 0 }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn push(&mut self, line: &RejectLine) -> Result<(), IngestError> {
        if self.out.is_none() {
            let f = File::create(&self.path).map_err(|e| staging_err(&self.uri, &self.path, e))?;
            self.out = Some(BufWriter::new(f));
        }
        let out = self.out.as_mut().expect("opened above");
        serde_json::to_writer(&mut *out, line).map_err(|e| staging_err(&self.uri, &self.path, e.into()))?;
        out.write_all(b"\n").map_err(|e| staging_err(&self.uri, &self.path, e))?;
        self.count += 1;
        Ok(())
    }

    /// Stores the rejects (if any) as `_rejected/<table>/<stem>.jsonl`.
    pub fn commit(self, lake: &dyn LakeStore, table: &str, stem: &str) -> Result<Option<String>, IngestError> {
        let uri = self.uri.clone();
        let Some(file) = self.finish(table, stem)? else { return Ok(None) };
        Ok(store_all(lake, &uri, std::slice::from_ref(&file))?.pop())
    }

    /// Flushes the rejects (if any) and names them `_rejected/<table>/<stem>.jsonl`, without
    /// storing them. The staged file lives in the folder the writer was made in.
    pub fn finish(self, table: &str, stem: &str) -> Result<Option<(String, PathBuf)>, IngestError> {
        let Some(out) = self.out else { return Ok(None) };
        out.into_inner().map_err(|e| staging_err(&self.uri, &self.path, e.into_error()))?;
        Ok(Some((rejected_key(table, stem), self.path)))
    }
}

/// Where an object's rejects go.
pub fn rejected_key(table: &str, stem: &str) -> String {
    format!("{}/{table}/{stem}.jsonl", lake::REJECTED_DIR)
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse_record;
    use serde_json::value::RawValue;
    use trailwatch_core::store::LocalLake;

    #[test]
    fn partitions_beyond_the_open_limit_continue_in_part_files() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path());
        let limits =
            WriterLimits { batch_rows: 2, max_buffered_bytes: 1 << 20, max_open_partitions: 2, max_writer_bytes: 1 };
        let mut w = PartitionedWriter::<crate::convert::CloudTrailBatch>::new(&lake, "test", limits).unwrap();
        let raw: Box<RawValue> = serde_json::from_str(r#"{"eventTime":"2024-01-01T00:00:00Z"}"#).unwrap();
        let row = parse_record(&raw).unwrap();
        // Three days round-robin with room for two writers: every switch closes the least
        // recently used one, so days come back in new part files.
        for i in 0..9 {
            let p = Partition::new(Some("111122223333"), Some("eu-west-1"), format!("2024-01-0{}", i % 3 + 1));
            w.push(p, &row, 10).unwrap();
        }
        assert_eq!(w.rows(), 9);
        let keys = w.commit(&lake, "stem").unwrap();
        assert!(keys
            .contains(&"cloudtrail/account_id=111122223333/region=eu-west-1/date=2024-01-01/stem.parquet".to_string()));
        assert!(keys.iter().any(|k| k.ends_with("date=2024-01-01/stem-1.parquet")), "{keys:?}");
        let mut rows = 0;
        for k in &keys {
            let bytes = bytes::Bytes::from(std::fs::read(dir.path().join(k)).unwrap());
            let r =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            rows += r.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
        assert_eq!(rows, 9);
    }
}
