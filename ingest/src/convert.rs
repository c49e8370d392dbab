//! Turns one CloudTrail record's JSON into a row of the `cloudtrail` table.
//!
//! Conversion is driven by the column tree in `trailwatch_core::schema`, in two phases: parse
//! the record into a [`Row`] (which may fail with a reason, rejecting the record and nothing
//! else), then append the row to Arrow builders (which cannot fail), so a bad record never leaves
//! half a row behind.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, SchemaRef};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use trailwatch_core::schema::{self, Kind};

use crate::json;

/// A parsed value of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Str(Cow<'a, str>),
    Json(&'a str),
    Bool(bool),
    Time(i64),
    Struct(Vec<Val<'a>>),
    List(Vec<Vec<Val<'a>>>),
}

/// One record, parsed: a value per top-level column, the members the schema does not know, and
/// the few fields ingest needs for partitioning.
#[derive(Debug)]
pub struct Row<'a> {
    pub values: Vec<Val<'a>>,
    /// Members the schema does not know (and values of the wrong type): path and JSON text.
    pub unknown: Vec<(Cow<'a, str>, &'a str)>,
    pub event_time: i64,
}

impl Row<'_> {
    fn str_at(&self, name: &str) -> Option<&str> {
        let i = schema::CLOUDTRAIL.iter().position(|c| c.name == name)?;
        match &self.values[i] {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn recipient_account_id(&self) -> Option<&str> {
        self.str_at("recipient_account_id")
    }
    pub fn aws_region(&self) -> Option<&str> {
        self.str_at("aws_region")
    }
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject(pub String);

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object key or string that borrows from the input when it has no escapes.
pub(crate) struct MaybeBorrowed<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object's members, in order, values unparsed.
pub struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(32));
                while let Some((k, val)) = m.next_entry::<MaybeBorrowed<'de>, &'de RawValue>()? {
                    v.push((k.0, val));
                }
                Ok(RawObject(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Shows a value in a reason: its JSON type and its first 40 characters.
pub(crate) fn describe(text: &str) -> String {
    let kind = match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    let mut shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{kind} {shown}")
}

/// Why a record's text could not become a row.
#[derive(Debug)]
pub enum RecordError {
    /// The text is not JSON.
    Json(serde_json::Error),
    /// JSON, but not a usable record.
    Reject(Reject),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Json(e) => write!(f, "invalid JSON: {e}"),
            RecordError::Reject(r) => r.fmt(f),
        }
    }
}

/// Parses one record from its text in a single pass (see [`crate::json`]): syntax is checked
/// while the members are read, so the text needs no separate validation.
pub fn parse_record_text(text: &str) -> Result<Row<'_>, RecordError> {
    json::parse_row(text).map_err(|e| match e {
        json::Fail::Reject(r) => RecordError::Reject(r),
        json::Fail::Invalid | json::Fail::Cut => invalid(text),
    })
}

/// Why a text the record parser found invalid is not a record, in serde_json's words (which
/// reasons and reject files have always used). Only failing records come here.
#[cold]
fn invalid(text: &str) -> RecordError {
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<&RawValue>(text) {
            Err(e) => RecordError::Json(e),
            Ok(raw) => {
                RecordError::Reject(Reject(format!("record: expected an object, found {}", describe(raw.get()))))
            }
        };
    }
    match serde_json::from_str::<RawObject>(text) {
        Err(e) => RecordError::Json(e),
        // The two parsers disagree (the differential fuzz target looks for this): still a reject.
        Ok(_) => RecordError::Reject(Reject("record: not a JSON object the record parser accepts".into())),
    }
}

/// Parses one record.
pub fn parse_record(raw: &RawValue) -> Result<Row<'_>, Reject> {
    parse_record_text(raw.get()).map_err(|e| match e {
        RecordError::Reject(r) => r,
        RecordError::Json(e) => Reject(format!("invalid JSON: {e}")),
    })
}

