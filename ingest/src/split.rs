//! Splits a stream of JSON into CloudTrail records without ever holding more than one record.
//!
//! It reads `{"Records":[...]}` envelopes (several back to back, as concatenated deliveries
//! produce), bare arrays of records, and JSON Lines / concatenated objects, deciding by content.
//! Only one record's bytes are buffered at a time, so an 800 MB file needs no more memory than
//! its largest record; records over the cap are scanned past and reported, not buffered.

use std::io::{self, BufRead};

/// Where a record came from in its file, for reject reasons and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// 0-based position of the record in the file.
    pub index: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// The value was a top-level object (JSON Lines, a lone object), not an array element:
    /// it may be a digest file or a LookupEvents row rather than a record.
    pub top_level: bool,
    /// Bytes the record had when it was over the size cap (its bytes were not kept).
    pub oversized: Option<u64>,
    /// The record nested deeper than the limit (its bytes were not kept).
    pub too_deep: bool,
}

/// Why the stream could not be split further. Records before the error were already returned.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("line {line}: not JSON (found {found:?})")]
    NotJson { line: u64, found: char },
    #[error("line {line}: truncated JSON (the input ends inside a value)")]
    Truncated { line: u64 },
    #[error("line {line}: expected {expected} in the Records envelope, found {found:?}")]
    Envelope { line: u64, expected: &'static str, found: char },
    #[error("line {line}: {source}")]
    Io { line: u64, source: io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between top-level values.
    Top,
    /// Inside an array of records; `envelope` when it is the value of `"Records"`.
    Array { envelope: bool, slot: Slot },
}

/// Where in an array the splitter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Before the first element (or the `]` of an empty array).
    First,
    /// After an element: a `,` or the `]` comes next.
    AfterValue,
    /// After a `,` (taken by [`Splitter::records_in_place`]): an element comes next.
    AfterComma,
}

/// Why [`Splitter::records_in_place`] stopped early.
#[derive(Debug)]
pub enum InPlaceError<E> {
    Split(SplitError),
    /// The caller's function failed.
    Sink(E),
}

/// The part of the buffered input [`Splitter::records_in_place`] looks at per call: records are
/// validated as UTF-8 a window at a time, so a caller that keeps declining costs at most this per
/// call, not the whole buffer.
const IN_PLACE_WINDOW: usize = 64 << 10;

/// Limits the splitter enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest record kept, in bytes. CloudTrail caps events at 256 KB (real ones are ~1-2 KB);
    /// a CloudWatch Logs payload is at most ~1 MB, a Lambda subscription event 6 MB of base64.
    pub max_record_bytes: usize,
    /// Deepest nesting kept. Real records nest fewer than 20 levels.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_record_bytes: 8 << 20, max_depth: 64 }
    }
}

/// The splitter over a buffered byte stream.
pub struct Splitter<R> {
    r: R,
    limits: Limits,
    state: State,
    line: u64,
    index: u64,
}

impl<R: BufRead> Splitter<R> {
    pub fn new(r: R, limits: Limits) -> Self {
        Splitter { r, limits, state: State::Top, line: 1, index: 0 }
    }

    /// Total records returned so far.
    pub fn records_seen(&self) -> u64 {
        self.index
    }

    fn io(&self, source: io::Error) -> SplitError {
        SplitError::Io { line: self.line, source }
    }

