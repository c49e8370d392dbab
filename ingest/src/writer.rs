//! Writes rows to Parquet files per Hive partition, and rejects to JSON Lines, staged locally and
//! handed to the lake only when the whole object has been read, so a failed object leaves nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use serde::Serialize;
use trailwatch_core::lake::{self, Partition};
use trailwatch_core::store::LakeStore;

use arrow_array::{RecordBatch, UInt32Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use arrow_schema::SchemaRef;
use arrow_select::take::take_record_batch;

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
    /// Parquet writers open at once. An object's first partitions get one each; rows of any
    /// partition beyond them are spilled to a local Arrow IPC file and written to Parquet, one
    /// partition at a time, when the object ends: one file per partition per object, whatever
    /// the number of partitions and however their rows interleave.
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
    /// Made when the rows are first encoded: a partition whose rows all arrive before the object
    /// ends is written whole, without dictionaries when small ([`lake::small_file_properties`]).
    writer: Option<ArrowWriter<File>>,
    batch: B,
    path: PathBuf,
}

/// Rows of the partitions without a Parquet writer, all in one buffer (one builder whatever the
/// number of partitions: a builder holds some kilobytes per column even when empty), each row
/// tagged with its partition's index in `PartitionedWriter::spilled`.
struct SpillBuffer<B> {
    batch: B,
    parts: Vec<u32>,
}

impl<B: TableBatch> SpillBuffer<B> {
    /// Empties the buffer: its rows as one batch, and each partition's row indices into it (in
    /// the order the rows came), by partition index.
    fn drain(&mut self) -> (RecordBatch, BTreeMap<u32, Vec<u32>>) {
        let mut rows: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (row, part) in std::mem::take(&mut self.parts).into_iter().enumerate() {
            rows.entry(part).or_default().push(row as u32);
        }
        (self.batch.finish(), rows)
    }
}

/// The rows `idx` of `batch`.
fn take_rows(uri: &str, batch: &RecordBatch, idx: Vec<u32>) -> Result<RecordBatch, IngestError> {
    take_record_batch(batch, &UInt32Array::from(idx)).map_err(|e| encode_err(uri, e))
}

/// The spill file: Arrow IPC (LZ4 frames; zstd, though arrow-ipc keeps its contexts, builds
/// entropy tables per buffer and was no faster), written only when the spill buffer fills,
/// one record batch per partition per flush of the spill buffer.
struct Spill {
    writer: FileWriter<BufWriter<File>>,
    path: PathBuf,
    batches: usize,
}

/// The Parquet side of one object's ingest, for one table.
pub struct PartitionedWriter<B> {
    uri: String,
    dir: tempfile::TempDir,
    limits: WriterLimits,
    open: HashMap<Partition, OpenPart<B>>,
    /// Partitions without a Parquet writer, by index, and their batches in the spill file.
    spilled: Vec<(Partition, Vec<usize>)>,
    spilled_index: HashMap<Partition, u32>,
    spill_buffer: SpillBuffer<B>,
    spill: Option<Spill>,
    buffered: usize,
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
            spilled: Vec::new(),
            spilled_index: HashMap::new(),
            spill_buffer: SpillBuffer { batch: B::default(), parts: Vec::new() },
            spill: None,
            buffered: 0,
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

    /// Partitions whose rows went to the spill file rather than a Parquet writer of their own.
    pub fn spilled_partitions(&self) -> usize {
        self.spilled.len()
    }