/// Builds Arrow arrays for one level of the column tree.
enum ColBuilder {
    Str(StringBuilder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
    Struct { fields: Fields, children: Vec<ColBuilder>, nulls: NullBufferBuilder },
    List { item: Arc<Field>, fields: Fields, children: Vec<ColBuilder>, offsets: Vec<i32>, nulls: NullBufferBuilder },
}

impl ColBuilder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Str | Kind::Json => ColBuilder::Str(StringBuilder::new()),
            Kind::Bool => ColBuilder::Bool(BooleanBuilder::new()),
            Kind::Time => ColBuilder::Time(TimestampMillisecondBuilder::new().with_timezone("UTC")),
            Kind::Struct(cols) => ColBuilder::Struct {
                fields: schema::fields(cols),
                children: cols.iter().map(|c| ColBuilder::new(c.kind)).collect(),
                nulls: NullBufferBuilder::new(0),
            },
            Kind::ListOfStruct(cols) => {
                let DataType::List(item) = schema::data_type(kind) else { unreachable!("list kind") };
                ColBuilder::List {
                    item,
                    fields: schema::fields(cols),
                    children: cols.iter().map(|c| ColBuilder::new(c.kind)).collect(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                }
            }
        }
    }

    fn append(&mut self, v: &Val) {
        match (self, v) {
            (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
            (ColBuilder::Str(b), Val::Json(s)) => b.append_value(s),
            (ColBuilder::Bool(b), Val::Bool(x)) => b.append_value(*x),
            (ColBuilder::Time(b), Val::Time(x)) => b.append_value(*x),
            (ColBuilder::Struct { children, nulls, .. }, Val::Struct(vals)) => {
                for (c, v) in children.iter_mut().zip(vals) {
                    c.append(v);
                }
                nulls.append_non_null();
            }
            (ColBuilder::List { children, offsets, nulls, .. }, Val::List(items)) => {
                for item in items {
                    for (c, v) in children.iter_mut().zip(item) {
                        c.append(v);
                    }
                }
                offsets.push(offsets.last().copied().unwrap_or(0) + items.len() as i32);
                nulls.append_non_null();
            }
            (b, _) => b.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Time(b) => b.append_null(),
            ColBuilder::Struct { children, nulls, .. } => {
                children.iter_mut().for_each(ColBuilder::append_null);
                nulls.append_null();
            }
            ColBuilder::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Time(b) => Arc::new(b.finish()),
            ColBuilder::Struct { fields, children, nulls } => {
                let arrays = children.iter_mut().map(ColBuilder::finish).collect();
                Arc::new(StructArray::new(fields.clone(), arrays, nulls.finish()))
            }
            ColBuilder::List { item, fields, children, offsets, nulls } => {
                let arrays = children.iter_mut().map(ColBuilder::finish).collect();
                let values = StructArray::new(fields.clone(), arrays, None);
                let offs = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(item.clone(), offs, Arc::new(values), nulls.finish()))
            }
        }
    }
}

/// Accumulates rows of the `cloudtrail` table into a `RecordBatch`.
pub struct CloudTrailBatch {
    schema: SchemaRef,
    cols: Vec<ColBuilder>,
    unknown: StringBuilder,
    rows: usize,
    bytes: usize,
    scratch: String,
}

impl Default for CloudTrailBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::writer::TableBatch for CloudTrailBatch {
    type Row<'r> = Row<'r>;
    const TABLE: &'static str = trailwatch_core::lake::CLOUDTRAIL_TABLE;
    fn schema() -> SchemaRef {
        schema::cloudtrail_schema()
    }
    fn push(&mut self, row: &Row<'_>, size: usize) {
        CloudTrailBatch::push(self, row, size)
    }
    fn len(&self) -> usize {
        self.rows
    }
    fn approx_bytes(&self) -> usize {
        self.bytes
    }
    fn finish(&mut self) -> RecordBatch {
        CloudTrailBatch::finish(self)
    }
}

impl CloudTrailBatch {
    pub fn new() -> Self {
        CloudTrailBatch {
            schema: schema::cloudtrail_schema(),
            cols: schema::CLOUDTRAIL.iter().map(|c| ColBuilder::new(c.kind)).collect(),
            unknown: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            scratch: String::new(),
        }
    }

    /// Rows buffered since the last [`CloudTrailBatch::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate JSON bytes buffered, to bound memory across partitions.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a parsed row; `size` is the record's JSON length, for memory accounting.
    pub fn push(&mut self, row: &Row, size: usize) {
        for (b, v) in self.cols.iter_mut().zip(&row.values) {
            b.append(v);
        }
        if row.unknown.is_empty() {
            self.unknown.append_null();
        } else {
            self.scratch.clear();
            self.scratch.push('{');
            for (i, (k, v)) in row.unknown.iter().enumerate() {
                if i > 0 {
                    self.scratch.push(',');
                }
                self.scratch.push_str(&serde_json::to_string(k).expect("a string serialises"));
                self.scratch.push(':');
                self.scratch.push_str(v);
            }
            self.scratch.push('}');
            self.unknown.append_value(&self.scratch);
        }
        self.rows += 1;
        self.bytes += size;
    }

