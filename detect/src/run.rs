//! One detect run over the lake: read the objects not read before, in event-time order, feed
//! the engine, and hand back the findings and the state to commit.

use std::collections::BTreeMap;
use std::io::Read;

use trailwatch_core::finding::Finding;
use trailwatch_core::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE};
use trailwatch_core::store::{ObjectRef, ObjectSource};
use trailwatch_core::time::{utc_date, EpochMillis};

use crate::config::DetectConfig;
use crate::engine::{Counters, Engine, STATE_VERSION};
use crate::error::DetectError;
use crate::event::{Event, Table};
use crate::read::{partition_of, Decoded};
use crate::state::{Meta, StateStore};
use crate::window::DAY;

/// Lake partitions older than this (behind the clock) are listed only by a full listing: their
/// data is far past every window's lateness. Their files are still read when they arrived since
/// the last full listing (late deliveries count as late and are checked for novelty); files that
/// were there before it were read then. History that old is learned with `trailwatch baseline`.
pub const RETENTION_DAYS: i64 = 3;

/// How often (wall clock) a run lists every partition of the lake, to find late deliveries to
/// partitions older than the retention; runs in between list only the partitions inside it, so
/// a 5-minute run costs what is recent, not a year of files.
pub const FULL_LISTING_EVERY: i64 = DAY;

/// Manifest entries are kept this long: a day past the retention, so that a file read while its
/// partition was recent is still known when the next full listing finds it in an old one.
pub const MANIFEST_DAYS: i64 = RETENTION_DAYS + 1;

/// Where the lake is: a local folder (`bucket` empty, `prefix` its path) or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLocation {
    pub bucket: String,
    pub prefix: String,
}

impl LakeLocation {
    pub fn table_prefix(&self, table: &str) -> String {
        let p = self.prefix.trim_end_matches('/');
        if p.is_empty() {
            format!("{table}/")
        } else {
            format!("{p}/{table}/")
        }
    }

    /// The key relative to the lake root, as the manifest records it.
    pub fn relative<'k>(&self, key: &'k str) -> &'k str {
        let p = self.prefix.trim_end_matches('/');
        key.strip_prefix(p).map(|k| k.trim_start_matches('/')).unwrap_or(key)
    }
}

/// A lake file to read.
#[derive(Debug, Clone)]
struct LakeFile {
    obj: ObjectRef,
    rel: String,
    /// `None` until read, for files without an ETag.
    version: Option<String>,
    table: Table,
    account: String,
    region: String,
    /// The source object the file was made from (a hash of its stem): watermarks need two.
    source: u64,
}

/// The source of a lake file: files are named `<stem>[-<part>].parquet` after the object they
/// were made from, so every part of one delivered object is one source.
pub fn source_of(rel: &str) -> u64 {
    crate::stats::hash_str(trailwatch_core::lake::file_stem(rel))
}

/// What a run did, and the state to commit once its findings are safely out.
#[derive(Debug)]
pub struct DetectRun {
    pub files_read: u64,
    /// Files already read by an earlier run (same key and version) or too old to matter.
    pub files_unchanged: u64,
    /// Files in partitions older than the retention that arrived since the last full listing:
    /// read, so their records count as late and are checked for novelty, and named in the log.
    pub files_late: u64,
    /// Files that could not be read: (uri, reason). They are not recorded as read, so the next
    /// run tries them again.
    pub files_failed: Vec<(String, String)>,
    /// Whether this run listed every partition, or only those inside the retention.
    pub full_listing: bool,
    pub counters: Counters,
    pub findings: Vec<Finding>,
    engine: Engine,
    meta: Meta,
}

impl DetectRun {
    /// Saves the state: every shard, then the manifest and clock. Call it after the findings
    /// were delivered: a crash before it re-reads the same objects next time and emits the same
    /// findings (same ids) again, rather than losing them.
    pub fn commit(self, store: &dyn StateStore) -> Result<(), DetectError> {
        for s in self.engine.shards.values() {
            store.save_shard(s)?;
        }
        store.save_meta(&self.meta)
    }

