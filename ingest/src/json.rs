//! A single-pass parser for one CloudTrail record's text, driven by the column tree.
//!
//! The record is walked once: known members are decoded in place (strings borrow from the text
//! unless they hold escapes), nested structs and lists recurse, and free-form values (`Json`
//! columns, members the schema does not know) are skipped with their syntax checked and kept as
//! their text. Before this, the splitter's output was parsed by serde_json into a list of raw
//! members and every nested object was parsed again from its raw text, so nested bytes were
//! scanned up to four times; that was about a third of ingest's time.
//!
//! It accepts exactly what the serde_json path it replaced accepted, and builds the same [`Row`]
//! (`legacy.rs` keeps that path for the property test and the differential fuzz target):
//! - syntax is checked as serde_json's `ignore_value` does, without a depth limit (values are
//!   skipped with an explicit stack, so depth costs no recursion);
//! - a key or a known string value is decoded as serde_json decodes a `str`: a `\u` escape that is
//!   an unpaired surrogate fails it, while a skipped value may hold one;
//! - a nested object whose own keys do not decode fails as a whole (serde_json read it as a list of
//!   members first), so what was read from it is discarded; at the top level that makes the
//!   record invalid JSON;
//! - a value of the wrong type goes to `unknown` under its path and leaves its column as it was,
//!   except a bad top-level `eventTime`, which rejects the record once the rest of it is known to be
//!   valid JSON (a syntax error anywhere wins, as it did when serde_json read everything first).

use std::borrow::Cow;
use std::sync::OnceLock;

use trailwatch_core::schema::{self, Col, Kind};
use trailwatch_core::time::parse_rfc3339_millis;

use crate::convert::{describe, Reject, Row, Val};

/// Why a record's text did not become a row.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Not JSON, not an object, or an object whose keys are not valid strings. The caller asks
    /// serde_json for the wording, so reasons stay the same as before.
    Invalid,
    /// Valid JSON, but not a usable record.
    Reject(Reject),
    /// The text ended inside the record (only when parsing a prefix).
    Cut,
}

/// The text is not valid JSON (internal to the parser; becomes [`Fail::Invalid`]).
#[derive(Debug)]
struct Invalid;

type Parsed<T> = Result<T, Invalid>;

/// One level of the column tree, with what a lookup by key needs, built once.
struct Level {
    cols: &'static [Col],
    /// For each key length, the columns whose JSON key has that length (indices into `cols`):
    /// a lookup compares one or two keys instead of every column's.
    by_len: Vec<Vec<u8>>,
    /// The level of each `Struct` / `ListOfStruct` column.
    subs: Vec<Option<Level>>,
    /// The column whose bad value rejects the record (`event_time`, top level only).
    required: Option<usize>,
    /// How deep objects and arrays of the known columns nest, counting this level's object.
    depth: usize,
}

impl Level {
    fn new(cols: &'static [Col], top: bool) -> Level {
        assert!(cols.len() <= usize::from(u8::MAX), "a level has at most 255 columns");
        let mut by_len: Vec<Vec<u8>> = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            let n = c.json.len();
            if by_len.len() <= n {
                by_len.resize(n + 1, Vec::new());
            }
            by_len[n].push(i as u8);
        }
        let subs = cols
            .iter()
            .map(|c| match c.kind {
                Kind::Struct(sub) | Kind::ListOfStruct(sub) => Some(Level::new(sub, false)),
                _ => None,
            })
            .collect();
        let required = top.then(|| cols.iter().position(|c| c.name == "event_time")).flatten();
        let depth = 1 + cols
            .iter()
            .zip(&subs)
            .filter_map(|(c, sub): (&Col, &Option<Level>)| {
                let list = usize::from(matches!(c.kind, Kind::ListOfStruct(_)));
                sub.as_ref().map(|l| l.depth + list)
            })
            .max()
            .unwrap_or(0);
        Level { cols, by_len, subs, required, depth }
    }

    #[inline]
    fn find(&self, key: &str) -> Option<usize> {
        let k = key.as_bytes();
        self.by_len.get(k.len())?.iter().map(|&i| usize::from(i)).find(|&i| same(self.cols[i].json.as_bytes(), k))
    }

    fn sub(&self, i: usize) -> &Level {
        self.subs[i].as_ref().expect("struct and list columns have a level")
    }
}