    /// Skips whitespace (and a UTF-8 byte-order mark) and returns the next byte, unconsumed.
    fn peek(&mut self) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            if buf.is_empty() {
                return Ok(None);
            }
            let mut n = 0;
            let mut lines = 0;
            while n < buf.len() {
                match buf[n] {
                    b'\n' => lines += 1,
                    b' ' | b'\t' | b'\r' | 0xEF | 0xBB | 0xBF => {}
                    _ => break,
                }
                n += 1;
            }
            let found = buf.get(n).copied();
            self.r.consume(n);
            self.line += lines;
            if found.is_some() {
                return Ok(found);
            }
        }
    }

    fn expect(&mut self, want: u8, expected: &'static str) -> Result<(), SplitError> {
        match self.peek()? {
            Some(b) if b == want => {
                self.r.consume(1);
                Ok(())
            }
            Some(b) => Err(SplitError::Envelope { line: self.line, expected, found: b as char }),
            None => Err(SplitError::Truncated { line: self.line }),
        }
    }

    /// Reads one complete JSON value into `buf` (appending), starting at depth `depth` (1 when
    /// the caller already consumed an opening brace). Returns (oversized bytes, too deep).
    fn read_value(&mut self, buf: &mut Vec<u8>, mut depth: u32) -> Result<(Option<u64>, bool), SplitError> {
        let cap = self.limits.max_record_bytes;
        let max_depth = self.limits.max_depth;
        let mut total = buf.len() as u64;
        let mut in_str = false;
        let mut escaped = false;
        let mut too_deep = false;
        let mut keep = true;
        // A scalar at depth 0 ends at the first delimiter; a container when its depth returns to 0.
        let scalar = depth == 0 && !matches!(self.peek()?, Some(b'{' | b'['));
        loop {
            let chunk = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SplitError::Io { line: self.line, source: e }),
            };
            if chunk.is_empty() {
                if scalar && !in_str {
                    break;
                }
                return Err(SplitError::Truncated { line: self.line });
            }
            let mut end = None;
            let mut i = 0;
            while i < chunk.len() {
                let c = chunk[i];
                if in_str {
                    if escaped {
                        escaped = false;
                    } else if c == b'\\' {
                        escaped = true;
                    } else if c == b'"' {
                        in_str = false;
                        if scalar {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        // Inside a string: jump to the next quote or backslash. Most of a
                        // record's bytes are string contents, so this is the hot path.
                        match memchr::memchr2(b'"', b'\\', &chunk[i + 1..]) {
                            Some(n) => i += n,
                            None => i = chunk.len() - 1,
                        }
                    }
                } else {
                    match c {
                        b'"' => in_str = true,
                        b'{' | b'[' => {
                            depth += 1;
                            if depth > max_depth {
                                too_deep = true;
                            }
                        }
                        b'}' | b']' if !scalar => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' if scalar => {
                            end = Some(i);
                            break;
                        }
                        b'\n' => self.line += 1,
                        _ => {}
                    }
                }
                i += 1;
            }
            let take = end.unwrap_or(chunk.len());
            total += take as u64;
            if keep && !too_deep && total <= cap as u64 {
                buf.extend_from_slice(&chunk[..take]);
            } else if keep {
                keep = false;
                buf.clear();
            }
            self.r.consume(take);
            if end.is_some() {
                break;
            }
        }
        let oversized = (total > cap as u64).then_some(total);
        Ok((oversized, too_deep))
    }

    /// Reads the next record's bytes into `buf` (cleared first). `None` at the end of the input.
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordMeta>, SplitError> {
        buf.clear();
        loop {
            match self.state {
                State::Array { envelope, slot } => {
                    let Some(b) = self.peek()? else {
                        return Err(SplitError::Truncated { line: self.line });
                    };
                    if b == b']' && slot != Slot::AfterComma {
                        self.r.consume(1);
                        self.state = State::Top;
                        if envelope {
                            self.finish_envelope()?;
                        }
                        continue;
                    }
                    if slot == Slot::AfterValue {
                        if b != b',' {
                            return Err(SplitError::Envelope {
                                line: self.line,
                                expected: "',' or ']'",
                                found: b as char,
                            });
                        }
                        self.r.consume(1);
                        if self.peek()?.is_none() {
                            return Err(SplitError::Truncated { line: self.line });
                        }
                    }
                    self.state = State::Array { envelope, slot: Slot::AfterValue };
                    let line = self.line;
                    let (oversized, too_deep) = self.read_value(buf, 0)?;
                    return Ok(Some(self.meta(line, false, oversized, too_deep)));
                }
                State::Top => {
                    let Some(b) = self.peek()? else {
                        return Ok(None);
                    };
                    let line = self.line;
                    match b {
                        b'[' => {
                            self.r.consume(1);
                            self.state = State::Array { envelope: false, slot: Slot::First };
                        }
                        b'{' => {
                            self.r.consume(1);
                            buf.push(b'{');
                            if self.peek()? == Some(b'"') {
                                // Read the first key to see whether this is an envelope.
                                self.read_value(buf, 0)?;
                                if buf.as_slice() == b"{\"Records\"" {
                                    self.expect(b':', "':'")?;
                                    if self.peek()? == Some(b'[') {
                                        self.r.consume(1);
                                        buf.clear();
                                        self.state = State::Array { envelope: true, slot: Slot::First };
                                        continue;
                                    }
                                    buf.push(b':');
                                }
                            }
                            let (oversized, too_deep) = self.read_value(buf, 1)?;
                            return Ok(Some(self.meta(line, true, oversized, too_deep)));
                        }
                        other => return Err(SplitError::NotJson { line, found: other as char }),
                    }
                }
            }
        }
    }

    /// Offers the array elements that lie whole in the buffered input to `f` in place, as text,
    /// without copying them: `f` returns `Ok(Some(len))` when it took the record that starts its
    /// text (its first `len` bytes) and `Ok(None)` to leave it to [`Splitter::next_record`].
    /// Returns how many records `f` took; 0 when it declined the first, or the splitter is not
    /// inside an array, or the next element does not start in the buffer. The text `f` sees is
    /// cut at the record size cap, and `f` must decline records nested deeper than
    /// [`Limits::max_depth`], so what it takes is what `next_record` would have returned whole.
    ///
    /// This is ingest's fast path: the record parser finds where a record ends as it parses it,
    /// so the bytes of records are neither scanned for their end first nor copied.
    pub fn records_in_place<E>(
        &mut self,
        mut f: impl FnMut(&str, RecordMeta) -> Result<Option<usize>, E>,
    ) -> Result<u64, InPlaceError<E>> {
        let State::Array { envelope, mut slot } = self.state else { return Ok(0) };
        let Some(b) = self.peek().map_err(InPlaceError::Split)? else { return Ok(0) };
        if slot == Slot::AfterValue {
            if b != b',' {
                return Ok(0);
            }
            self.r.consume(1);
            slot = Slot::AfterComma;
            self.state = State::Array { envelope, slot };
            if self.peek().map_err(InPlaceError::Split)?.is_none() {
                return Ok(0);
            }
        }
        // `peek` left the next element's first byte at the start of the buffer.
        let Ok(chunk) = self.r.fill_buf() else { return Ok(0) };
        let window = &chunk[..chunk.len().min(IN_PLACE_WINDOW)];
        // Not `utf8_chunks`, which checks byte by byte: `from_utf8` takes ASCII a word at a time.
        let text = match std::str::from_utf8(window) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&window[..e.valid_up_to()]).unwrap_or_default(),
        };
        let b = text.as_bytes();
        let (mut pos, mut line, mut taken) = (0, self.line, 0);
        while b.get(pos) == Some(&b'{') {
            let mut end = (pos + self.limits.max_record_bytes).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let meta = RecordMeta { index: self.index, line, top_level: false, oversized: None, too_deep: false };
            let Some(len) = f(&text[pos..end], meta).map_err(InPlaceError::Sink)? else { break };
            // A record has no raw newline inside its strings (JSON forbids it), so every newline
            // in it is one `read_value` would have counted.
            line += memchr::memchr_iter(b'\n', &b[pos..pos + len]).count() as u64;
            pos += len;
            self.index += 1;
            taken += 1;
            slot = Slot::AfterValue;
            let (n, lines) = skip_ws(&b[pos..]);
            if b.get(pos + n) != Some(&b',') {
                break;
            }
            let (m, more) = skip_ws(&b[pos + n + 1..]);
            if b.get(pos + n + 1 + m) != Some(&b'{') {
                // Leave the comma for `next_record`, which reports what follows it.
                break;
            }
            pos += n + 1 + m;
            line += lines + more;
            slot = Slot::AfterComma;
        }
        self.r.consume(pos);
        self.line = line;
        self.state = State::Array { envelope, slot };
        Ok(taken)
    }

    /// After the Records array: skips any other members of the envelope up to its closing brace.
    fn finish_envelope(&mut self) -> Result<(), SplitError> {
        let mut scratch = Vec::new();
        loop {
            match self.peek()? {
                Some(b'}') => {
                    self.r.consume(1);
                    return Ok(());
                }
                Some(b',') => {
                    self.r.consume(1);
                    scratch.clear();
                    self.read_value(&mut scratch, 0)?; // key
                    self.expect(b':', "':'")?;
                    scratch.clear();
                    self.read_value(&mut scratch, 0)?; // value
                }
                Some(b) => {
                    return Err(SplitError::Envelope { line: self.line, expected: "',' or '}'", found: b as char })
                }
                None => return Err(SplitError::Truncated { line: self.line }),
            }
        }
    }

    fn meta(&mut self, line: u64, top_level: bool, oversized: Option<u64>, too_deep: bool) -> RecordMeta {
        let index = self.index;
        self.index += 1;
        RecordMeta { index, line, top_level, oversized, too_deep }
    }
}