    pub fn shards(&self) -> usize {
        self.engine.shards.len()
    }
}

/// The version a manifest records for an object: its ETag when the store has one. Local files
/// have none (and ingest rewrites them with a new modification time but the same bytes), so
/// their version is a hash of their content, [`content_version`].
pub fn version_of(obj: &ObjectRef) -> Option<String> {
    obj.etag.as_ref().map(|e| e.trim_matches('"').to_string())
}

/// The version of a file without an ETag: the 128-bit XXH3 of its bytes. It only tells a
/// rewritten local file from the one already read, so it need not resist forgery (whoever can
/// rewrite a file with a colliding one can as well write a new file); SHA-256 was 6% of a run over
/// the lake as ingest wrote it.
pub fn content_version(bytes: &[u8]) -> String {
    format!("xxh3:{:032x}", twox_hash::XxHash3_128::oneshot(bytes))
}

/// The version to compare with `known` and record for a local file: [`content_version`], unless
/// `known` is a SHA-256 version (state written before XXH3) of these very bytes, which is
/// returned so the file is not read again for the change of hash alone. A changed file gets
/// its XXH3 version.
pub fn local_version(known: Option<&str>, bytes: &[u8]) -> String {
    if let Some(k) = known.filter(|k| k.starts_with("sha256:")) {
        use sha2::Digest;
        let sha = format!("sha256:{}", trailwatch_core::lake::hex(&sha2::Sha256::digest(bytes)));
        if sha == k {
            return sha;
        }
    }
    content_version(bytes)
}

/// Reads the lake's new objects and runs every detector over them. `now` is the processing wall
/// clock (ms since the epoch): records claiming later times are reported, not trusted.
pub fn detect_lake(
    src: &dyn ObjectSource,
    lake: &LakeLocation,
    store: &dyn StateStore,
    cfg: &DetectConfig,
    now: EpochMillis,
) -> Result<DetectRun, DetectError> {
    detect_lake_reporting(src, lake, store, cfg, now, &NoProgress)
}

/// Told how a run over the lake goes, for a progress bar: the library draws nothing itself.
pub trait Progress {
    /// The files to read, once listed.
    fn listed(&self, _files: u64) {}
    /// A day's files were read and their events fed to the detectors.
    fn read(&self, _files: u64, _events: u64) {}
}

/// No progress shown.
pub struct NoProgress;

impl Progress for NoProgress {}