/// Whether two keys of the same length are equal, compared inline: keys are short, and a call to
/// `memcmp` per member was 3% of ingest.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if u64::from_ne_bytes(p.try_into().expect("8 bytes")) != u64::from_ne_bytes(q.try_into().expect("8 bytes")) {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

fn tree() -> &'static Level {
    static TREE: OnceLock<Level> = OnceLock::new();
    TREE.get_or_init(|| Level::new(schema::CLOUDTRAIL, true))
}

/// One step of a value's path: a member's key or a list index.
#[derive(Clone, Copy)]
enum Key<'p> {
    Name(&'p str),
    Index(usize),
}

/// Where a value sits in its record, as a chain rendered (`userIdentity.sessionContext.x`,
/// `resources.0.y`) only when an unknown member or a reason needs it.
#[derive(Clone, Copy)]
struct PathRef<'p> {
    parent: Option<&'p PathRef<'p>>,
    key: Key<'p>,
}

impl PathRef<'_> {
    const ROOT: PathRef<'static> = PathRef { parent: None, key: Key::Name("") };

    fn is_root(&self) -> bool {
        self.parent.is_none()
    }

    fn render(&self) -> String {
        let mut keys = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            if !p.is_root() {
                keys.push(p.key);
            }
            cur = p.parent;
        }
        let mut out = String::new();
        for (n, k) in keys.iter().rev().enumerate() {
            if n > 0 {
                out.push('.');
            }
            match k {
                Key::Name(s) => out.push_str(s),
                Key::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }
}

/// `n` nulls: `vec![Val::Null; n]` clones the first element `n - 1` times through `Val::clone`,
/// which was 2% of ingest; this only writes each one's tag.
#[inline]
fn nulls<'a>(n: usize) -> Vec<Val<'a>> {
    let mut v = Vec::with_capacity(n);
    v.resize_with(n, || Val::Null);
    v
}

/// Finds the first byte that ends a string's plain run: `"`, `\` or a control character (JSON
/// forbids raw ones). Eight bytes at a time; most of a record's bytes are string contents.
#[inline]
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut chunks = b.chunks_exact(8);
    let mut off = 0;
    for c in &mut chunks {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        // The lowest flagged byte of each test is exact (a borrow only runs upwards from a match).
        let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = x ^ (ONES * u64::from(b'\\'));
        let slash = s.wrapping_sub(ONES) & !s;
        let m = (ctrl | quote | slash) & HIGH;
        if m != 0 {
            return off + (m.trailing_zeros() / 8) as usize;
        }
        off += 8;
    }
    let rest = chunks.remainder();
    off + rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(rest.len())
}

fn hex4(b: &[u8]) -> Option<u32> {
    let d = b.get(..4)?;
    let mut n = 0;
    for &c in d {
        n = n * 16 + (c as char).to_digit(16)?;
    }
    Some(n)
}

/// Decodes a string's contents (between its quotes, syntax already checked) as serde_json decodes
/// a `str`: `None` when a `\u` escape is a surrogate without its pair.
fn unescape(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    loop {
        let j = i + memchr::memchr(b'\\', &b[i..]).unwrap_or(b.len() - i);
        // `i` follows an ASCII escape and `j` is at a backslash: both are char boundaries.
        out.push_str(&raw[i..j]);
        if j == b.len() {
            return Some(out);
        }
        let c = *b.get(j + 1)?;
        i = j + 2;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = hex4(&b[i..])?;
                i += 4;
                match n {
                    0xDC00..=0xDFFF => return None,
                    0xD800..=0xDBFF => {
                        if b.get(i..i + 2) != Some(b"\\u") {
                            return None;
                        }
                        let n2 = hex4(&b[i + 2..])?;
                        if !(0xDC00..=0xDFFF).contains(&n2) {
                            return None;
                        }
                        i += 6;
                        char::from_u32((((n - 0xD800) << 10) | (n2 - 0xDC00)) + 0x1_0000)?
                    }
                    _ => char::from_u32(n)?,
                }
            }
            _ => return None,
        };
        out.push(ch);
    }
}

/// The kinds of containers open while a value is skipped: a bit each for the first 64 levels,
/// then a vector (there is no depth limit, as there was none before, and no recursion).
#[derive(Default)]
struct Frames {
    bits: u64,
    len: usize,
    deep: Vec<bool>,
    /// The most containers open at once.
    max: usize,
}

