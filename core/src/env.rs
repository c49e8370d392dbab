//! The Lambdas' configuration from environment variables, read once at start. An empty
//! variable counts as unset, and every error names the variable, so a bad setting fails the
//! start (an init error) with a message that says what to fix.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

/// A setting that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct EnvError {
    /// The variable.
    pub name: String,
    pub message: String,
}

/// A snapshot of environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process's environment (variables whose name or value is not UTF-8 are left out).
    pub fn from_os() -> Env {
        Env::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Given variables, for tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The value of `name`, if set and not empty.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The value of `name`; `what` says what it must name when it is unset or empty.
    pub fn required(&self, name: &str, what: &str) -> Result<&str, EnvError> {
        self.optional(name).ok_or_else(|| EnvError { name: name.into(), message: format!("must name {what}") })
    }

    /// The value of `name`, or `default` when unset or empty.
    pub fn or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.optional(name).unwrap_or(default)
    }

    /// The value of `name` parsed (surrounding blanks ignored), or `default` when unset or empty.
    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, EnvError>
    where
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| EnvError { name: name.into(), message: format!("`{v}` does not parse: {e}") }),
        }
    }

    /// A comma-separated list of `key=value` pairs (blanks around each side ignored, empty
    /// entries skipped), empty when unset. An entry without `=` is an error naming it.
    pub fn pairs(&self, name: &str) -> Result<Vec<(String, String)>, EnvError> {
        let Some(v) = self.optional(name) else { return Ok(Vec::new()) };
        v.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| match entry.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                None => Err(EnvError { name: name.into(), message: format!("`{}` is not KEY=VALUE", entry.trim()) }),
            })
            .collect()
    }

    /// `LAKE_PREFIX` in one form (empty, or ending in one `/`), so `lake`, `lake/` and `/lake/`
    /// mean the same to every Lambda.
    pub fn lake_prefix(&self) -> String {
        crate::lake::normalize_prefix(self.or("LAKE_PREFIX", ""))
    }

    /// `STAGING_DIR`, the local scratch folder (Lambda's `/tmp` by default).
    pub fn staging_dir(&self) -> std::path::PathBuf {
        self.or("STAGING_DIR", "/tmp/trailwatch").into()
    }

    /// `AWS_ENDPOINT_URL_<SERVICE>` (`S3`, `DYNAMODB`, `SNS`, `SQS`): a local endpoint for tests.
    pub fn endpoint(&self, service: &str) -> Option<&str> {
        self.optional(&format!("AWS_ENDPOINT_URL_{service}"))
    }

    /// A lookup function over this snapshot (empty counts as unset), for configuration readers
    /// that take one.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.optional(name).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([
            ("LAKE_BUCKET", "lake"),
            ("LAKE_PREFIX", ""),
            ("MAX_FUTURE_SKEW_MINUTES", " 7 "),
            ("BAD_NUMBER", "five"),
            ("EXPORT_LOG_GROUPS", "exports/a = /aws/lambda/a, exports/b=/aws/lambda/b,"),
            ("BAD_PAIRS", "exports/a=/aws/lambda/a,exports/b"),
        ])
    }

    #[test]
    fn empty_counts_as_unset() {
        let e = env();
        assert_eq!(e.optional("LAKE_BUCKET"), Some("lake"));
        assert_eq!(e.optional("LAKE_PREFIX"), None);
        assert_eq!(e.optional("NOT_SET"), None);
        assert_eq!(e.or("LAKE_PREFIX", "default"), "default");
        assert_eq!(e.or("LAKE_BUCKET", "default"), "lake");
        assert_eq!(e.lookup()("LAKE_BUCKET").as_deref(), Some("lake"));
        assert_eq!(e.lookup()("LAKE_PREFIX"), None);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = env();
        assert_eq!(e.required("LAKE_BUCKET", "the lake bucket"), Ok("lake"));
        let missing = e.required("STATE_TABLE", "the DynamoDB state table").unwrap_err();
        assert_eq!(missing.to_string(), "STATE_TABLE: must name the DynamoDB state table");
        let empty = e.required("LAKE_PREFIX", "a prefix").unwrap_err();
        assert_eq!(empty.name, "LAKE_PREFIX");
        let bad = e.parse::<u64>("BAD_NUMBER", 5).unwrap_err();
        assert_eq!(bad.name, "BAD_NUMBER");
        assert!(bad.to_string().starts_with("BAD_NUMBER: `five` does not parse"), "{bad}");
    }

    #[test]
    fn parses_with_a_default() {
        let e = env();
        assert_eq!(e.parse::<u64>("MAX_FUTURE_SKEW_MINUTES", 5), Ok(7));
        assert_eq!(e.parse::<u64>("NOT_SET", 5), Ok(5));
        assert_eq!(e.parse::<u64>("LAKE_PREFIX", 5), Ok(5));
    }

    #[test]
    fn pairs_are_trimmed_and_a_malformed_entry_is_named() {
        let e = env();
        assert_eq!(
            e.pairs("EXPORT_LOG_GROUPS").unwrap(),
            vec![
                ("exports/a".to_string(), "/aws/lambda/a".to_string()),
                ("exports/b".to_string(), "/aws/lambda/b".to_string())
            ]
        );
        assert_eq!(e.pairs("NOT_SET").unwrap(), vec![]);
        let bad = e.pairs("BAD_PAIRS").unwrap_err();
        assert_eq!(bad.to_string(), "BAD_PAIRS: `exports/b` is not KEY=VALUE");
    }

    #[test]
    fn the_shared_settings_read_one_way() {
        for p in ["lake", "lake/", "/lake/"] {
            assert_eq!(Env::from_pairs([("LAKE_PREFIX", p)]).lake_prefix(), "lake/");
        }
        assert_eq!(env().lake_prefix(), "");
        assert_eq!(env().staging_dir(), std::path::PathBuf::from("/tmp/trailwatch"));
        let e = Env::from_pairs([("AWS_ENDPOINT_URL_SNS", "http://127.0.0.1:5000")]);
        assert_eq!(e.endpoint("SNS"), Some("http://127.0.0.1:5000"));
        assert_eq!(e.endpoint("SQS"), None);
    }

    #[test]
    fn reads_the_process_environment() {
        // PATH is set wherever tests run.
        assert!(Env::from_os().optional("PATH").is_some());
    }
}