/// [`detect_lake`], telling `progress` how it goes.
pub fn detect_lake_reporting(
    src: &dyn ObjectSource,
    lake: &LakeLocation,
    store: &dyn StateStore,
    cfg: &DetectConfig,
    now: EpochMillis,
    progress: &dyn Progress,
) -> Result<DetectRun, DetectError> {
    let mut meta = store.load_meta()?;
    meta.version = STATE_VERSION;
    let shards = store.load_shards()?;
    let key = meta.hash_key()?;
    let mut engine = Engine::new(shards, meta.clock).with_now(now).with_key(key);
    let oldest = engine.clock().map(|c| utc_date(c - RETENTION_DAYS * DAY));
    // A file in an old partition that arrived since the last run listed the lake is a late
    // delivery: read it. Arrival is judged by the store's own clock, never this machine's.
    let (last_listed, frontier) = (meta.last_listed, meta.last_listed_keys.clone());
    let arrived_late = |obj: &ObjectRef, rel: &str| match (last_listed, obj.modified) {
        (Some(l), Some(m)) => m > l || (m == l && !frontier.iter().any(|k| k == rel)),
        _ => true,
    };
    let mut newest: (Option<EpochMillis>, Vec<String>) = (last_listed, vec![]);
    // Every partition now and then, else the recent ones (by listing after `date=<oldest>` in
    // each account and region; S3 lists keys in order).
    // A wall clock behind the last full listing's (a host clock set wrong once) makes one due too.
    let full = oldest.is_none() || meta.last_full_listing.is_none_or(|l| now < l || now - l >= FULL_LISTING_EVERY);

    let mut run = DetectRun {
        files_read: 0,
        files_unchanged: 0,
        files_late: 0,
        files_failed: vec![],
        full_listing: false,
        counters: Counters::default(),
        findings: vec![],
        engine: Engine::default(),
        meta: Meta::default(),
    };
    let mut by_date: BTreeMap<String, Vec<LakeFile>> = BTreeMap::new();
    for (name, table) in [
        (CLOUDTRAIL_TABLE, Table::CloudTrail),
        (LAMBDA_INVOCATIONS_TABLE, Table::Invocations),
        (LAMBDA_METRICS_TABLE, Table::Metrics),
    ] {
        let listed = match list_table(src, lake, name, oldest.as_deref().filter(|_| !full)) {
            Ok(l) => l,
            // A lake without this table yet (a local folder that does not exist).
            Err(e) if !e.retryable && lake.bucket.is_empty() => {
                tracing::debug!("no {name} table: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for obj in listed {
            if !obj.key.ends_with(".parquet") {
                continue;
            }
            let rel = lake.relative(&obj.key).to_string();
            if let Some(m) = obj.modified {
                if newest.0.is_none_or(|n| m > n) {
                    newest = (Some(m), vec![]);
                }
                if newest.0 == Some(m) {
                    newest.1.push(rel.clone());
                }
            }
            // A compacted file holds rows of files already read: `trailwatch compact` takes only
            // files that have been in the lake longer than detect takes to read them. A run from
            // empty state (a first run, a bench) has read nothing, so it reads them.
            if trailwatch_core::lake::is_compacted(&rel) && engine.clock().is_some() {
                run.files_unchanged += 1;
                continue;
            }
            let Some((account, region, date)) = partition_of(&rel) else { continue };
            let version = version_of(&obj);
            let known = engine.shards.get(&(account.clone(), region.clone())).and_then(|s| s.manifest.get(&rel));
            if version.is_some() && known == version.as_ref() {
                run.files_unchanged += 1;
                continue;
            }
            if oldest.as_ref().is_some_and(|o| &date < o) {
                if !arrived_late(&obj, &rel) {
                    // Read by the run after it arrived.
                    run.files_unchanged += 1;
                    continue;
                }
                run.files_late += 1;
                tracing::info!(file = %obj.uri(), "late file in a partition older than the retention: read for late counts and novelty");
            }
            let source = source_of(&rel);
            by_date.entry(date).or_default().push(LakeFile { obj, rel, version, table, account, region, source });
        }
    }

    let before: Counters = total(&engine);
    let mut schemas = crate::footer::Schemas::default();
    progress.listed(by_date.values().map(|f| f.len() as u64).sum());
    for (_, files) in by_date {
        // Decode the day's files, then make events that borrow their text from the batches.
        let mut decoded: Vec<(&LakeFile, String, Decoded)> = Vec::new();
        for f in &files {
            let known = engine.shards.get(&(f.account.clone(), f.region.clone())).and_then(|s| s.manifest.get(&f.rel));
            match read_one(src, f, known, &cfg.ruleset, &mut schemas) {
                Ok(None) => run.files_unchanged += 1,
                Ok(Some((version, d))) => decoded.push((f, version, d)),
                Err(e) => {
                    tracing::warn!("{e}");
                    run.files_failed.push((f.obj.uri(), e.to_string()));
                }
            }
        }
        let (mut views, mut parts) = (Vec::with_capacity(decoded.len()), Vec::new());
        for (f, version, d) in &decoded {
            match d.views(&f.account, &f.region, f.source) {
                Ok((v, p)) => {
                    run.files_read += 1;
                    engine.shard_mut(&f.account, &f.region).manifest.insert(f.rel.clone(), version.clone());
                    let offset = views.len();
                    views.extend(v);
                    parts.extend(p.into_iter().map(|p| crate::read::Part { batch: p.batch + offset, ..p }));
                }
                // Not recorded as read (none of its events kept): the next run tries it again.
                Err(message) => {
                    let e = DetectError::BadLakeFile { uri: f.obj.uri(), message };
                    tracing::warn!("{e}");
                    run.files_failed.push((f.obj.uri(), e.to_string()));
                }
            }
        }
        let n = feed_parts(&mut engine, cfg, &views, &parts);
        progress.read(files.len() as u64, n);
    }
    let after = total(&engine);
    run.counters = Counters {
        events: after.events - before.events,
        duplicates: after.duplicates - before.duplicates,
        too_late: after.too_late - before.too_late,
        future: after.future - before.future,
    };
    if run.files_late > 0 {
        tracing::warn!(
            files = run.files_late,
            retention_days = RETENTION_DAYS,
            "files arrived in partitions older than the retention: read for late counts and novelty only"
        );
    }
    if run.counters.future > 0 {
        tracing::warn!(
            records = run.counters.future,
            max_skew_minutes = cfg.time.max_future_skew_minutes,
            "records claim event times ahead of the wall clock: reported as event_time_skew, not trusted"
        );
    }
    let mut findings = engine.take_findings(cfg);
    findings.sort_by(|a, b| {
        (a.start, &a.kind, &a.subject, a.status as u8).cmp(&(b.start, &b.kind, &b.subject, b.status as u8))
    });
    run.findings = findings;
    meta.clock = engine.confirmed;
    run.full_listing = full;
    if full {
        // Arrival into old partitions is judged against full listings only: a recent-only
        // listing saw none of them.
        (meta.last_listed, meta.last_listed_keys) = newest;
        meta.last_full_listing = Some(now);
    } else {
        meta.last_listed_keys = frontier;
    }
    // Pruned at full listings only: a file read by a recent-only run stays known until a full
    // listing has looked at its partition, however far the event clock moved in between.
    if let Some(c) = engine.clock().filter(|_| full) {
        for s in engine.shards.values_mut() {
            prune_manifest(s, c);
        }
    }
    run.engine = engine;
    run.meta = meta;
    Ok(run)
}

/// Feeds one date partition's events, each with its source ([`source_of`]): in event-time
/// order (files of a day arrive in any order), closing windows as time moves so findings come
/// out in time order. `trailwatch baseline` feeds history through this same function, so its
/// state is the streaming state.
pub fn feed_day(engine: &mut Engine, cfg: &DetectConfig, events: Vec<(u64, Event<'_>)>) {
    // Sort (time, index) pairs, not the events: moving events of a few hundred bytes each was a
    // tenth of a run over a compacted lake. Ties keep the order read, as a stable sort would.
    // One buffer for every day: freeing a large block each day made glibc consolidate its bins.
    thread_local!(static ORDER: std::cell::RefCell<Vec<(i64, u32)>> = const { std::cell::RefCell::new(Vec::new()) });
    let mut order = ORDER.take();
    order.clear();
    order.extend(events.iter().enumerate().map(|(i, (_, e))| (e.time(), i as u32)));
    order.sort_unstable();
    for (i, &(_, at)) in order.iter().enumerate() {
        let (source, ev) = &events[at as usize];
        engine.observe_from(cfg, ev, *source);
        if i % 50_000 == 49_999 {
            engine.advance(cfg);
        }
    }
    engine.advance(cfg);
    ORDER.set(order);
}

/// Feeds a day's decoded rows to the engine in event-time order, as [`feed_day`] does, making
/// each row an event only when its turn comes; returns the events fed.
pub fn feed_parts(
    engine: &mut Engine,
    cfg: &DetectConfig,
    views: &[crate::read::Rows<'_>],
    parts: &[crate::read::Part],
) -> u64 {
    thread_local!(static ORDER: std::cell::RefCell<Vec<(i64, u32, u32)>> = const { std::cell::RefCell::new(Vec::new()) });
    thread_local!(static PACKED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });
    thread_local!(static SCRATCH: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });
    let mut order = ORDER.take();
    order.clear();
    for (p, part) in parts.iter().enumerate() {
        let rows = &views[part.batch];
        order.extend(part.range.clone().filter_map(|i| rows.time(i).map(|t| (t, p as u32, i as u32))));
    }
    // (time, part, row): ties keep the order read, as in `feed_day`. Packed into one u64 (time
    // less the day's first, part, row) when the three fit, as they do for a day's partition:
    // sorting 8-byte integers instead of 16-byte tuples.
    let mut packed = PACKED.take();
    packed.clear();
    let order_of = order_packing(&order);
    match order_of {
        Some(k) => {
            packed.extend(order.iter().map(|&(t, p, i)| k.pack(t, p, i)));
            let mut scratch = SCRATCH.take();
            radix_sort(&mut packed, &mut scratch, k.key_bits);
            SCRATCH.set(scratch);
        }
        None => order.sort_unstable(),
    }
    let mut fed = 0u64;
    // The last event's account and region, borrowed from `views`: the same bytes (pointer and
    // length) mean the same shard, so the engine need not compare the names.
    let mut last: Option<(&str, &str)> = None;
    let n = order.len();
    for at in 0..n {
        let (p, i) = match order_of {
            Some(k) => k.unpack(packed[at]),
            None => (order[at].1, order[at].2),
        };
        let part = &parts[p as usize];
        let Some(ev) = views[part.batch].event(i as usize) else { continue };
        let now = ev.borrowed_shard();
        let same = matches!((last, now), (Some((a, r)), Some((b, s))) if std::ptr::eq(a, b) && std::ptr::eq(r, s));
        engine.observe_routed(cfg, &ev, part.source, same);
        last = now;
        fed += 1;
        if fed.is_multiple_of(50_000) {
            engine.advance(cfg);
        }
    }
    engine.advance(cfg);
    ORDER.set(order);
    PACKED.set(packed);
    fed
}

/// How (time, part, row) entries pack into one u64 that sorts as they do: time less the
/// smallest, then part, then row, each in as many bits as its largest value needs.
#[derive(Debug, Clone, Copy)]
struct Packing {
    t0: i64,
    part_bits: u32,
    row_bits: u32,
    /// The bits a packed key may use: every key is below `1 << key_bits`.
    key_bits: u32,
}

impl Packing {
    #[inline]
    fn pack(self, t: i64, p: u32, i: u32) -> u64 {
        ((((t - self.t0) as u64) << self.part_bits | p as u64) << self.row_bits) | i as u64
    }

    #[inline]
    fn unpack(self, k: u64) -> (u32, u32) {
        let row = k & ((1u64 << self.row_bits) - 1);
        let part = (k >> self.row_bits) & ((1u64 << self.part_bits) - 1);
        (part as u32, row as u32)
    }
}

/// The packing of `order`, or `None` when its times span too much for the bits left.
fn order_packing(order: &[(i64, u32, u32)]) -> Option<Packing> {
    let bits = |x: u64| 64 - x.leading_zeros();
    let (mut t0, mut t1, mut p1, mut i1) = (i64::MAX, i64::MIN, 0u32, 0u32);
    for &(t, p, i) in order {
        (t0, t1, p1, i1) = (t0.min(t), t1.max(t), p1.max(p), i1.max(i));
    }
    if order.is_empty() {
        return None;
    }
    let span = t1.checked_sub(t0)? as u64;
    let (part_bits, row_bits) = (bits(p1 as u64), bits(i1 as u64));
    let key_bits = bits(span) + part_bits + row_bits;
    (key_bits <= 64).then_some(Packing { t0, part_bits, row_bits, key_bits })
}

/// Digits of a [`radix_sort`] pass: 2,048 counters (8 KiB) a pass.
const RADIX_BITS: u32 = 11;

/// Sorts `keys`, each below `1 << bits`, a digit at a time from the lowest (least significant
/// digit radix sort), with `scratch` as the second buffer (both keep their capacity for the next
/// day); returns the passes run. A day's keys, about 50 bits, take five passes of reads and
/// scattered writes. `sort_unstable` ran 23 million more instructions over a compacted lake
/// (0.9% of the run), comparisons whose branches mispredict on keys in no order. Passes whose
/// digit is the same in every key are skipped.
fn radix_sort(keys: &mut Vec<u64>, scratch: &mut Vec<u64>, bits: u32) -> usize {
    // Below this, or beyond what `u32` counters can count, comparisons cost less or are needed.
    const SMALL: usize = 256;
    if keys.len() <= SMALL || keys.len() > u32::MAX as usize {
        keys.sort_unstable();
        return 0;
    }
    let passes = bits.div_ceil(RADIX_BITS) as usize;
    let mask = (1u64 << RADIX_BITS) - 1;
    // Every pass's counts in one read of the keys.
    let mut counts = vec![[0u32; 1 << RADIX_BITS]; passes];
    for &k in keys.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (d as u32 * RADIX_BITS)) & mask) as usize] += 1;
        }
    }
    scratch.clear();
    scratch.resize(keys.len(), 0);
    let (mut from, mut to) = (keys, scratch);
    let mut run = 0;
    for (d, c) in counts.iter_mut().enumerate() {
        if c.iter().any(|&n| n as usize == from.len()) {
            continue;
        }
        let mut at = 0u32;
        for n in c.iter_mut() {
            (*n, at) = (at, at + *n);
        }
        let shift = d as u32 * RADIX_BITS;
        for &k in from.iter() {
            let slot = &mut c[((k >> shift) & mask) as usize];
            to[*slot as usize] = k;
            *slot += 1;
        }
        std::mem::swap(&mut from, &mut to);
        run += 1;
    }
    // After an odd number of passes the keys are in the scratch buffer: swap the contents back.
    if run % 2 == 1 {
        std::mem::swap(from, to);
    }
    run
}

