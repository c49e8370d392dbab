//! The Athena (Glue) tables over the lake, derived from the Arrow schemas in [`crate::schema`]
//! and [`crate::finding`], so a column is declared once: `trailwatch schema --athena` prints this
//! DDL, and a test holds the stack's Glue tables to the same columns.
//!
//! Every table is partitioned by the lake's layout ([`crate::lake::Partition`]) and uses
//! partition projection, so new partitions need no crawler or `MSCK REPAIR`. `account_id` is an
//! `enum` projection, not `injected`: an injected key makes every query name one account, and the
//! questions an organization asks (top throttled functions, denied calls by principal) span
//! them all. The price is a list of accounts to keep up to date; `unknown` is always in it.

use arrow_schema::{DataType, SchemaRef};

use crate::finding::{findings_schema, FINDINGS_TABLE};
use crate::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE, UNKNOWN};
use crate::schema::{cloudtrail_schema, lambda_invocations_schema, lambda_metrics_schema};

/// A lake table: its name (and folder) and its Arrow schema.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub schema: fn() -> SchemaRef,
    /// One line for the Glue table's description.
    pub about: &'static str,
}

/// Every table in the lake, in the order the DDL prints them.
pub const TABLES: [Table; 4] = [
    Table { name: CLOUDTRAIL_TABLE, schema: cloudtrail_schema, about: "CloudTrail records, one row per event" },
    Table {
        name: LAMBDA_INVOCATIONS_TABLE,
        schema: lambda_invocations_schema,
        about: "Lambda invocations from CloudWatch Logs REPORT and timeout lines",
    },
    Table {
        name: LAMBDA_METRICS_TABLE,
        schema: lambda_metrics_schema,
        about: "AWS/Lambda datapoints from CloudWatch metric streams",
    },
    Table { name: FINDINGS_TABLE, schema: findings_schema, about: "trailwatch findings, one row per finding" },
];

/// The partition columns, in path order; all strings (account ids keep their leading zeros).
pub const PARTITION_KEYS: [&str; 3] = ["account_id", "region", "date"];

/// The Hive type Glue and Athena use for an Arrow type in the lake. Only the types the lake
/// writes are mapped; another one is a bug in this crate, caught by the tests.
pub fn hive_type(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "int".into(),
        DataType::Float64 => "double".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Struct(fields) => {
            let members: Vec<String> =
                fields.iter().map(|f| format!("{}:{}", f.name(), hive_type(f.data_type()))).collect();
            format!("struct<{}>", members.join(","))
        }
        DataType::List(item) | DataType::LargeList(item) => format!("array<{}>", hive_type(item.data_type())),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("map<{},{}>", hive_type(kv[0].data_type()), hive_type(kv[1].data_type()))
            }
            other => panic!("a map's entries must be a key-value struct, not {other}"),
        },
        other => panic!("no Hive type for {other} in the lake's schemas"),
    }
}

/// A table's data columns as (name, Hive type), partition columns not included.
pub fn columns(table: &Table) -> Vec<(String, String)> {
    (table.schema)().fields().iter().map(|f| (f.name().clone(), hive_type(f.data_type()))).collect()
}

/// What the partition projection enumerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Member accounts (12 digits each); `unknown` is added.
    pub accounts: Vec<String>,
    /// Regions with data; `unknown` is added.
    pub regions: Vec<String>,
    /// The first `yyyy-MM-dd` with data; the range ends a day past now, because future-dated
    /// records are kept in the lake (and are exactly what an investigator wants to see).
    pub first_date: String,
}

impl Projection {
    fn with_unknown(values: &[String]) -> String {
        let mut v: Vec<&str> = values.iter().map(String::as_str).collect();
        if !v.contains(&UNKNOWN) {
            v.push(UNKNOWN);
        }
        v.join(",")
    }

