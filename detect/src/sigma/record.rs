//! Where a Sigma field's values come from: a CloudTrail record as JSON (rule samples, tests) or a
//! row of the lake's CloudTrail table (detect), behind one trait so both evaluate alike.
//!
//! Field names are CloudTrail's own JSON paths (`userIdentity.sessionContext.sessionIssuer.arn`,
//! `requestParameters.bucketName`). They are resolved against the lake schema once, when rules
//! load: a path through struct columns reads the leaf column, a path into a JSON-text column
//! (`requestParameters`, `responseElements`, ...) parses that row's JSON only when a rule that
//! needs it is evaluated, and a path the schema does not know reads `unknown_fields`, where ingest
//! keeps every member it has no column for.

use std::borrow::Cow;
use std::cell::OnceCell;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, BooleanArray, ListArray, PrimitiveArray, RecordBatch, StructArray};
use arrow_buffer::NullBuffer;
use serde_json::Value;
use trailwatch_core::schema::{Col, Kind, CLOUDTRAIL, UNKNOWN_FIELDS};
use trailwatch_core::time::format_rfc3339_millis;

use crate::strs::Strs;

/// One value of a field, as text: strings as they are, numbers and booleans as JSON writes them,
/// objects as their JSON text (so `requestParameters|contains: x` searches the whole object).
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    Str(Cow<'a, str>),
    Json(Cow<'a, str>),
}

impl Leaf<'_> {
    pub fn text(&self) -> &str {
        match self {
            Leaf::Str(s) | Leaf::Json(s) => s,
        }
    }
}

/// Where a field lives in the lake's CloudTrail table.
#[derive(Debug, Clone, PartialEq)]
pub enum LakePath {
    /// A text, boolean or time column, possibly inside structs: lake names from the root.
    Column(Vec<&'static str>, Kind),
    /// A struct column as a whole (`userIdentity|contains`, `...attributes|exists`): its JSON text,
    /// keys sorted as serde_json writes them. Its members, to render it.
    Struct(Vec<&'static str>, &'static [Col]),
    /// A list-of-struct column as a whole (`resources`): each element's JSON text.
    List(Vec<&'static str>, &'static [Col]),
    /// A JSON-text column and the keys below it (`requestParameters.bucketName`).
    Json(Vec<&'static str>, Vec<String>),
    /// A member of the objects of a list column (`resources.ARN`).
    ListMember(Vec<&'static str>, &'static str),
    /// Not in the schema: only `unknown_fields` can hold it.
    Unknown,
}

/// A field a rule reads, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// As the rule writes it.
    pub name: String,
    pub segs: Vec<String>,
    pub lake: LakePath,
    /// Its index in the rule set's field list ([`BatchView`] columns follow that order).
    pub slot: usize,
}

impl Field {
    pub fn resolve(name: &str) -> Field {
        let segs: Vec<String> = name.split('.').map(str::to_string).collect();
        let lake = lake_path(&segs);
        Field { name: name.to_string(), segs, lake, slot: 0 }
    }

    /// The lake column paths (lake names, root first) to decode for this field.
    pub fn columns(&self) -> Vec<Vec<&'static str>> {
        match &self.lake {
            LakePath::Column(p, _) | LakePath::Struct(p, _) | LakePath::List(p, _) | LakePath::Json(p, _) => {
                vec![p.clone()]
            }
            LakePath::ListMember(p, m) => {
                let mut p = p.clone();
                p.push(m);
                vec![p]
            }
            LakePath::Unknown => vec![],
        }
    }
}

fn lake_path(segs: &[String]) -> LakePath {
    let mut cols = CLOUDTRAIL;
    let mut path = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let Some(c) = cols.iter().find(|c| c.json == seg) else { return LakePath::Unknown };
        path.push(c.name);
        let last = i + 1 == segs.len();
        match c.kind {
            Kind::Struct(sub) if last => return LakePath::Struct(path, sub),
            Kind::Struct(sub) => cols = sub,
            Kind::Json => return LakePath::Json(path, segs[i + 1..].to_vec()),
            Kind::ListOfStruct(sub) if last => return LakePath::List(path, sub),
            Kind::ListOfStruct(sub) => {
                return match &segs[i + 1..] {
                    [member] => match sub.iter().find(|m| m.json == member && m.kind == Kind::Str) {
                        Some(m) => LakePath::ListMember(path, m.name),
                        None => LakePath::Unknown,
                    },
                    _ => LakePath::Unknown,
                }
            }
            k if last => return LakePath::Column(path, k),
            _ => return LakePath::Unknown,
        }
    }
    LakePath::Unknown
}