/// Runs the detectors and `cfg`'s rules over CloudTrail batches of the lake schema as one shard,
/// in event-time order, from empty state: what `trailwatch rules test` runs a rule's samples
/// through, so a sample fires exactly when the same records in the lake would.
pub fn detect_batches(cfg: &DetectConfig, batches: Vec<arrow_array::RecordBatch>) -> Result<Vec<Finding>, String> {
    let d = Decoded::from_batches(Table::CloudTrail, batches, &cfg.ruleset);
    let mut events = Vec::with_capacity(d.rows());
    d.events("000000000000", "samples", 0, &mut events)?;
    let mut engine = Engine::default();
    feed_day(&mut engine, cfg, events);
    Ok(engine.take_findings(cfg))
}

/// Forgets manifest entries of partitions older than [`MANIFEST_DAYS`]: their files are read
/// again only if they change after the next full listing starts.
pub fn prune_manifest(s: &mut crate::engine::Shard, clock: EpochMillis) {
    let oldest = utc_date(clock - MANIFEST_DAYS * DAY);
    s.manifest.retain(|k, _| partition_of(k).is_some_and(|(_, _, d)| d >= oldest));
}

/// The lake files of `table`: every one, or with `since` (a date) those of partitions from that
/// date on, found per account and region folder so old partitions are never listed.
fn list_table(
    src: &dyn ObjectSource,
    lake: &LakeLocation,
    table: &str,
    since: Option<&str>,
) -> Result<Vec<ObjectRef>, trailwatch_core::store::StoreError> {
    let prefix = lake.table_prefix(table);
    let Some(since) = since else { return src.list(&lake.bucket, &prefix) };
    let accounts = src.list_folders(&lake.bucket, &prefix)?;
    let regions: Vec<String> = src.list_folders_each(&lake.bucket, &accounts)?.into_iter().flatten().collect();
    let after: Vec<(String, String)> = regions
        .into_iter()
        .map(|r| {
            let start = format!("{r}date={since}");
            (r, start)
        })
        .collect();
    Ok(src.list_after_each(&lake.bucket, &after)?.into_iter().flatten().collect())
}

