//! The serde_json record parser that [`crate::json`] replaced, kept only to check the new one
//! against: the property test in `convert.rs` and the `record_parser` fuzz target compare the two
//! on the same text. Built for tests and under `cfg(fuzzing)` (cargo fuzz sets it).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use trailwatch_core::schema::{self, Col, Kind};
use trailwatch_core::time::parse_rfc3339_millis;

use crate::convert::{describe, MaybeBorrowed, RawObject, RecordError, Reject, Val};

/// A row as the old parser built it: unknown members keep serde_json's raw values.
#[derive(Debug)]
pub struct LegacyRow<'a> {
    pub values: Vec<Val<'a>>,
    pub unknown: Vec<(String, &'a RawValue)>,
    pub event_time: i64,
}

/// A JSON array's elements, unparsed.
struct RawArray<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for RawArray<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArray<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<&'de RawValue>()? {
                    v.push(x);
                }
                Ok(RawArray(v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Where a value sits in its record (`userIdentity.sessionContext.attributes`), as a chain that
/// is only rendered to a string when a reason or an unknown member needs it: building a path for
/// every field was a measurable share of ingest time.
#[derive(Clone, Copy)]
struct PathRef<'p> {
    parent: Option<&'p PathRef<'p>>,
    key: &'p str,
}

impl PathRef<'_> {
    const ROOT: PathRef<'static> = PathRef { parent: None, key: "" };

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
        keys.reverse();
        keys.join(".")
    }
}

fn type_err(path: &PathRef, expected: &str, raw: &RawValue) -> Reject {
    Reject(format!("{}: expected {expected}, found {}", path.render(), describe(raw.get())))
}

fn parse_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<MaybeBorrowed<'a>>(raw.get()).ok().map(|m| m.0)
}

fn parse_value<'a>(
    col: &Col,
    raw: &'a RawValue,
    path: &PathRef,
    unknown: &mut Vec<(String, &'a RawValue)>,
) -> Result<Val<'a>, Reject> {
    let text = raw.get();
    if text == "null" {
        return Ok(Val::Null);
    }
    let first = text.as_bytes()[0];
    Ok(match col.kind {
        Kind::Json => Val::Json(text),
        Kind::Str if first == b'"' => Val::Str(parse_str(raw).ok_or_else(|| type_err(path, "a string", raw))?),
        Kind::Str => return Err(type_err(path, "a string", raw)),
        Kind::Bool => match text {
            "true" => Val::Bool(true),
            "false" => Val::Bool(false),
            _ if first == b'"' => match parse_str(raw).as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("true") => Val::Bool(true),
                Some("false") => Val::Bool(false),
                _ => return Err(type_err(path, "a boolean", raw)),
            },
            _ => return Err(type_err(path, "a boolean", raw)),
        },
        Kind::Time => {
            let s = (first == b'"').then(|| parse_str(raw)).flatten();
            match s.as_deref().and_then(parse_rfc3339_millis) {
                Some(ms) => Val::Time(ms),
                None => return Err(type_err(path, "an ISO-8601 time", raw)),
            }
        }
        Kind::Struct(cols) if first == b'{' => Val::Struct(parse_object(cols, text, path, unknown)?),
        Kind::Struct(_) => return Err(type_err(path, "an object", raw)),
        Kind::ListOfStruct(cols) if first == b'[' => {
            let items =
                serde_json::from_str::<RawArray<'a>>(text).map_err(|e| Reject(format!("{}: {e}", path.render())))?;
            let mut out = Vec::with_capacity(items.0.len());
            for (i, item) in items.0.into_iter().enumerate() {
                let idx = i.to_string();
                let p = PathRef { parent: Some(path), key: &idx };
                if !item.get().starts_with('{') {
                    return Err(type_err(&p, "an object", item));
                }
                out.push(parse_object(cols, item.get(), &p, unknown)?);
            }
            Val::List(out)
        }
        Kind::ListOfStruct(_) => return Err(type_err(path, "an array", raw)),
    })
}

fn parse_object<'a>(
    cols: &[Col],
    text: &'a str,
    path: &PathRef,
    unknown: &mut Vec<(String, &'a RawValue)>,
) -> Result<Vec<Val<'a>>, Reject> {
    let obj = serde_json::from_str::<RawObject<'a>>(text).map_err(|e| Reject(format!("{}: {e}", path.render())))?;
    fields(cols, obj, path, unknown)
}