    pub fn push(&mut self, p: &Partition, row: &B::Row<'_>, size: usize) -> Result<(), IngestError> {
        self.rows += 1;
        self.buffered += size;
        if !self.open.contains_key(p) && !self.spilled_index.contains_key(p) {
            if self.open.len() < self.limits.max_open_partitions {
                let path = self.dir.path().join(format!("{}.parquet", self.open.len()));
                self.open.insert(p.clone(), OpenPart { writer: None, batch: B::default(), path });
            } else {
                self.spilled_index.insert(p.clone(), self.spilled.len() as u32);
                self.spilled.push((p.clone(), Vec::new()));
            }
        }
        if let Some(open) = self.open.get_mut(p) {
            open.batch.push(row, size);
            if open.batch.len() >= self.limits.batch_rows {
                self.buffered -= open.batch.approx_bytes();
                write(&self.uri, open)?;
                self.bound_writers()?;
            }
        } else {
            let buf = &mut self.spill_buffer;
            buf.batch.push(row, size);
            buf.parts.push(self.spilled_index[p]);
            if buf.batch.len() >= self.limits.batch_rows {
                self.buffered -= buf.batch.approx_bytes();
                self.flush_spill()?;
            }
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
        self.flush_spill()?;
        self.buffered = 0;
        self.bound_writers()
    }

    /// Moves the spill buffer's rows to the spill file (made on first use): one batch per
    /// partition present, its rows in the order they came.
    fn flush_spill(&mut self) -> Result<(), IngestError> {
        if self.spill_buffer.batch.is_empty() {
            return Ok(());
        }
        let uri = &self.uri;
        let (batch, rows) = self.spill_buffer.drain();
        if self.spill.is_none() {
            let path = self.dir.path().join("spill.arrow");
            let file = File::create(&path).map_err(|e| staging_err(uri, &path, e))?;
            let opts = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::LZ4_FRAME))
                .map_err(|e| encode_err(uri, e))?;
            let writer = FileWriter::try_new_with_options(BufWriter::new(file), &B::schema(), opts)
                .map_err(|e| encode_err(uri, e))?;
            self.spill = Some(Spill { writer, path, batches: 0 });
        }
        let s = self.spill.as_mut().expect("made above");
        for (part, idx) in rows {
            s.writer.write(&take_rows(uri, &batch, idx)?).map_err(|e| encode_err(uri, e))?;
            self.spilled[part as usize].1.push(s.batches);
            s.batches += 1;
        }
        Ok(())
    }

    /// Closes row groups early, largest first, while the writers hold more than their budget.
    fn bound_writers(&mut self) -> Result<(), IngestError> {
        loop {
            let total: usize = self.open.values().filter_map(|o| o.writer.as_ref()).map(|w| w.memory_size()).sum();
            if total <= self.limits.max_writer_bytes {
                return Ok(());
            }
            let largest = self
                .open
                .values_mut()
                .filter_map(|o| o.writer.as_mut())
                .max_by_key(|w| w.memory_size())
                .expect("writers hold memory");
            largest.flush().map_err(|e| encode_err(&self.uri, e))?;
        }
    }

    /// Closes every file and stores it in the lake as `<partition>/<stem>.parquet`.
    /// Returns the lake keys written. All or nothing: see [`store_all`].
    pub fn commit(self, lake: &dyn LakeStore, stem: &str) -> Result<Vec<String>, IngestError> {
        let uri = self.uri.clone();
        let staged = self.finish(stem)?;
        store_all(lake, &uri, &staged.files)
    }

    /// Closes every file and names it `<partition>/<stem>.parquet`, without storing it. Spilled
    /// partitions are written here, one at a time (one Parquet writer in memory), each from its
    /// batches in the spill file.
    pub fn finish(mut self, stem: &str) -> Result<Staged, IngestError> {
        let uri = self.uri.clone();
        let mut closed = Vec::with_capacity(self.open.len() + self.spilled.len());
        for (p, mut open) in std::mem::take(&mut self.open) {
            if open.writer.is_none() && open.batch.len() <= lake::PLAIN_FILE_ROWS {
                // Every row of the file is here: a small one is written without dictionaries.
                open.writer = Some(parquet_file::<B>(&uri, &open.path, lake::small_file_properties())?);
            }
            if !open.batch.is_empty() {
                write(&uri, &mut open)?;
            }
            if let Some(w) = open.writer {
                w.close().map_err(|e| encode_err(&uri, e))?;
            }
            closed.push((p, open.path));
        }
        if self.spill.is_none() {
            // Every spilled row is still in the spill buffer (the common case: an object of a
            // few thousand rows over many partitions): each partition is written from it, with
            // no round trip through the spill file.
            let (batch, mut rows) = self.spill_buffer.drain();
            for (i, (p, _)) in std::mem::take(&mut self.spilled).into_iter().enumerate() {
                let path = self.dir.path().join(format!("spilled-{i}.parquet"));
                let idx = rows.remove(&(i as u32)).unwrap_or_default();
                let props = if idx.len() <= lake::PLAIN_FILE_ROWS {
                    lake::small_file_properties()
                } else {
                    lake::writer_properties()
                };
                let mut writer = parquet_file::<B>(&uri, &path, props)?;
                writer.write(&take_rows(&uri, &batch, idx)?).map_err(|e| encode_err(&uri, e))?;
                writer.close().map_err(|e| encode_err(&uri, e))?;
                closed.push((p, path));
            }
        }
        self.flush_spill()?;
        let mut reader = match self.spill.take() {
            Some(mut s) => {
                s.writer.finish().map_err(|e| encode_err(&uri, e))?;
                drop(s.writer);
                let f = File::open(&s.path).map_err(|e| staging_err(&uri, &s.path, e))?;
                Some(FileReader::try_new(std::io::BufReader::new(f), None).map_err(|e| encode_err(&uri, e))?)
            }
            None => None,
        };
        for (i, (p, blocks)) in std::mem::take(&mut self.spilled).into_iter().enumerate() {
            let path = self.dir.path().join(format!("spilled-{i}.parquet"));
            let mut writer = parquet_file::<B>(&uri, &path, lake::writer_properties())?;
            for block in blocks {
                let r = reader.as_mut().expect("a partition with spilled blocks has a spill file");
                r.set_index(block).map_err(|e| encode_err(&uri, e))?;
                let batch = r.next().transpose().map_err(|e| encode_err(&uri, e))?;
                let batch = batch.ok_or_else(|| encode_err(&uri, format!("spill file ended before batch {block}")))?;
                writer.write(&batch).map_err(|e| encode_err(&uri, e))?;
            }
            writer.close().map_err(|e| encode_err(&uri, e))?;
            closed.push((p, path));
        }
        closed.sort();
        let files = closed.into_iter().map(|(p, path)| (format!("{}/{stem}.parquet", p.dir(B::TABLE)), path)).collect();
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

/// A staged Parquet file of table `B`, with the lake's writer properties.
fn parquet_file<B: TableBatch>(
    uri: &str,
    path: &Path,
    props: parquet::file::properties::WriterProperties,
) -> Result<ArrowWriter<File>, IngestError> {
    let file = File::create(path).map_err(|e| staging_err(uri, path, e))?;
    ArrowWriter::try_new(file, B::schema(), Some(props)).map_err(|e| encode_err(uri, e))
}

/// Encodes a partition's buffered rows; a file still growing gets dictionaries.
fn write<B: TableBatch>(uri: &str, open: &mut OpenPart<B>) -> Result<(), IngestError> {
    if open.writer.is_none() {
        open.writer = Some(parquet_file::<B>(uri, &open.path, lake::writer_properties())?);
    }
    let batch = open.batch.finish();
    open.writer.as_mut().expect("made above").write(&batch).map_err(|e| encode_err(uri, e))
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

    fn event_ids(path: &Path) -> Vec<String> {
        let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let mut ids = Vec::new();
        for b in r {
            let b = b.unwrap();
            let col = b.column_by_name("event_id").unwrap();
            let col = col.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
            ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
        ids
    }

    /// Rows of many partitions, interleaved, with room for two Parquet writers and buffers that
    /// spill often (through the spill file) or never (the rows stay in the spill buffer): either
    /// way one file per partition, every row once, in the order it came.
    #[test]
    fn partitions_beyond_the_open_limit_still_get_one_file_each() {
        let on_disk =
            WriterLimits { batch_rows: 2, max_buffered_bytes: 25, max_open_partitions: 2, max_writer_bytes: 1 };
        let in_memory = WriterLimits { batch_rows: 1024, max_buffered_bytes: 1 << 20, ..on_disk };
        for limits in [on_disk, in_memory] {
            one_file_per_partition(limits);
        }
    }

    fn one_file_per_partition(limits: WriterLimits) {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path());
        let mut w = PartitionedWriter::<crate::convert::CloudTrailBatch>::new(&lake, "test", limits).unwrap();
        let days = 7;
        let mut want: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for i in 0..60 {
            let day = format!("2024-01-0{}", (i * 5) % days + 1);
            let text = format!(r#"{{"eventTime":"{day}T00:00:00Z","eventID":"e{i}"}}"#);
            let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
            let row = parse_record(&raw).unwrap();
            let p = Partition::new(Some("111122223333"), Some("eu-west-1"), day.clone());
            w.push(&p, &row, 10).unwrap();
            want.entry(format!("cloudtrail/account_id=111122223333/region=eu-west-1/date={day}/stem.parquet"))
                .or_default()
                .push(format!("e{i}"));
        }
        assert_eq!(w.rows(), 60);
        assert_eq!(w.spilled_partitions(), days - 2);
        let keys = w.commit(&lake, "stem").unwrap();
        assert_eq!(keys, want.keys().cloned().collect::<Vec<_>>());
        for (k, ids) in &want {
            assert_eq!(&event_ids(&dir.path().join(k)), ids, "{k}");
        }
    }

    /// Whether every column chunk of a file has a dictionary page, or none has.
    fn dictionaries(path: &Path) -> (usize, usize) {
        let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
        let meta = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&bytes).unwrap();
        let chunks: Vec<_> = meta.row_groups().iter().flat_map(|g| g.columns()).collect();
        (chunks.iter().filter(|c| c.dictionary_page_offset().is_some()).count(), chunks.len())
    }

    /// A file written whole with few rows has no dictionary (every reader pays a page and a
    /// decoder per column for one); a partition that outgrows its buffer keeps them, spilled or
    /// not.
    #[test]
    fn small_files_are_written_without_dictionaries() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path());
        let limits = WriterLimits { batch_rows: 8, max_open_partitions: 2, ..Default::default() };
        let mut w = PartitionedWriter::<crate::convert::CloudTrailBatch>::new(&lake, "test", limits).unwrap();
        // Day 1: 3 rows (small, open); day 2: 20 rows (outgrows its buffer, open); day 3: 3 rows
        // (spilled, small).
        for (day, n) in [(1, 3), (2, 20), (3, 3)] {
            for i in 0..n {
                let text =
                    format!(r#"{{"eventTime":"2024-01-0{day}T00:00:00Z","eventID":"e{day}-{i}","eventName":"Get"}}"#);
                let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
                let p = Partition::new(Some("111122223333"), Some("eu-west-1"), format!("2024-01-0{day}"));
                w.push(&p, &parse_record(&raw).unwrap(), 10).unwrap();
            }
        }
        let keys = w.commit(&lake, "stem").unwrap();
        let found: Vec<(usize, usize)> = keys.iter().map(|k| dictionaries(&dir.path().join(k))).collect();
        assert_eq!(found[0].0, 0, "{found:?}");
        assert!(found[1].0 > found[1].1 / 2, "{found:?}");
        assert_eq!(found[2].0, 0, "{found:?}");
        assert_eq!(event_ids(&dir.path().join(&keys[1])).len(), 20);
    }
}
