//! Where a Parquet footer keeps its schema, found without decoding it, so a schema already seen
//! is not decoded again.
//!
//! Ingest writes one schema per table into every file, and over the lake as ingest wrote it (a
//! few rows a file) building the same `SchemaDescriptor` for each file, with column statistics
//! nobody reads, was a seventh of the time. [`Schemas`] keeps the descriptors of the footers'
//! schema bytes; equal bytes decode to an equal schema, so a hit is exact, never a guess.

use std::ops::Range;

use parquet::schema::types::SchemaDescPtr;

/// Schemas decoded so far in a run, by their encoded bytes. A lake holds a handful (one per table
/// and schema version); past [`Schemas::MAX`] the rest are decoded as before.
#[derive(Debug, Default)]
pub struct Schemas {
    known: Vec<(Vec<u8>, SchemaDescPtr)>,
}

impl Schemas {
    pub const MAX: usize = 8;

    /// The decoded schema of these footer bytes, when seen before.
    pub fn get(&self, raw: &[u8]) -> Option<SchemaDescPtr> {
        self.known.iter().find(|(b, _)| b.as_slice() == raw).map(|(_, s)| s.clone())
    }

    pub fn insert(&mut self, raw: &[u8], schema: SchemaDescPtr) {
        if self.known.len() < Self::MAX && self.get(raw).is_none() {
            self.known.push((raw.to_vec(), schema));
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

// Thrift compact protocol type ids.
const TRUE: u8 = 1;
const FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
/// Parquet's schema nests a few levels; anything deeper is not a footer worth a fast path.
const MAX_DEPTH: u32 = 64;

/// The byte range, in `file`, of the footer's `FileMetaData.schema` (field 2: the list header
/// and its elements). `None` when the file does not end in a plain footer (too short, encrypted,
/// malformed) or has no schema field: the caller then decodes as usual, and the Parquet reader
/// says what is wrong.
pub fn schema_range(file: &[u8]) -> Option<Range<usize>> {
    let n = file.len();
    if n < 12 || &file[n - 4..] != b"PAR1" {
        return None;
    }
    let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().ok()?) as usize;
    let start = (n - 8).checked_sub(len)?;
    let mut c = Cursor { b: &file[start..n - 8], pos: 0 };
    // Parquet's own decoder reads known fields by their id, whatever type the header gives: the
    // skip agrees with it only where the types are the ones the format says. So the range is
    // given only for a footer that starts `version: i32`, then `schema: list<SchemaElement>`
    // whose elements' known fields have their format's types; anything else decodes as usual.
    let mut last: i16 = 0;
    if c.field_header(&mut last)? != (1, I32) {
        return None;
    }
    c.skip(I32, 0)?;
    if c.field_header(&mut last)? != (2, LIST) {
        return None;
    }
    let from = c.pos;
    let h = c.byte()?;
    let (mut size, et) = ((h >> 4) as u64, h & 0x0f);
    if size == 15 {
        size = c.varint()?;
    }
    if et != STRUCT || size > (c.b.len() - c.pos) as u64 {
        return None;
    }
    for _ in 0..size {
        c.schema_element()?;
    }
    Some(start + from..start + c.pos)
}

/// The format's type of a `SchemaElement` field, by id: type, type_length, repetition_type,
/// name, num_children, converted_type, scale, precision, field_id, logicalType.
fn schema_element_type(id: i16) -> Option<u8> {
    match id {
        1..=3 | 5..=9 => Some(I32),
        4 => Some(BINARY),
        10 => Some(STRUCT),
        _ => None,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len())?;
        self.pos = end;
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next field's id and type; `None` at the struct's stop byte or on bad input.
    fn field_header(&mut self, last: &mut i16) -> Option<(i16, u8)> {
        let h = self.byte()?;
        if h == 0 {
            return None;
        }
        let (delta, ty) = (h >> 4, h & 0x0f);
        let id = if delta == 0 {
            let z = self.varint()?;
            i16::try_from((z >> 1) as i64 ^ -((z & 1) as i64)).ok()?
        } else {
            last.checked_add(delta as i16)?
        };
        *last = id;
        Some((id, ty))
    }

    /// One `SchemaElement`, its known fields checked against their types.
    fn schema_element(&mut self) -> Option<()> {
        self.skip_struct(1, schema_element_type)
    }

    /// A struct's fields up to its stop byte; a field whose id `typed` knows must have that type.
    fn skip_struct(&mut self, depth: u32, typed: fn(i16) -> Option<u8>) -> Option<()> {
        let mut last = 0;
        loop {
            if self.b.get(self.pos) == Some(&0) {
                self.pos += 1;
                return Some(());
            }
            let (id, ty) = self.field_header(&mut last)?;
            if typed(id).is_some_and(|want| want != ty) {
                return None;
            }
            self.skip_field(ty, depth)?;
        }
    }

    /// A field's value: a boolean field keeps its value in the header's type.
    fn skip_field(&mut self, ty: u8, depth: u32) -> Option<()> {
        match ty {
            TRUE | FALSE => Some(()),
            _ => self.skip(ty, depth),
        }
    }

    /// A value of type `ty` inside a list, set or map (a boolean takes a byte there).
    fn skip(&mut self, ty: u8, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match ty {
            TRUE | FALSE | BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.advance(8),
            BINARY => {
                let n = usize::try_from(self.varint()?).ok()?;
                self.advance(n)
            }
            LIST | SET => {
                let h = self.byte()?;
                let (mut size, et) = ((h >> 4) as u64, h & 0x0f);
                if size == 15 {
                    size = self.varint()?;
                }
                // Every element takes at least a byte: a size past the bytes left is bad input,
                // not a long loop.
                if size > (self.b.len() - self.pos) as u64 {
                    return None;
                }
                for _ in 0..size {
                    self.skip(et, depth + 1)?;
                }
                Some(())
            }
            MAP => {
                let size = self.varint()?;
                if size == 0 {
                    return Some(());
                }
                let kv = self.byte()?;
                if size > (self.b.len() - self.pos) as u64 {
                    return None;
                }
                for _ in 0..size {
                    self.skip(kv >> 4, depth + 1)?;
                    self.skip(kv & 0x0f, depth + 1)?;
                }
                Some(())
            }
            STRUCT => self.skip_struct(depth + 1, |_| None),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{ParquetMetaDataOptions, ParquetMetaDataReader};

    use super::*;

    fn file(names: &[&str]) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..names.len() as i64)),
                Arc::new(StringArray::from_iter_values(names)),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    #[test]
    fn the_range_holds_the_schema_and_decoding_with_it_gives_the_same_metadata() {
        let (a, b) = (file(&["x", "y"]), file(&["a much longer name", "z", "w"]));
        let (ra, rb) = (schema_range(&a).unwrap(), schema_range(&b).unwrap());
        // Same schema, different data: the same bytes.
        assert_eq!(a[ra.clone()], b[rb]);
        let plain = ParquetMetaDataReader::new().parse_and_finish(&bytes::Bytes::from(a.clone())).unwrap();
        let schema = plain.file_metadata().schema_descr_ptr();
        let opts = ParquetMetaDataOptions::new().with_schema(schema.clone());
        let given = ParquetMetaDataReader::new()
            .with_metadata_options(Some(opts))
            .parse_and_finish(&bytes::Bytes::from(b.clone()))
            .unwrap();
        assert_eq!(given.file_metadata().num_rows(), 3);
        assert_eq!(given.file_metadata().schema_descr().columns().len(), 2);

        let mut cache = Schemas::default();
        assert!(cache.get(&a[ra.clone()]).is_none());
        cache.insert(&a[ra.clone()], schema.clone());
        cache.insert(&a[ra.clone()], schema.clone());
        assert_eq!(cache.len(), 1);
        assert!(Arc::ptr_eq(&cache.get(&a[ra]).unwrap(), &schema));
    }

    #[test]
    fn a_different_schema_has_different_bytes() {
        let a = file(&["x"]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("other", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1])), Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let mut b = Vec::new();
        let mut w = ArrowWriter::try_new(&mut b, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_ne!(a[schema_range(&a).unwrap()], b[schema_range(&b).unwrap()]);
    }

    #[test]
    fn bad_footers_have_no_range() {
        let good = file(&["x"]);
        assert_eq!(schema_range(b""), None);
        assert_eq!(schema_range(b"PAR1PAR1"), None);
        let mut encrypted = good.clone();
        let n = encrypted.len();
        encrypted[n - 4..].copy_from_slice(b"PARE");
        assert_eq!(schema_range(&encrypted), None);
        // Every truncation of the footer, and a length past the file.
        for cut in 1..good.len() {
            let mut t = good[..good.len() - 8 - cut.min(good.len() - 8)].to_vec();
            t.extend_from_slice(&good[good.len() - 8..]);
            if let Some(r) = schema_range(&t) {
                assert!(r.end <= t.len());
            }
        }
        // A version field typed as anything but i32, or a schema name typed as an i32: parquet
        // would read them by id, so no range is offered.
        let meta_start =
            good.len() - 8 - u32::from_le_bytes(good[good.len() - 8..good.len() - 4].try_into().unwrap()) as usize;
        assert_eq!(good[meta_start], 0x15, "version: field 1, i32");
        let mut retyped = good.clone();
        retyped[meta_start] = 0x16;
        assert_eq!(schema_range(&retyped), None);
        let r = schema_range(&good).unwrap();
        // The list header, then the root element's first field: its name (id 4, binary).
        assert_eq!(good[r.start + 1], 0x48, "name: field 4, binary");
        let mut renamed = good.clone();
        renamed[r.start + 1] = 0x45;
        assert_eq!(schema_range(&renamed), None);
        let mut long = good.clone();
        let n = long.len();
        long[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(schema_range(&long), None);
    }
}