    /// The table properties that turn projection on, for a table whose files are under
    /// `location` (`s3://bucket/prefix/table`, no trailing slash).
    pub fn properties(&self, location: &str) -> Vec<(String, String)> {
        [
            ("projection.enabled", "true".to_string()),
            ("projection.account_id.type", "enum".into()),
            ("projection.account_id.values", Self::with_unknown(&self.accounts)),
            ("projection.region.type", "enum".into()),
            ("projection.region.values", Self::with_unknown(&self.regions)),
            ("projection.date.type", "date".into()),
            ("projection.date.format", "yyyy-MM-dd".into()),
            ("projection.date.range", format!("{},NOW+1DAYS", self.first_date)),
            ("projection.date.interval", "1".into()),
            ("projection.date.interval.unit", "DAYS".into()),
            (
                "storage.location.template",
                format!("{location}/account_id=${{account_id}}/region=${{region}}/date=${{date}}"),
            ),
            ("classification", "parquet".into()),
            ("parquet.compression", "ZSTD".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// `CREATE EXTERNAL TABLE` for `table` in `database`, over the lake at `lake_uri`
/// (`s3://bucket/prefix`, with or without a trailing slash).
pub fn create_table(table: &Table, database: &str, lake_uri: &str, projection: &Projection) -> String {
    let location = format!("{}/{}", lake_uri.trim_end_matches('/'), table.name);
    let cols: Vec<String> = columns(table).iter().map(|(n, t)| format!("  `{n}` {t}")).collect();
    let parts: Vec<String> = PARTITION_KEYS.iter().map(|k| format!("  `{k}` string")).collect();
    let props: Vec<String> =
        projection.properties(&location).iter().map(|(k, v)| format!("  '{k}'='{}'", v.replace('\'', "''"))).collect();
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}` (\n{cols}\n)\nCOMMENT '{about}'\nPARTITIONED BY (\n{parts}\n)\nSTORED AS PARQUET\nLOCATION '{location}/'\nTBLPROPERTIES (\n{props}\n);\n",
        name = table.name,
        cols = cols.join(",\n"),
        about = table.about,
        parts = parts.join(",\n"),
        props = props.join(",\n"),
    )
}

/// The DDL of every table, the database first.
pub fn ddl(database: &str, lake_uri: &str, projection: &Projection) -> String {
    let mut out = format!("CREATE DATABASE IF NOT EXISTS `{database}`;\n\n");
    for t in &TABLES {
        out.push_str(&create_table(t, database, lake_uri, projection));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projection() -> Projection {
        Projection {
            accounts: vec!["012345678901".into()],
            regions: vec!["eu-west-1".into(), "us-east-1".into()],
            first_date: "2024-01-01".into(),
        }
    }

    #[test]
    fn types_map_to_hive_including_nested_ones() {
        let ct = columns(&TABLES[0]);
        let get = |cols: &[(String, String)], n: &str| cols.iter().find(|(c, _)| c == n).unwrap().1.clone();
        assert_eq!(get(&ct, "event_time"), "timestamp");
        assert_eq!(get(&ct, "read_only"), "boolean");
        assert_eq!(get(&ct, "resources"), "array<struct<arn:string,account_id:string,type:string>>");
        assert!(get(&ct, "user_identity").starts_with("struct<type:string,principal_id:string,"));
        assert!(get(&ct, "user_identity").contains("session_issuer:struct<type:string,"));
        let metrics = columns(&TABLES[2]);
        assert_eq!(get(&metrics, "dimensions"), "map<string,string>");
        let inv = columns(&TABLES[1]);
        assert_eq!(get(&inv, "billed_duration_ms"), "bigint");
        assert_eq!(get(&inv, "duration_ms"), "double");
        let findings = columns(&TABLES[3]);
        assert_eq!(get(&findings, "top_contributors"), "array<struct<dimension:string,value:string,count:bigint>>");
        assert_eq!(get(&findings, "evidence"), "array<string>");
        // Partition columns live in the path, never in the files.
        for t in &TABLES {
            for k in PARTITION_KEYS {
                assert!(columns(t).iter().all(|(c, _)| c != k), "{} has {k}", t.name);
            }
        }
    }

    #[test]
    fn projection_follows_the_lake_layout() {
        let ddl = create_table(&TABLES[0], "trailwatch", "s3://lake-bucket/lake/", &projection());
        assert!(ddl.contains("LOCATION 's3://lake-bucket/lake/cloudtrail/'"), "{ddl}");
        assert!(ddl.contains(
            "'storage.location.template'='s3://lake-bucket/lake/cloudtrail/account_id=${account_id}/region=${region}/date=${date}'"
        ));
        assert!(ddl.contains("'projection.account_id.values'='012345678901,unknown'"));
        assert!(ddl.contains("'projection.region.values'='eu-west-1,us-east-1,unknown'"));
        assert!(ddl.contains("'projection.date.range'='2024-01-01,NOW+1DAYS'"));
        assert!(ddl.contains("PARTITIONED BY (\n  `account_id` string,\n  `region` string,\n  `date` string\n)"));
        // The same path the writers use.
        let p = crate::lake::Partition::new(Some("012345678901"), Some("eu-west-1"), "2024-02-03".into());
        let template = "cloudtrail/account_id=${account_id}/region=${region}/date=${date}";
        let filled = template
            .replace("${account_id}", &p.account_id)
            .replace("${region}", &p.region)
            .replace("${date}", &p.date);
        assert_eq!(filled, p.dir("cloudtrail"));
    }

    #[test]
    fn every_table_is_in_the_ddl_once() {
        let all = ddl("trailwatch", "s3://b", &projection());
        for t in &TABLES {
            assert_eq!(all.matches(&format!("`trailwatch`.`{}`", t.name)).count(), 1, "{}", t.name);
        }
    }
}