/// Something a rule can be evaluated against.
pub trait Record {
    /// Calls `f` with each value of `field` (each element of an array) until it returns true.
    /// `None` when the field is absent or null, else whether `f` returned true.
    fn visit(&self, field: &Field, f: &mut dyn FnMut(&Leaf) -> bool) -> Option<bool>;
}

/// Values of `keys` below `v`: arrays on the way match when any element does.
pub fn visit_json(v: &Value, keys: &[String], f: &mut dyn FnMut(&Leaf) -> bool) -> Option<bool> {
    let mut present = false;
    let hit = walk(v, keys, f, &mut present);
    present.then_some(hit)
}

fn walk(v: &Value, keys: &[String], f: &mut dyn FnMut(&Leaf) -> bool, present: &mut bool) -> bool {
    match (keys.split_first(), v) {
        (_, Value::Null) => false,
        (None, v) => emit(v, f, present),
        (Some((k, rest)), Value::Object(m)) => m.get(k.as_str()).is_some_and(|c| walk(c, rest, f, present)),
        (Some(_), Value::Array(a)) => a.iter().any(|e| walk(e, keys, f, present)),
        (Some(_), _) => false,
    }
}

fn emit(v: &Value, f: &mut dyn FnMut(&Leaf) -> bool, present: &mut bool) -> bool {
    let leaf = match v {
        Value::Null => return false,
        Value::Array(a) => {
            *present = true;
            return a.iter().any(|e| emit(e, f, present));
        }
        Value::String(s) => Leaf::Str(Cow::Borrowed(s)),
        Value::Number(n) => Leaf::Str(Cow::Owned(n.to_string())),
        Value::Bool(b) => Leaf::Str(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Object(_) => Leaf::Json(Cow::Owned(v.to_string())),
    };
    *present = true;
    f(&leaf)
}

/// A CloudTrail record as AWS writes it.
pub struct JsonRecord<'a>(pub &'a Value);

impl Record for JsonRecord<'_> {
    fn visit(&self, field: &Field, f: &mut dyn FnMut(&Leaf) -> bool) -> Option<bool> {
        visit_json(self.0, &field.segs, f)
    }
}