impl Frames {
    fn push(&mut self, object: bool) {
        if self.len < 64 {
            if object {
                self.bits |= 1 << self.len;
            } else {
                self.bits &= !(1 << self.len);
            }
        } else {
            self.deep.push(object);
        }
        self.len += 1;
        self.max = self.max.max(self.len);
    }

    fn pop(&mut self) {
        self.len -= 1;
        if self.len >= 64 {
            self.deep.pop();
        }
    }

    /// Whether the innermost open container is an object; `None` when none is open.
    fn top(&self) -> Option<bool> {
        match self.len {
            0 => None,
            n @ 1..=64 => Some(self.bits >> (n - 1) & 1 == 1),
            _ => self.deep.last().copied(),
        }
    }
}

/// A position in a record's text.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// The most containers a skipped value opened at once.
    skipped_depth: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Parsed<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Parsed<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Parsed<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Invalid);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    /// Reads a string whose opening quote is next; returns its contents (still escaped) and
    /// whether they hold escapes.
    #[inline]
    fn string(&mut self) -> Parsed<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i += plain_run(&self.b[self.i..]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok((&self.s[start..self.i - 1], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            hex4(&self.b[self.i..]).ok_or(Invalid)?;
                            self.i += 4;
                        }
                        _ => return Err(Invalid),
                    }
                }
                // A control character, or the end of the text.
                _ => return Err(Invalid),
            }
        }
    }

    /// Reads a string and decodes it as a `str`: `Ok(None)` when it is valid JSON but not a valid
    /// `str` (an unpaired surrogate escape).
    #[inline]
    fn str_value(&mut self) -> Parsed<Option<Cow<'a, str>>> {
        let (raw, escaped) = self.string()?;
        Ok(if escaped { unescape(raw).map(Cow::Owned) } else { Some(Cow::Borrowed(raw)) })
    }

    /// After an object's key: the colon and the whitespace around it.
    #[inline]
    fn colon(&mut self) -> Parsed<()> {
        self.ws();
        self.eat(b':')?;
        self.ws();
        Ok(())
    }

    fn scalar(&mut self) -> Parsed<()> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Invalid),
        }
    }

    /// Skips one value (whitespace before it already skipped), checking its syntax; returns its
    /// text.
    fn skip_value(&mut self) -> Parsed<&'a str> {
        let start = self.i;
        match self.peek() {
            Some(b'{' | b'[') => self.skip_container()?,
            _ => self.scalar()?,
        }
        Ok(&self.s[start..self.i])
    }

    /// Skips an object or array, iteratively.
    fn skip_container(&mut self) -> Parsed<()> {
        let mut frames = Frames::default();
        loop {
            // At the start of a value.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let object = c == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        frames.push(object);
                        if object {
                            self.string()?;
                            self.colon()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: close what ends here, then move to the next value.
            loop {
                let Some(object) = frames.top() else {
                    self.skipped_depth = self.skipped_depth.max(frames.max);
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        if object {
                            self.string()?;
                            self.colon()?;
                        }
                        break;
                    }
                    Some(b'}') if object => self.i += 1,
                    Some(b']') if !object => self.i += 1,
                    _ => return Err(Invalid),
                }
                frames.pop();
            }
        }
    }

    /// After a member of an object: skips the rest of its members (syntax only) and its `}`.
    fn skip_members(&mut self) -> Parsed<()> {
        loop {
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                    self.string()?;
                    self.colon()?;
                    self.skip_value()?;
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }
}

/// A value that is valid JSON but not of its column's type (the value has been read).
struct Mismatch;

struct RecordParser<'a> {
    c: Cursor<'a>,
    unknown: Vec<(Cow<'a, str>, &'a str)>,
    /// The first bad required value, reported once the whole record is known to be valid JSON.
    reject: Option<Reject>,
}