/// The JSON whitespace at the start of `b`: its length and how many newlines it holds.
fn skip_ws(b: &[u8]) -> (usize, u64) {
    let mut lines = 0;
    let n = b
        .iter()
        .take_while(|&&c| {
            lines += u64::from(c == b'\n');
            matches!(c, b' ' | b'\t' | b'\r' | b'\n')
        })
        .count();
    (n, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_with(input: &[u8], cap: usize, bufsize: usize) -> Result<Vec<(String, RecordMeta)>, SplitError> {
        let r = io::BufReader::with_capacity(bufsize, input);
        let mut s = Splitter::new(r, Limits { max_record_bytes: cap, max_depth: 8 });
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(m) = s.next_record(&mut buf)? {
            out.push((String::from_utf8_lossy(&buf).into_owned(), m));
        }
        Ok(out)
    }

    /// Every chunking of the input gives the same records (the arrow-json reader tests do the same).
    fn split(input: &str) -> Result<Vec<String>, SplitError> {
        let reference = split_with(input.as_bytes(), 1 << 20, 8192)?;
        for bufsize in [1, 2, 3, 7, 64] {
            let other = split_with(input.as_bytes(), 1 << 20, bufsize)?;
            assert_eq!(other, reference, "bufsize {bufsize}");
        }
        Ok(reference.into_iter().map(|(s, _)| s).collect())
    }

    /// Splits with the in-place path wherever it takes records, taking every record whose text
    /// starts with a JSON value (serde_json finds where it ends) unless `decline` says otherwise.
    fn split_in_place(
        input: &[u8],
        bufsize: usize,
        decline: impl Fn(u64) -> bool,
    ) -> Result<Vec<(String, RecordMeta)>, SplitError> {
        let r = io::BufReader::with_capacity(bufsize, input);
        let mut s = Splitter::new(r, Limits { max_record_bytes: 100, max_depth: 8 });
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        loop {
            let took = s.records_in_place(|text, m| {
                if decline(m.index) {
                    return Ok::<_, ()>(None);
                }
                let mut values = serde_json::Deserializer::from_str(text).into_iter::<&serde_json::value::RawValue>();
                Ok(match values.next() {
                    Some(Ok(v)) => {
                        out.push((v.get().to_string(), m));
                        Some(values.byte_offset())
                    }
                    _ => None,
                })
            });
            match took {
                Ok(_) => {}
                Err(InPlaceError::Split(e)) => return Err(e),
                Err(InPlaceError::Sink(())) => unreachable!(),
            }
            match s.next_record(&mut buf)? {
                Some(m) => out.push((String::from_utf8_lossy(&buf).into_owned(), m)),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn records_in_place_are_the_records_next_record_returns() {
        let inputs = [
            "{\"Records\": [ {\"a\":1} ,\n {\"b\":\"x]}\\\"\"},{\"c\":[{}]}\n,\n{\"d\":\"\u{e9}\u{6f22}\"} ]}",
            "{\"Records\":[{\"a\":1}],\"x\":{\"y\":[1]}}\n{\"Records\":[]}{\"Records\":[{\"c\":3}, 7, {\"d\":4}]}",
            "[{\"a\":1},\n{\"a\":2}, {\"a\":3}\n]\n[{\"e\":5}]",
            "[{\"a\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},{\"b\":1}]",
            "[{\"a\":1},{\"b\" 2},{\"c\":3}]",
            "[{\"a\":1},]",
            "[{\"a\":1},{\"b\":2}",
            "[{\"a\":1}{\"b\":2}]",
        ];
        for input in inputs {
            let reference = split_with(input.as_bytes(), 100, 8192);
            for bufsize in [1, 2, 3, 7, 16, 64, 8192] {
                for every in [u64::MAX, 2, 1] {
                    let other = split_in_place(input.as_bytes(), bufsize, |i| every != u64::MAX && i % every == 0);
                    match (&reference, &other) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "{input:?} bufsize {bufsize} declining every {every}"),
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{input:?} bufsize {bufsize}"),
                        _ => panic!("{input:?} bufsize {bufsize}: {reference:?} against {other:?}"),
                    }
                }
            }
        }
        // The large buffer takes records in place: the path is exercised, not just declined.
        let r = io::BufReader::with_capacity(8192, inputs[2].as_bytes());
        let mut s = Splitter::new(r, Limits::default());
        assert!(s.next_record(&mut Vec::new()).unwrap().is_some());
        let took = s.records_in_place(|text, _| Ok::<_, ()>(text.find('}').map(|i| i + 1))).unwrap();
        assert_eq!((took, s.records_seen(), s.line), (2, 3, 2));
    }

    #[test]
    fn envelope() {
        let recs = split("{\"Records\": [ {\"a\":1}, {\"b\":\"x]}\\\"\"} ]}").unwrap();
        assert_eq!(recs, vec!["{\"a\":1}", "{\"b\":\"x]}\\\"\"}"]);
    }

    #[test]
    fn envelopes_back_to_back_and_extra_members() {
        let recs =
            split("{\"Records\":[{\"a\":1}],\"x\":{\"y\":[1]}}\n{\"Records\":[]}{\"Records\":[{\"c\":3}]}").unwrap();
        assert_eq!(recs, vec!["{\"a\":1}", "{\"c\":3}"]);
    }

    #[test]
    fn bare_array_and_json_lines() {
        assert_eq!(split("[{\"a\":1},\n{\"a\":2}]").unwrap(), vec!["{\"a\":1}", "{\"a\":2}"]);
        let input = "{\"a\":1}\n{\"Records2\":2}\r\n\n{}\n";
        let r = split_with(input.as_bytes(), 100, 8192).unwrap();
        assert_eq!(r.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), vec!["{\"a\":1}", "{\"Records2\":2}", "{}"]);
        assert_eq!(r.iter().map(|x| x.1.line).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert!(r.iter().all(|x| x.1.top_level));
    }

    #[test]
    fn scalar_elements_are_returned_for_the_caller_to_reject() {
        assert_eq!(split("[1, \"s\", null, {\"a\":1}]").unwrap(), vec!["1", "\"s\"", "null", "{\"a\":1}"]);
    }

    #[test]
    fn records_key_with_non_array_value_is_a_plain_object() {
        assert_eq!(split("{\"Records\":null}").unwrap(), vec!["{\"Records\":null}"]);
    }

    #[test]
    fn oversized_and_deep_records_are_flagged_and_neighbours_kept() {
        let big = format!("[{{\"a\":\"{}\"}},{{\"b\":1}},[[[[[[[[[[1]]]]]]]]]],{{\"c\":2}}]", "x".repeat(200));
        let r = split_with(big.as_bytes(), 100, 16).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].1.oversized, Some(208));
        assert_eq!(r[1].0, "{\"b\":1}");
        assert!(r[2].1.too_deep);
        assert_eq!(r[3].0, "{\"c\":2}");
    }

    #[test]
    fn errors() {
        assert!(matches!(split("{\"Records\":[{\"a\":1},"), Err(SplitError::Truncated { .. })));
        assert!(matches!(split("{\"Records\":[{\"a\":1}"), Err(SplitError::Truncated { .. })));
        assert!(matches!(split("hello"), Err(SplitError::NotJson { found: 'h', .. })));
        assert!(matches!(split("\n\n2023-01-01 text"), Err(SplitError::NotJson { line: 3, .. })));
        assert!(matches!(split("[{\"a\":1} {\"b\":2}]"), Err(SplitError::Envelope { .. })));
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert_eq!(split(" \n ").unwrap(), Vec::<String>::new());
    }
}
