//! Property: a record written to the lake and read back is unchanged, up to the documented
//! normalisations: string booleans become booleans, times become UTC milliseconds, nulls and
//! absent members are the same, JSON key order does not matter, and members the schema does not
//! know come back from `unknown_fields`.

mod support;

use std::fs;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use trailwatch_core::schema::{Col, Kind, CLOUDTRAIL};
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectRef};
use trailwatch_core::time::{format_rfc3339_millis, parse_rfc3339_millis};
use trailwatch_ingest::{ingest_object, Config};

/// The input as the lake should hold it.
fn normalise(v: &Value, cols: &[Col]) -> Value {
    let mut out = Map::new();
    for (k, x) in v.as_object().unwrap() {
        // Members the schema does not know come back as written, nulls included.
        let Some(col) = cols.iter().find(|c| c.json == k) else {
            out.insert(k.clone(), x.clone());
            continue;
        };
        if x.is_null() {
            continue;
        }
        let n = match col.kind {
            Kind::Str | Kind::Json => x.clone(),
            Kind::Bool => match x {
                Value::String(s) => json!(s.eq_ignore_ascii_case("true")),
                b => b.clone(),
            },
            Kind::Time => json!(parse_rfc3339_millis(x.as_str().unwrap()).unwrap()),
            Kind::Struct(sub) => normalise(x, sub),
            Kind::ListOfStruct(sub) => Value::Array(x.as_array().unwrap().iter().map(|i| normalise(i, sub)).collect()),
        };
        out.insert(k.clone(), n);
    }
    Value::Object(out)
}

/// One cell of the lake, back to JSON.
fn cell(a: &ArrayRef, i: usize, kind: Kind) -> Option<Value> {
    if a.is_null(i) {
        return None;
    }
    Some(match kind {
        Kind::Str => json!(a.as_string::<i32>().value(i)),
        Kind::Json => serde_json::from_str(a.as_string::<i32>().value(i)).unwrap(),
        Kind::Bool => json!(a.as_boolean().value(i)),
        Kind::Time => json!(a.as_primitive::<TimestampMillisecondType>().value(i)),
        Kind::Struct(sub) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (c, col) in sub.iter().zip(s.columns()) {
                if let Some(v) = cell(col, i, c.kind) {
                    m.insert(c.json.to_string(), v);
                }
            }
            Value::Object(m)
        }
        Kind::ListOfStruct(sub) => {
            let l = a.as_list::<i32>().value(i);
            (0..l.len()).map(|j| cell(&l, j, Kind::Struct(sub)).unwrap()).collect()
        }
    })
}

/// Puts a value back at a dotted path of `unknown_fields` (`userIdentity.x`, `resources.0.y`).
fn put_path(root: &mut Value, path: &str, v: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (n, p) in parts.iter().enumerate() {
        let last = n + 1 == parts.len();
        cur = match cur {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            Value::Object(m) if last => {
                m.insert(p.to_string(), v);
                return;
            }
            Value::Object(m) => m.entry(p.to_string()).or_insert_with(|| json!({})),
            _ => panic!("path {path} crosses a scalar"),
        };
    }
}

fn rows(batch: &RecordBatch) -> Vec<Value> {
    (0..batch.num_rows())
        .map(|i| {
            // The batch as one struct column; `unknown_fields`, its last column, is outside the tree.
            let whole: ArrayRef = std::sync::Arc::new(arrow_array::StructArray::from(batch.clone()));
            let mut rec = cell(&whole, i, Kind::Struct(CLOUDTRAIL)).unwrap();
            let unknown = batch.column_by_name("unknown_fields").unwrap();
            if let Some(Value::String(s)) = cell(unknown, i, Kind::Str) {
                for (k, v) in serde_json::from_str::<Map<String, Value>>(&s).unwrap() {
                    put_path(&mut rec, &k, v);
                }
            }
            rec
        })
        .collect()
}

fn read_lake(dir: &Path, out: &mut Vec<Value>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_lake(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            let bytes = bytes::Bytes::from(fs::read(&p).unwrap());
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            for b in reader {
                out.extend(rows(&b.unwrap()));
            }
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:/._-]{0,24}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
        Just("quote \" backslash \\ newline \n tab \t".to_string()),
    ]
}