impl<'a> RecordParser<'a> {
    /// Reads the members of an object whose `{` was just consumed into `vals` (one per column of
    /// `level`). Returns false when one of its keys is not a valid `str`: the object then fails as
    /// a whole, and the caller discards what was read from it.
    fn object(&mut self, level: &Level, path: &PathRef, vals: &mut [Val<'a>]) -> Parsed<bool> {
        self.c.ws();
        if self.c.peek() == Some(b'}') {
            self.c.i += 1;
            return Ok(true);
        }
        loop {
            let Some(key) = self.c.str_value()? else {
                self.c.colon()?;
                self.c.skip_value()?;
                self.c.skip_members()?;
                return Ok(false);
            };
            self.c.colon()?;
            self.member(level, path, key, vals)?;
            self.c.ws();
            match self.c.peek() {
                Some(b',') => {
                    self.c.i += 1;
                    self.c.ws();
                }
                Some(b'}') => {
                    self.c.i += 1;
                    return Ok(true);
                }
                _ => return Err(Invalid),
            }
        }
    }

    fn member(&mut self, level: &Level, path: &PathRef, key: Cow<'a, str>, vals: &mut [Val<'a>]) -> Parsed<()> {
        let Some(i) = level.find(&key) else {
            let raw = self.c.skip_value()?;
            let at = if path.is_root() {
                key
            } else {
                Cow::Owned(PathRef { parent: Some(path), key: Key::Name(&key) }.render())
            };
            self.unknown.push((at, raw));
            return Ok(());
        };
        let p = PathRef { parent: Some(path), key: Key::Name(&key) };
        let start = self.c.i;
        match self.value(level, i, &p)? {
            Ok(v) => vals[i] = v,
            Err(Mismatch) => {
                let raw = &self.c.s[start..self.c.i];
                if path.is_root() && level.required == Some(i) {
                    if self.reject.is_none() {
                        let expected = expected(level.cols[i].kind);
                        self.reject =
                            Some(Reject(format!("{}: expected {expected}, found {}", p.render(), describe(raw))));
                    }
                } else {
                    // Any other value of the wrong type is kept, as written, in `unknown_fields`
                    // under its path, and its column stays as it was.
                    self.unknown.push((Cow::Owned(p.render()), raw));
                }
            }
        }
        Ok(())
    }

    /// Reads the value of column `i` of `level`.
    fn value(&mut self, level: &Level, i: usize, p: &PathRef) -> Parsed<Result<Val<'a>, Mismatch>> {
        let first = self.c.peek();
        if first == Some(b'n') {
            self.c.literal(b"null")?;
            return Ok(Ok(Val::Null));
        }
        Ok(match (level.cols[i].kind, first) {
            (Kind::Json, _) => Ok(Val::Json(self.c.skip_value()?)),
            (Kind::Str, Some(b'"')) => self.c.str_value()?.map(Val::Str).ok_or(Mismatch),
            (Kind::Bool, Some(b't')) => self.c.literal(b"true").map(|_| Ok(Val::Bool(true)))?,
            (Kind::Bool, Some(b'f')) => self.c.literal(b"false").map(|_| Ok(Val::Bool(false)))?,
            (Kind::Bool, Some(b'"')) => match self.c.str_value()? {
                Some(s) if s.eq_ignore_ascii_case("true") => Ok(Val::Bool(true)),
                Some(s) if s.eq_ignore_ascii_case("false") => Ok(Val::Bool(false)),
                _ => Err(Mismatch),
            },
            (Kind::Time, Some(b'"')) => {
                self.c.str_value()?.as_deref().and_then(parse_rfc3339_millis).map(Val::Time).ok_or(Mismatch)
            }
            (Kind::Struct(_), Some(b'{')) => {
                self.c.i += 1;
                let sub = level.sub(i);
                let mark = self.unknown.len();
                let mut vals = nulls(sub.cols.len());
                if self.object(sub, p, &mut vals)? {
                    Ok(Val::Struct(vals))
                } else {
                    self.unknown.truncate(mark);
                    Err(Mismatch)
                }
            }
            (Kind::ListOfStruct(_), Some(b'[')) => self.list(level.sub(i), p)?,
            _ => {
                self.c.skip_value()?;
                Err(Mismatch)
            }
        })
    }

    /// Reads a list of objects whose `[` is next. Items are read in order until one is not an
    /// object of valid keys; that fails the list, but what earlier items sent to `unknown` stays
    /// there (as it did when each item was parsed in turn).
    fn list(&mut self, level: &Level, p: &PathRef) -> Parsed<Result<Val<'a>, Mismatch>> {
        self.c.i += 1;
        self.c.ws();
        let mut items = Vec::new();
        if self.c.peek() == Some(b']') {
            self.c.i += 1;
            return Ok(Ok(Val::List(items)));
        }
        let mut failed = false;
        loop {
            if !failed && self.c.peek() == Some(b'{') {
                self.c.i += 1;
                let ip = PathRef { parent: Some(p), key: Key::Index(items.len()) };
                let mark = self.unknown.len();
                let mut vals = nulls(level.cols.len());
                if self.object(level, &ip, &mut vals)? {
                    items.push(vals);
                } else {
                    self.unknown.truncate(mark);
                    failed = true;
                }
            } else {
                self.c.skip_value()?;
                failed = true;
            }
            self.c.ws();
            match self.c.peek() {
                Some(b',') => {
                    self.c.i += 1;
                    self.c.ws();
                }
                Some(b']') => {
                    self.c.i += 1;
                    break;
                }
                _ => return Err(Invalid),
            }
        }
        Ok(if failed { Err(Mismatch) } else { Ok(Val::List(items)) })
    }
}