    /// The buffered rows as a batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self.cols.iter_mut().map(ColBuilder::finish).collect();
        arrays.push(Arc::new(self.unknown.finish()));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).expect("builders follow the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn parses_a_record_with_string_booleans_and_unknown_members() {
        let r = raw(r#"{"eventVersion":"1.08","eventTime":"2023-05-19T07:44:30Z","readOnly":"True","newField":{"x":1},
            "userIdentity":{"type":"AssumedRole","sessionContext":{"attributes":{"mfaAuthenticated":"false","creationDate":"2023-05-19T07:00:00Z"},"brandNew":2}},
            "resources":[{"ARN":"arn:aws:s3:::b","type":"AWS::S3::Bucket","extra":true}],"requestParameters":{"a":[1,2]}}"#);
        let row = parse_record(&r).unwrap();
        assert_eq!(row.event_time, 1_684_482_270_000);
        let mut b = CloudTrailBatch::new();
        b.push(&row, 10);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        let ro = batch.column_by_name("read_only").unwrap().as_boolean();
        assert!(ro.value(0));
        let uf = batch.column_by_name("unknown_fields").unwrap().as_string::<i32>();
        let uf: serde_json::Value = serde_json::from_str(uf.value(0)).unwrap();
        assert_eq!(uf["newField"]["x"], 1);
        assert_eq!(uf["userIdentity.sessionContext.brandNew"], 2);
        assert_eq!(uf["resources.0.extra"], true);
        let rp = batch.column_by_name("request_parameters").unwrap().as_string::<i32>();
        assert_eq!(rp.value(0), r#"{"a":[1,2]}"#);
        let res = batch.column_by_name("resources").unwrap().as_list::<i32>();
        assert_eq!(res.value(0).len(), 1);
        let ui = batch.column_by_name("user_identity").unwrap().as_struct();
        let sc = ui.column_by_name("session_context").unwrap().as_struct();
        let attrs = sc.column_by_name("attributes").unwrap().as_struct();
        assert!(!attrs.column_by_name("mfa_authenticated").unwrap().as_boolean().value(0));
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            (r#"{"eventTime":"eventTime"}"#, "eventTime: expected an ISO-8601 time, found a string \"eventTime\""),
            (r#"{"eventName":"X"}"#, "eventTime: missing"),
            (r#"{"eventTime":5}"#, "eventTime: expected an ISO-8601 time, found a number 5"),
            (r#"[1]"#, "record: expected an object"),
        ];
        for (input, want) in cases {
            let r = raw(input);
            let err = parse_record(&r).unwrap_err();
            assert!(err.0.starts_with(want), "{input}: {err}");
        }
    }

    #[test]
    fn values_of_the_wrong_type_are_kept_in_unknown_fields() {
        let r = raw(
            r#"{"eventTime":"2017-01-01T00:20:50Z","readOnly":"maybe","eventName":5,"userIdentity":{"type":"IAMUser","sessionContext":{"attributes":{"creationDate":"..."}}},"resources":"x"}"#,
        );
        let row = parse_record(&r).unwrap();
        let mut b = CloudTrailBatch::new();
        b.push(&row, 1);
        let batch = b.finish();
        assert!(batch.column_by_name("read_only").unwrap().is_null(0));
        assert!(batch.column_by_name("event_name").unwrap().is_null(0));
        let uf: serde_json::Value =
            serde_json::from_str(batch.column_by_name("unknown_fields").unwrap().as_string::<i32>().value(0)).unwrap();
        assert_eq!(uf["readOnly"], "maybe");
        assert_eq!(uf["eventName"], 5);
        assert_eq!(uf["userIdentity.sessionContext.attributes.creationDate"], "...");
        assert_eq!(uf["resources"], "x");
        let ui = batch.column_by_name("user_identity").unwrap().as_struct();
        assert_eq!(ui.column_by_name("type").unwrap().as_string::<i32>().value(0), "IAMUser");
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let r = raw(r#"{"eventTime":"2023-05-19T07:44:30Z","userAgent":"a\"b\u00e9\n"}"#);
        let row = parse_record(&r).unwrap();
        let mut b = CloudTrailBatch::new();
        b.push(&row, 1);
        let batch = b.finish();
        assert_eq!(batch.column_by_name("user_agent").unwrap().as_string::<i32>().value(0), "a\"bé\n");
    }
}