fn total(e: &Engine) -> Counters {
    let mut c = Counters::default();
    for s in e.shards.values() {
        c.events += s.counters.events;
        c.duplicates += s.counters.duplicates;
        c.too_late += s.counters.too_late;
        c.future += s.counters.future;
    }
    c
}

/// The version to record for bytes just read: the ETag the store gave with them, which
/// describes these bytes, over the one listed or notified before. The object may have been
/// replaced in between: recording a version newer than the bytes read (the handed files of
/// `trailwatch run`) would mark bytes never read as read; one older than them only has them read
/// again. Without either, a local file's content version.
fn version_read(listed: Option<&str>, opened: Option<&str>, known: Option<&str>, bytes: &[u8]) -> String {
    match opened.or(listed) {
        Some(e) => e.trim_matches('"').to_string(),
        None => local_version(known, bytes),
    }
}

/// Reads and decodes a lake file; returns its version and columns, or `None` when its content is
/// the version already read (`known`).
fn read_one(
    src: &dyn ObjectSource,
    f: &LakeFile,
    known: Option<&String>,
    rules: &crate::sigma::Rules,
    schemas: &mut crate::footer::Schemas,
) -> Result<Option<(String, Decoded)>, DetectError> {
    let body = src.open(&f.obj)?;
    let mut buf = Vec::with_capacity(f.obj.size.unwrap_or(0) as usize);
    let mut reader = body.reader;
    reader.read_to_end(&mut buf).map_err(|e| {
        DetectError::Store(trailwatch_core::store::StoreError {
            op: "read",
            uri: f.obj.uri(),
            message: e.to_string(),
            retryable: true,
        })
    })?;
    let version = version_read(f.version.as_deref(), body.etag.as_deref(), known.map(String::as_str), &buf);
    if known == Some(&version) {
        return Ok(None);
    }
    let d = Decoded::read(bytes::Bytes::from(buf), f.table, rules, schemas)
        .map_err(|message| DetectError::BadLakeFile { uri: f.obj.uri(), message })?;
    Ok(Some((version, d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Packed keys sort as the (time, part, row) entries they pack, and give back part and
        /// row; entries whose times span too much are not packed.
        #[test]
        fn packed_order_sorts_as_the_entries(
            entries in proptest::collection::vec((-5i64..5, 0u32..40, 0u32..3000), 1..300),
            scale in proptest::sample::select(vec![1i64, 86_400_000, 1 << 40, i64::MAX / 8]),
        ) {
            let order: Vec<(i64, u32, u32)> = entries.iter().map(|&(t, p, i)| (t * scale, p, i)).collect();
            let Some(k) = order_packing(&order) else {
                proptest::prop_assert!(scale > 1 << 30, "a day's span packs");
                return Ok(());
            };
            let mut want = order.clone();
            want.sort_unstable();
            let mut keys: Vec<u64> = order.iter().map(|&(t, p, i)| k.pack(t, p, i)).collect();
            radix_sort(&mut keys, &mut Vec::new(), k.key_bits);
            let got: Vec<(u32, u32)> = keys.iter().map(|&x| k.unpack(x)).collect();
            proptest::prop_assert_eq!(got, want.iter().map(|&(_, p, i)| (p, i)).collect::<Vec<_>>());
        }
    }

    proptest::proptest! {
        /// The radix sort orders as `sort_unstable` does, below and above the length it hands to
        /// `sort_unstable`, at any width. With `shared`, every key has the same middle digits, so
        /// the passes over them are skipped between passes that are not.
        #[test]
        fn radix_sort_sorts(
            raw in proptest::collection::vec(proptest::num::u64::ANY, 0..3000),
            bits in 0u32..=64,
            same in proptest::num::u64::ANY,
            shared in proptest::bool::ANY,
        ) {
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            let middle = ((1u64 << (4 * RADIX_BITS)) - 1) & !((1u64 << RADIX_BITS) - 1);
            let keys: Vec<u64> =
                raw.iter().map(|&k| if shared { (k & !middle) | (same & middle) } else { k } & mask).collect();
            let mut want = keys.clone();
            want.sort_unstable();
            let mut got = keys;
            let mut scratch = vec![7; 3];
            let run = radix_sort(&mut got, &mut scratch, bits);
            proptest::prop_assert_eq!(&got, &want);
            let passes = bits.div_ceil(RADIX_BITS) as usize;
            proptest::prop_assert!(run <= passes);
            if shared && got.len() > 256 && bits >= 4 * RADIX_BITS {
                proptest::prop_assert!(run <= passes - 3, "{} passes of {} run with three digits shared", run, passes);
            }
        }
    }

    #[test]
    fn radix_sort_runs_the_passes_it_needs_and_keeps_both_buffers() {
        // 1,000 keys whose second digit alone differs: one pass of three.
        let mut keys: Vec<u64> = (0..1000u64).rev().map(|i| (5 << 22) | (i << RADIX_BITS) | 9).collect();
        let mut scratch = Vec::with_capacity(4000);
        assert_eq!(radix_sort(&mut keys, &mut scratch, 33), 1);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys.len(), 1000);
        // After one pass the sorted keys are in the other buffer: both are kept, swapped.
        assert!(keys.capacity() >= 4000 && scratch.capacity() >= 1000);
        // Two passes (first and second digit differ) leave the keys where they started.
        let mut keys: Vec<u64> = (0..1000u64).rev().map(|i| (i << RADIX_BITS) | (i % 7)).collect();
        let cap = keys.capacity();
        assert_eq!(radix_sort(&mut keys, &mut scratch, 22), 2);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys.capacity(), cap);
    }

    #[test]
    fn packing_takes_every_bit_and_not_one_more() {
        // Part and row of 32 bits each leave no bit for time: a span of 0 packs, a span of 1 not.
        let wide = [(7, u32::MAX, u32::MAX), (7, 0, 0)];
        let k = order_packing(&wide).expect("64 bits");
        assert_eq!((k.part_bits, k.row_bits, k.key_bits), (32, 32, 64));
        assert_eq!(k.unpack(k.pack(7, u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
        assert!(order_packing(&[(7, u32::MAX, u32::MAX), (8, 0, 0)]).is_none());
        // 62 bits of time and one each of part and row: 64.
        let t = (1i64 << 62) - 1;
        let k = order_packing(&[(0, 1, 1), (t, 0, 0)]).expect("64 bits");
        assert!(k.pack(t, 0, 0) > k.pack(0, 1, 1));
        assert_eq!(k.unpack(k.pack(t, 1, 0)), (1, 0));
        assert!(order_packing(&[(0, 1, 1), (t + 1, 0, 0)]).is_none(), "65 bits");
        // Nothing, or all equal: no bits at all.
        assert!(order_packing(&[]).is_none());
        let k = order_packing(&[(5, 0, 0)]).expect("0 bits");
        assert_eq!(k.unpack(k.pack(5, 0, 0)), (0, 0));
    }

    #[test]
    fn the_version_recorded_is_that_of_the_bytes_read() {
        let bytes = b"PAR1 lake file PAR1".as_slice();
        // Replaced between the listing and the read: the read's ETag names the bytes.
        assert_eq!(version_read(Some("\"listed\""), Some("\"read\""), None, bytes), "read");
        assert_eq!(version_read(Some("listed"), None, None, bytes), "listed");
        assert_eq!(version_read(None, Some("read"), None, bytes), "read");
        assert_eq!(version_read(None, None, None, bytes), content_version(bytes));
    }

    #[test]
    fn content_versions_tell_bytes_apart_and_keep_the_form_state_recorded() {
        let (a, b) = (b"PAR1 one file PAR1".as_slice(), b"PAR1 one fila PAR1".as_slice());
        assert_eq!(content_version(a), content_version(a));
        assert_ne!(content_version(a), content_version(b));
        assert!(content_version(a).starts_with("xxh3:") && content_version(a).len() == 5 + 32);
        // A manifest written before XXH3 recorded SHA-256: the same bytes still match it.
        use sha2::Digest;
        let old = format!("sha256:{}", trailwatch_core::lake::hex(&sha2::Sha256::digest(a)));
        assert_eq!(local_version(Some(&old), a), old);
        // Changed since: its new version is XXH3.
        assert_eq!(local_version(Some(&old), b), content_version(b));
        assert_eq!(local_version(Some("xxh3:0"), a), content_version(a));
        assert_eq!(local_version(None, a), content_version(a));
    }
}