/// What a column of this kind expects, for a reason.
fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Json => "a JSON value",
        Kind::Bool => "a boolean",
        Kind::Time => "an ISO-8601 time",
        Kind::Struct(_) => "an object",
        Kind::ListOfStruct(_) => "an array",
    }
}

/// Parses one record's text into a row.
pub(crate) fn parse_row(text: &str) -> Result<Row<'_>, Fail> {
    let (row, _) = parse(text, true)?;
    Ok(row)
}

/// Parses the record that starts `text` (at its `{`), wherever it ends; returns the row and the
/// record's length in bytes. Otherwise whether the text ended inside the record (`Err(true)`), or
/// the record is not a valid row or may nest deeper than `max_depth` (`Err(false)`):
/// [`crate::split::Splitter::records_in_place`] leaves such records to the splitter, which copies
/// them out and reports what is wrong.
pub(crate) fn parse_prefix(text: &str, max_depth: u32) -> Result<(Row<'_>, usize), bool> {
    let (row, (len, skipped_depth)) = parse(text, false).map_err(|e| matches!(e, Fail::Cut))?;
    // At most the known columns' nesting, the containers a skipped value opened, and one empty
    // container inside the deepest of them.
    if tree().depth + skipped_depth < max_depth as usize {
        Ok((row, len))
    } else {
        Err(false)
    }
}