fn boolish() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        Just(json!("true")),
        Just(json!("True")),
        Just(json!("false")),
        Just(json!("FALSE"))
    ]
}

fn time() -> impl Strategy<Value = String> {
    (0i64..4_102_444_800_000, 0..4u8, -12i64..14).prop_map(|(ms, style, off_h)| match style {
        0 => format_rfc3339_millis(ms - ms % 1000).replace(".000", ""),
        1 => format_rfc3339_millis(ms),
        2 => {
            // The same instant written with an offset.
            let local = format_rfc3339_millis(ms + off_h * 3_600_000);
            let sign = if off_h < 0 { '-' } else { '+' };
            format!("{}{sign}{:02}:00", &local[..local.len() - 1], off_h.abs())
        }
        // Microseconds, as some services write: truncated to milliseconds.
        _ => format_rfc3339_millis(ms).replace('Z', "456Z"),
    })
}

fn free_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        text().prop_map(Value::String)
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn maybe<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

prop_compose! {
    fn user_identity()(kind in text(), arn in maybe(text()), account in "[0-9]{12}", created in maybe(time()), mfa in maybe(boolish()),
                       issuer in maybe(text()), extra in maybe(free_json())) -> Value {
        let mut u = json!({"type": kind, "accountId": account, "sessionContext": {"attributes": {}}});
        if let Some(a) = arn { u["arn"] = json!(a); }
        if let Some(c) = created { u["sessionContext"]["attributes"]["creationDate"] = json!(c); }
        if let Some(m) = mfa { u["sessionContext"]["attributes"]["mfaAuthenticated"] = m; }
        if let Some(i) = issuer { u["sessionContext"]["sessionIssuer"] = json!({"arn": i, "type": "Role"}); }
        if let Some(e) = extra { u["inScopeOf"] = e; }
        u
    }
}

prop_compose! {
    fn cloudtrail_record()(t in time(), source in text(), name in text(), region in maybe(text()), agent in maybe(text()),
                           ro in maybe(boolish()), mgmt in maybe(boolish()), ui in maybe(user_identity()),
                           params in maybe(free_json()), resources in maybe(prop::collection::vec((text(), "[0-9]{12}", maybe(text())), 0..3)),
                           error in maybe((text(), text())), newer in maybe(free_json())) -> Value {
        let mut r = json!({"eventVersion": "1.10", "eventTime": t, "eventSource": source, "eventName": name});
        if let Some(x) = region { r["awsRegion"] = json!(x); }
        if let Some(x) = agent { r["userAgent"] = json!(x); }
        if let Some(x) = ro { r["readOnly"] = x; }
        if let Some(x) = mgmt { r["managementEvent"] = x; }
        if let Some(x) = ui { r["userIdentity"] = x; }
        if let Some(x) = params { r["requestParameters"] = x; }
        if let Some(rs) = resources {
            r["resources"] = rs.into_iter().map(|(arn, acct, ty)| {
                let mut o = json!({"ARN": arn, "accountId": acct});
                if let Some(t) = ty { o["type"] = json!(t); }
                o
            }).collect();
        }
        if let Some((c, m)) = error { r["errorCode"] = json!(c); r["errorMessage"] = json!(m); }
        if let Some(x) = newer { r["someFutureField"] = x; }
        r
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn records_survive_the_lake(records in prop::collection::vec(cloudtrail_record(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Value> = records.into_iter().enumerate().map(|(i, mut r)| { r["eventID"] = json!(format!("id-{i:04}")); r }).collect();
        let input = dir.path().join("in.json");
        fs::write(&input, serde_json::to_vec(&json!({"Records": records})).unwrap()).unwrap();
        let lake = LocalLake::new(dir.path().join("lake"));
        let report = ingest_object(&LocalFiles, &ObjectRef::local(&input), &lake, &Config::default()).unwrap();
        prop_assert_eq!(report.records as usize, records.len());
        let mut back = Vec::new();
        read_lake(&dir.path().join("lake/cloudtrail"), &mut back);
        back.sort_by(|a, b| a["eventID"].as_str().cmp(&b["eventID"].as_str()));
        let want: Vec<Value> = records.iter().map(|r| normalise(r, CLOUDTRAIL)).collect();
        prop_assert_eq!(back.len(), want.len());
        for (got, want) in back.iter().zip(&want) {
            prop_assert_eq!(got, want);
        }
    }
}