fn fields<'a>(
    cols: &[Col],
    obj: RawObject<'a>,
    path: &PathRef,
    unknown: &mut Vec<(String, &'a RawValue)>,
) -> Result<Vec<Val<'a>>, Reject> {
    let mut vals = vec![Val::Null; cols.len()];
    for (k, v) in obj.0 {
        let p = PathRef { parent: Some(path), key: &k };
        match cols.iter().position(|c| c.json == k) {
            Some(i) => match parse_value(&cols[i], v, &p, unknown) {
                Ok(val) => vals[i] = val,
                // Only the event time is required. Any other value of the wrong type is kept,
                // as written, in `unknown_fields` under its path, and its column stays null.
                Err(e) if path.is_root() && cols[i].name == "event_time" => return Err(e),
                Err(_) => unknown.push((p.render(), v)),
            },
            None => unknown.push((p.render(), v)),
        }
    }
    Ok(vals)
}

/// Parses one record from its text in a single pass (syntax is checked while the members are
/// split, so the text needs no separate validation).
pub fn parse_record_text(text: &str) -> Result<LegacyRow<'_>, RecordError> {
    if !text.trim_start().starts_with('{') {
        let raw: &RawValue = serde_json::from_str(text).map_err(RecordError::Json)?;
        return Err(RecordError::Reject(Reject(format!("record: expected an object, found {}", describe(raw.get())))));
    }
    let obj = serde_json::from_str::<RawObject>(text).map_err(RecordError::Json)?;
    let mut unknown = Vec::new();
    let values = fields(schema::CLOUDTRAIL, obj, &PathRef::ROOT, &mut unknown).map_err(RecordError::Reject)?;
    let et = event_time_index();
    let event_time = match values[et] {
        Val::Time(ms) => ms,
        _ => return Err(RecordError::Reject(Reject("eventTime: missing".into()))),
    };
    Ok(LegacyRow { values, unknown, event_time })
}

fn event_time_index() -> usize {
    static I: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *I.get_or_init(|| schema::CLOUDTRAIL.iter().position(|c| c.name == "event_time").expect("schema has event_time"))
}

/// Panics unless [`crate::convert::parse_record_text`] and the old parser agree on `text`: the
/// same values, unknown members (path and text) and event time, or the same error message.
pub fn assert_same(text: &str) {
    match (crate::convert::parse_record_text(text), parse_record_text(text)) {
        (Ok(new), Ok(old)) => {
            assert_eq!(new.values, old.values, "values of {text:?}");
            let old_unknown: Vec<(&str, &str)> = old.unknown.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
            let new_unknown: Vec<(&str, &str)> = new.unknown.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
            assert_eq!(new_unknown, old_unknown, "unknown members of {text:?}");
            assert_eq!(new.event_time, old.event_time, "event time of {text:?}");
        }
        (Err(new), Err(old)) => assert_eq!(new.to_string(), old.to_string(), "error for {text:?}"),
        (new, old) => panic!("the parsers disagree on {text:?}:\nnew: {new:?}\nold: {old:?}"),
    }
    assert_prefix_agrees(text);
}

/// The in-place path (`json::parse_prefix`, given the text from the record's `{` on and whatever
/// follows it) takes a record exactly when the whole-text parser accepts it, and builds the same row.
fn assert_prefix_agrees(text: &str) {
    let t = text.trim_start_matches([' ', '\n', '\t', '\r']);
    if !t.starts_with('{') {
        return;
    }
    let whole = crate::json::parse_row(t);
    match crate::json::parse_prefix(t, 64) {
        Ok((row, len)) => {
            let alone = crate::json::parse_row(&t[..len]).expect("a record parse_prefix took parses alone");
            assert_eq!(row.values, alone.values, "values of {t:?}");
            assert_eq!(row.unknown, alone.unknown, "unknown members of {t:?}");
            if let Ok(whole) = whole {
                assert_eq!(len, t.trim_end_matches([' ', '\n', '\t', '\r']).len(), "end of {t:?}");
                assert_eq!(row.values, whole.values, "values of {t:?}");
            }
            // The record cut anywhere is never taken (the splitter copies it out instead).
            let mut cut = len / 2;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            assert!(crate::json::parse_prefix(&t[..cut], 64).is_err(), "{t:?} cut at {cut}");
        }
        // Declined: invalid, or possibly deeper than the limit (only then may a valid one be).
        Err(_) => assert!(whole.is_err() || t.bytes().filter(|b| matches!(b, b'{' | b'[')).count() > 50, "{t:?}"),
    }
}