/// The record parser over `text`; `whole` when the text must hold the record and nothing else.
/// Returns the row, where it ended, and the depth of its skipped values.
fn parse(text: &str, whole: bool) -> Result<(Row<'_>, (usize, usize)), Fail> {
    let tree = tree();
    let mut p = RecordParser {
        c: Cursor { s: text, b: text.as_bytes(), i: 0, skipped_depth: 0 },
        unknown: Vec::new(),
        reject: None,
    };
    let mut values = nulls(tree.cols.len());
    let ok = (|| {
        p.c.ws();
        p.c.eat(b'{')?;
        let ok = p.object(tree, &PathRef::ROOT, &mut values)?;
        if whole {
            p.c.ws();
            if p.c.i != text.len() {
                return Err(Invalid);
            }
        }
        Ok(ok)
    })();
    if !matches!(ok, Ok(true)) {
        // Every failure at the end of the text is the text ending: the parser stops where it fails.
        return Err(if !whole && p.c.i >= text.len() { Fail::Cut } else { Fail::Invalid });
    }
    if let Some(r) = p.reject {
        return Err(Fail::Reject(r));
    }
    let event_time = match tree.required.map(|i| &values[i]) {
        Some(Val::Time(ms)) => *ms,
        _ => return Err(Fail::Reject(Reject("eventTime: missing".into()))),
    };
    Ok((Row { values, unknown: p.unknown, event_time }, (p.c.i, p.c.skipped_depth)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_run_finds_the_first_stop() {
        for s in ["", "a", "abcdefgh", "abcdefghijklmnop"] {
            assert_eq!(plain_run(s.as_bytes()), s.len());
        }
        for n in 0..20 {
            for stop in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                let mut b = vec![b'x'; n];
                b.push(stop);
                b.extend_from_slice(b"\"\\\x01tail");
                assert_eq!(plain_run(&b), n, "{n} {stop}");
            }
        }
        // Bytes at and above 0x20, including UTF-8 continuation bytes, are plain.
        assert_eq!(plain_run("é ~\u{7f}ü€漢x".as_bytes()), "é ~\u{7f}ü€漢x".len());
    }

    #[test]
    fn unescape_matches_serde_json() {
        for s in [
            r#"a\"b"#,
            r#"\u00e9\n\t\/\\"#,
            r#"\ud83d\ude00"#,
            r#"\ud800"#,
            r#"\udc00"#,
            r#"\ud800\u0041"#,
            r#"\ud800\n"#,
            r#"\ud800\ud800\udc00"#,
            r#"x\u0000y"#,
        ] {
            let want = serde_json::from_str::<String>(&format!("\"{s}\"")).ok();
            assert_eq!(unescape(s), want, "{s}");
        }
    }

    #[test]
    fn frames_go_deeper_than_the_bits() {
        let mut f = Frames::default();
        for d in 0..200 {
            f.push(d % 3 == 0);
        }
        for d in (0..200).rev() {
            assert_eq!(f.top(), Some(d % 3 == 0));
            f.pop();
        }
        assert_eq!(f.top(), None);
    }

    #[test]
    fn skip_checks_syntax_like_serde_json() {
        let cases = [
            "1",
            "-0",
            "-",
            "01",
            "1.",
            "1.5e",
            "1e+5",
            "1E-0",
            "tru",
            "true",
            "nul",
            "\"a\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "[]",
            "[1,]",
            "[,1]",
            "{}",
            "{\"a\":1,}",
            "{\"a\" : [ {} , [ ] ] }",
            "{1:2}",
            "{\"a\"}",
            "[1 2]",
            "\"\u{1}\"",
            "\"\\ud800\"",
            "[[[[[[[[]]]]]]]]",
            "[{]}",
            "{\"a\":1]",
        ];
        for s in cases {
            let ours = {
                let mut c = Cursor { s, b: s.as_bytes(), i: 0, skipped_depth: 0 };
                c.skip_value().is_ok() && c.i == s.len()
            };
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok();
            assert_eq!(ours, theirs, "{s}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut c = Cursor { s: &deep, b: deep.as_bytes(), i: 0, skipped_depth: 0 };
        assert_eq!(c.skip_value().unwrap().len(), deep.len());
    }

    /// The new parser against the old serde_json one on generated records: shaped by the column
    /// tree (known members of the right and the wrong type, unknown and duplicate members, nested
    /// structs and lists), written with random whitespace and escapes (lone surrogates included),
    /// and sometimes damaged into invalid JSON.
    mod differential {
        use proptest::prelude::*;
        use trailwatch_core::schema::{Col, Kind, CLOUDTRAIL};

        use crate::legacy::assert_same;

        #[derive(Debug, Clone)]
        enum J {
            Null,
            Bool(bool),
            Num(&'static str),
            Str(String),
            Arr(Vec<J>),
            Obj(Vec<(String, J)>),
        }

        /// Characters strings are drawn from. The private-use ones stand for escapes the writer
        /// spells out: U+E000 a lone leading surrogate, U+E001 a lone trailing one, U+E002 a
        /// leading surrogate followed by a non-surrogate escape.
        const CHARS: &[char] = &[
            'a', 'b', 'Z', '0', ' ', '.', ':', '"', '\\', '/', '\n', '\t', '\u{1}', '\u{1f}', '\u{7f}', 'é', 'ü', '€',
            '漢', '😀', '\u{E000}', '\u{E001}', '\u{E002}',
        ];

        fn text() -> impl Strategy<Value = String> + Clone {
            prop_oneof![
                4 => prop::collection::vec(prop::sample::select(CHARS), 0..10).prop_map(|v| v.into_iter().collect()),
                1 => prop::sample::select(&[
                    "2023-05-19T07:44:30Z", "2023-05-19T07:44:30.123+02:00", "2023-13-40T00:00:00Z", "True", "FALSE",
                    "false", "maybe", "", "AwsApiCall", "eventTime", "userIdentity",
                ][..]).prop_map(str::to_string),
            ]
        }

        fn scalar() -> impl Strategy<Value = J> + Clone {
            prop_oneof![
                Just(J::Null),
                any::<bool>().prop_map(J::Bool),
                prop::sample::select(&["0", "-1", "1.5", "1e5", "-0.0E-1", "12345678901234567890123"][..])
                    .prop_map(J::Num),
                text().prop_map(J::Str),
            ]
        }

        fn any_json() -> impl Strategy<Value = J> + Clone {
            scalar().prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                    prop::collection::vec((text(), inner), 0..4).prop_map(J::Obj),
                ]
            })
        }

        fn value_for(kind: Kind, depth: u32) -> BoxedStrategy<J> {
            let right = match kind {
                Kind::Str | Kind::Time | Kind::Bool => {
                    prop_oneof![text().prop_map(J::Str), any::<bool>().prop_map(J::Bool),].boxed()
                }
                Kind::Json => any_json().boxed(),
                Kind::Struct(sub) if depth < 4 => object_for(sub, depth + 1).boxed(),
                Kind::ListOfStruct(sub) if depth < 4 => {
                    prop::collection::vec(prop_oneof![4 => object_for(sub, depth + 1), 1 => any_json()], 0..3)
                        .prop_map(J::Arr)
                        .boxed()
                }
                _ => any_json().boxed(),
            };
            prop_oneof![4 => right, 1 => any_json()].boxed()
        }

        fn member(cols: &'static [Col], depth: u32) -> BoxedStrategy<(String, J)> {
            prop_oneof![
                3 => prop::sample::select(cols)
                    .prop_flat_map(move |c| (Just(c.json.to_string()), value_for(c.kind, depth))),
                1 => (text(), any_json()),
            ]
            .boxed()
        }

        fn object_for(cols: &'static [Col], depth: u32) -> BoxedStrategy<J> {
            prop::collection::vec(member(cols, depth), 0..6).prop_map(J::Obj).boxed()
        }

        fn record() -> impl Strategy<Value = J> {
            (prop::collection::vec(member(CLOUDTRAIL, 0), 0..12), any::<prop::sample::Index>(), 0..5u8).prop_map(
                |(mut members, at, time)| {
                    // Most records get a valid event time, somewhere among the members.
                    if time > 0 {
                        let at = at.index(members.len() + 1);
                        members.insert(at, ("eventTime".into(), J::Str("2023-05-19T07:44:30Z".into())));
                    }
                    J::Obj(members)
                },
            )
        }

        /// A tiny deterministic generator for the writer's choices.
        struct Rng(u64);

        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn one_in(&mut self, n: u64) -> bool {
                self.next().is_multiple_of(n)
            }
        }

        fn ws(out: &mut String, rng: &mut Rng) {
            while rng.one_in(6) {
                out.push([' ', '\n', '\t', '\r'][(rng.next() % 4) as usize]);
            }
        }

        fn write_str(s: &str, out: &mut String, rng: &mut Rng) {
            out.push('"');
            for ch in s.chars() {
                match ch {
                    '\u{E000}' => out.push_str("\\ud800"),
                    '\u{E001}' => out.push_str("\\uDC00"),
                    '\u{E002}' => out.push_str("\\ud83d\\u0041"),
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' if !rng.one_in(8) => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 || rng.one_in(5) => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{:04x}", u));
                        }
                    }
                    // A raw newline is not JSON: left in now and then, to be rejected.
                    c => out.push(c),
                }
            }
            out.push('"');
        }

        fn write(v: &J, out: &mut String, rng: &mut Rng) {
            ws(out, rng);
            match v {
                J::Null => out.push_str("null"),
                J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                J::Num(n) => out.push_str(n),
                J::Str(s) => write_str(s, out, rng),
                J::Arr(items) => {
                    out.push('[');
                    for (i, x) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write(x, out, rng);
                    }
                    ws(out, rng);
                    out.push(']');
                }
                J::Obj(members) => {
                    out.push('{');
                    for (i, (k, x)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        ws(out, rng);
                        write_str(k, out, rng);
                        ws(out, rng);
                        out.push(':');
                        write(x, out, rng);
                    }
                    ws(out, rng);
                    out.push('}');
                }
            }
            ws(out, rng);
        }

        /// Breaks the text now and then: a character deleted, one inserted, or the end cut off.
        fn damage(text: &mut String, rng: &mut Rng) {
            if !rng.one_in(4) || text.is_empty() {
                return;
            }
            let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let at = bounds[(rng.next() % bounds.len() as u64) as usize];
            match rng.next() % 3 {
                0 => {
                    text.remove(at);
                }
                1 => {
                    let c = ['{', '}', '[', ']', ',', ':', '"', '\\', '0', '-', 'n', ' ', '\u{0}']
                        [(rng.next() % 13) as usize];
                    text.insert(at, c);
                }
                _ => text.truncate(at),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

            #[test]
            fn the_new_parser_agrees_with_serde_json(rec in record(), seed in 1..u64::MAX) {
                let mut rng = Rng(seed);
                let mut text = String::new();
                write(&rec, &mut text, &mut rng);
                damage(&mut text, &mut rng);
                assert_same(&text);
            }
        }

        /// Every value of the sample and corpus CloudTrail files, odd records included.
        #[test]
        fn the_corpus_agrees() {
            use crate::decompress::{self, DecompressLimits};
            use crate::split::{Limits, Splitter};

            fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        files(&p, out);
                    } else if p.to_string_lossy().contains("cloudtrail") {
                        out.push(p);
                    }
                }
            }
            let mut paths = Vec::new();
            files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata"), &mut paths);
            let mut records = 0;
            for path in &paths {
                let limits = DecompressLimits { max_bytes: 64 << 20, max_ratio: 1000, ratio_after: 1 << 20 };
                let Ok(opened) = decompress::open(std::fs::File::open(path).unwrap(), limits, false) else { continue };
                let mut splitter = Splitter::new(opened.reader, Limits::default());
                let mut buf = Vec::new();
                while let Ok(Some(_)) = splitter.next_record(&mut buf) {
                    if let Ok(text) = std::str::from_utf8(&buf) {
                        assert_same(text);
                        records += 1;
                    }
                }
            }
            assert!(records > 500, "{records} records in {} files", paths.len());
        }

        #[test]
        fn edge_cases_agree() {
            let t = r#""eventTime":"2023-05-19T07:44:30Z""#;
            for s in [
                String::new(),
                " ".into(),
                "[1]".into(),
                "\u{a0}{}".into(),
                "{}".into(),
                format!("{{{t}}}"),
                format!(" \n{{ {t} }} \r\n"),
                format!("{{{t}}} x"),
                format!("{{{t}}}{{}}"),
                format!("{{{t},}}"),
                format!(r#"{{{t},"eventTime":"bad"}}"#),
                format!(r#"{{"eventTime":"bad",{t}}}"#),
                format!(r#"{{"eventTime":"bad",{t},"x":[1,}}"#),
                format!(r#"{{"eventTime":"bad",{t},"\ud800":1}}"#),
                format!(r#"{{"eventTime":null,{t}}}"#),
                format!(r#"{{{t},"eventTime":null}}"#),
                format!(r#"{{{t},"event\u0054ime":"2024-01-01T00:00:00Z"}}"#),
                format!(r#"{{{t},"userAgent":"\ud83d\ude00\u00e9"}}"#),
                format!(r#"{{{t},"userAgent":"\ud83d"}}"#),
                format!(r#"{{{t},"userAgent":"a","userAgent":5}}"#),
                format!(r#"{{{t},"userIdentity":{{"x":1,"sessionContext":{{"y":2}},"\udc00":3}}}}"#),
                format!(r#"{{{t},"userIdentity":{{"type":"A"}},"userIdentity":{{"\udc00":3}}}}"#),
                format!(r#"{{{t},"resources":[{{"z":1}},{{"\ud800":2,"w":3}},{{"v":4}}]}}"#),
                format!(r#"{{{t},"resources":[{{"z":1}},5,{{"v":4}}]}}"#),
                format!(r#"{{{t},"resources":[{{"ARN":"a"}},{{"ARN":7}}]}}"#),
                format!(
                    r#"{{{t},"readOnly":"TRUE","managementEvent":"no","requestParameters":{{"a":[1,{{"b":null}}]}}}}"#
                ),
                format!(r#"{{{t},"requestParameters":{}}}"#, "[".repeat(300) + &"]".repeat(300)),
                format!(r#"{{{t},"requestParameters":{}}}"#, "[".repeat(300) + &"]".repeat(299)),
                format!(r#"{{{t},"x":01}}"#),
                format!(r#"{{{t},"x":"a{}b"}}"#, '\u{1}'),
                format!(r#"{{{t},"tlsDetails":{{"tlsVersion":"1.3"}},"x":{{}}}}"#),
            ] {
                assert_same(&s);
            }
        }
    }
}