/// One resolved field's arrays in a batch.
enum Column<'a> {
    Text(Strs<'a>, Option<NullBuffer>),
    Bool(&'a BooleanArray, Option<NullBuffer>),
    Time(&'a PrimitiveArray<TimestampMillisecondType>, Option<NullBuffer>),
    /// A JSON-text column: its index among the view's JSON columns (for the parse cache).
    Json(Strs<'a>, Option<NullBuffer>, usize),
    Members(&'a ListArray, Strs<'a>),
    Struct(&'a StructArray, Option<NullBuffer>, &'static [Col]),
    List(&'a ListArray, &'a StructArray, &'static [Col]),
    Missing,
}

fn valid(n: &Option<NullBuffer>, i: usize) -> bool {
    n.as_ref().is_none_or(|n| n.is_valid(i))
}

/// A batch of the lake's CloudTrail table, with the columns of a rule set's fields looked up once.
pub struct BatchView<'a> {
    cols: Vec<Column<'a>>,
    unknown: Option<Strs<'a>>,
}

/// The column at `path` (lake names) and the nulls of it and every struct above it.
fn find<'a>(batch: &'a RecordBatch, path: &[&str]) -> Option<(&'a ArrayRef, Option<NullBuffer>)> {
    let mut a = batch.column_by_name(path[0])?;
    let mut nulls = a.logical_nulls();
    for seg in &path[1..] {
        let s: &StructArray = a.as_struct_opt()?;
        a = s.column_by_name(seg)?;
        nulls = NullBuffer::union(nulls.as_ref(), a.logical_nulls().as_ref());
    }
    Some((a, nulls))
}

impl<'a> BatchView<'a> {
    /// `fields`: the rule set's fields, in its order (rules refer to them by index).
    pub fn new(batch: &'a RecordBatch, fields: &[Field]) -> BatchView<'a> {
        // One parse slot per JSON column, however many fields read it.
        let mut json_paths: Vec<&[&str]> = Vec::new();
        let cols = fields
            .iter()
            .map(|f| match &f.lake {
                LakePath::Column(p, kind) => match (find(batch, p), kind) {
                    (Some((a, n)), Kind::Bool) => a.as_boolean_opt().map_or(Column::Missing, |b| Column::Bool(b, n)),
                    (Some((a, n)), Kind::Time) => {
                        a.as_primitive_opt::<TimestampMillisecondType>().map_or(Column::Missing, |t| Column::Time(t, n))
                    }
                    (Some((a, n)), _) => Strs::of(a.as_ref()).map_or(Column::Missing, |s| Column::Text(s, n)),
                    (None, _) => Column::Missing,
                },
                LakePath::Json(p, _) => match find(batch, p).and_then(|(a, n)| Some((Strs::of(a.as_ref())?, n))) {
                    Some((s, n)) => {
                        let slot = json_paths.iter().position(|q| *q == p.as_slice()).unwrap_or_else(|| {
                            json_paths.push(p);
                            json_paths.len() - 1
                        });
                        if slot < JSON_SLOTS {
                            Column::Json(s, n, slot)
                        } else {
                            Column::Missing
                        }
                    }
                    None => Column::Missing,
                },
                LakePath::ListMember(p, m) => find(batch, p)
                    .and_then(|(a, _)| a.as_list_opt::<i32>())
                    .and_then(|l| Some((l, Strs::of(l.values().as_struct_opt()?.column_by_name(m)?.as_ref())?)))
                    .map_or(Column::Missing, |(l, s)| Column::Members(l, s)),
                LakePath::Struct(p, cols) => find(batch, p)
                    .and_then(|(a, n)| Some((a.as_struct_opt()?, n)))
                    .map_or(Column::Missing, |(st, n)| Column::Struct(st, n, cols)),
                LakePath::List(p, cols) => find(batch, p)
                    .and_then(|(a, _)| a.as_list_opt::<i32>())
                    .and_then(|l| Some((l, l.values().as_struct_opt()?)))
                    .map_or(Column::Missing, |(l, st)| Column::List(l, st, cols)),
                LakePath::Unknown => Column::Missing,
            })
            .collect();
        let unknown = batch.column_by_name(UNKNOWN_FIELDS).and_then(|c| Strs::of(c.as_ref()));
        BatchView { cols, unknown }
    }

    /// The record at `row`.
    pub fn row(&self, row: usize) -> RowRecord<'_, 'a> {
        RowRecord { view: self, row, parsed: Default::default(), unknown: OnceCell::new() }
    }
}

/// One row of a [`BatchView`]; JSON columns are parsed at most once, when first read.
pub struct RowRecord<'v, 'a> {
    view: &'v BatchView<'a>,
    row: usize,
    /// Parsed JSON columns, by slot: an array, so a row costs no allocation until one is read.
    parsed: [OnceCell<Option<Value>>; JSON_SLOTS],
    unknown: OnceCell<Option<Value>>,
}

/// JSON-text columns a rule set can read (the schema has eight).
const JSON_SLOTS: usize = 8;

impl RowRecord<'_, '_> {
    /// `field` in `unknown_fields`: under its whole path, or inside a member kept under a prefix
    /// of it (`newField` holding `{"x": 1}` for `newField.x`).
    fn visit_unknown(&self, field: &Field, f: &mut dyn FnMut(&Leaf) -> bool) -> Option<bool> {
        let u = self.view.unknown.filter(|u| u.is_valid(self.row))?;
        let v = self.unknown.get_or_init(|| serde_json::from_str(u.value(self.row)).ok()).as_ref()?;
        let m = v.as_object()?;
        (1..=field.segs.len()).rev().find_map(|n| {
            let key = field.segs[..n].join(".");
            m.get(&key).and_then(|v| visit_json(v, &field.segs[n..], f))
        })
    }
}

impl Record for RowRecord<'_, '_> {
    fn visit(&self, field: &Field, f: &mut dyn FnMut(&Leaf) -> bool) -> Option<bool> {
        let i = self.row;
        let found = match &self.view.cols[field.slot] {
            Column::Text(s, n) => valid(n, i).then(|| f(&Leaf::Str(Cow::Borrowed(s.value(i))))),
            Column::Bool(b, n) => {
                valid(n, i).then(|| f(&Leaf::Str(Cow::Borrowed(if b.value(i) { "true" } else { "false" }))))
            }
            Column::Time(t, n) => valid(n, i).then(|| f(&Leaf::Str(Cow::Owned(time_text(t.value(i)))))),
            Column::Json(s, n, slot) if valid(n, i) => match &field.lake {
                // A whole column holding an array: its elements, as the record's own array.
                LakePath::Json(_, keys) if keys.is_empty() && s.value(i).starts_with('[') => {
                    let v = self.parsed[*slot].get_or_init(|| serde_json::from_str(s.value(i)).ok());
                    v.as_ref().and_then(|v| visit_json(v, keys, f))
                }
                LakePath::Json(_, keys) if keys.is_empty() => Some(f(&json_text_leaf(s.value(i)))),
                LakePath::Json(_, keys) => {
                    let v = self.parsed[*slot].get_or_init(|| serde_json::from_str(s.value(i)).ok());
                    v.as_ref().and_then(|v| visit_json(v, keys, f))
                }
                _ => None,
            },
            Column::Json(..) => None,
            Column::Members(l, s) if l.is_valid(i) => {
                let (a, b) = (l.value_offsets()[i] as usize, l.value_offsets()[i + 1] as usize);
                let mut present = false;
                let hit = (a..b).filter(|&j| s.is_valid(j)).any(|j| {
                    present = true;
                    f(&Leaf::Str(Cow::Borrowed(s.value(j))))
                });
                present.then_some(hit)
            }
            Column::Members(..) => None,
            Column::Struct(st, n, cols) if valid(n, i) => {
                let mut text = String::new();
                render_struct(st, cols, i, &mut text);
                Some(f(&Leaf::Json(Cow::Owned(text))))
            }
            Column::Struct(..) => None,
            Column::List(l, st, cols) if l.is_valid(i) => {
                let (a, b) = (l.value_offsets()[i] as usize, l.value_offsets()[i + 1] as usize);
                let mut text = String::new();
                Some((a..b).filter(|&j| st.is_valid(j)).any(|j| {
                    text.clear();
                    render_struct(st, cols, j, &mut text);
                    f(&Leaf::Json(Cow::Borrowed(&text)))
                }))
            }
            Column::List(..) => None,
            Column::Missing => None,
        };
        // A value of the wrong type was kept in `unknown_fields` and its column left null.
        found.or_else(|| self.visit_unknown(field, f))
    }
}

/// A whole JSON-text column: a string when it holds one (`"x"` stored as JSON), else the text.
fn json_text_leaf(s: &str) -> Leaf<'_> {
    if s.starts_with('"') {
        if let Ok(Value::String(v)) = serde_json::from_str(s) {
            return Leaf::Str(Cow::Owned(v));
        }
    }
    if s.starts_with('{') || s.starts_with('[') {
        Leaf::Json(Cow::Borrowed(s))
    } else {
        Leaf::Str(Cow::Borrowed(s))
    }
}

/// A time as CloudTrail writes it: whole seconds without a fraction.
fn time_text(ms: i64) -> String {
    let t = format_rfc3339_millis(ms);
    match t.strip_suffix(".000Z") {
        Some(whole) => format!("{whole}Z"),
        None => t,
    }
}

/// Row `i` of a struct column as compact JSON with CloudTrail's names, members in sorted order
/// and nulls left out: what serde_json writes for the record's own object.
fn render_struct(st: &StructArray, cols: &[Col], i: usize, out: &mut String) {
    let mut members: Vec<&Col> = cols.iter().collect();
    members.sort_by_key(|c| c.json);
    out.push('{');
    let mut first = true;
    for c in members {
        let Some(a) = st.column_by_name(c.name) else { continue };
        if a.is_null(i) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(c.json).expect("a string serializes"));
        out.push(':');
        render_value(a, c.kind, i, out);
    }
    out.push('}');
}

fn render_value(a: &ArrayRef, kind: Kind, i: usize, out: &mut String) {
    match kind {
        Kind::Str => match Strs::of(a.as_ref()) {
            Some(s) => out.push_str(&serde_json::to_string(s.value(i)).expect("a string serializes")),
            None => out.push_str("null"),
        },
        // Kept as written; compacted through serde_json so it reads like the record's own.
        Kind::Json => match Strs::of(a.as_ref()).and_then(|s| serde_json::from_str::<Value>(s.value(i)).ok()) {
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str("null"),
        },
        Kind::Bool => match a.as_boolean_opt() {
            Some(b) => out.push_str(if b.value(i) { "true" } else { "false" }),
            None => out.push_str("null"),
        },
        Kind::Time => match a.as_primitive_opt::<TimestampMillisecondType>() {
            Some(t) => out.push_str(&serde_json::to_string(&time_text(t.value(i))).expect("a string serializes")),
            None => out.push_str("null"),
        },
        Kind::Struct(cols) => match a.as_struct_opt() {
            Some(st) => render_struct(st, cols, i, out),
            None => out.push_str("null"),
        },
        Kind::ListOfStruct(cols) => match a.as_list_opt::<i32>().and_then(|l| Some((l, l.values().as_struct_opt()?))) {
            Some((l, st)) => {
                out.push('[');
                let (from, to) = (l.value_offsets()[i] as usize, l.value_offsets()[i + 1] as usize);
                for (k, j) in (from..to).enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    render_struct(st, cols, j, out);
                }
                out.push(']');
            }
            None => out.push_str("null"),
        },
    }
}
