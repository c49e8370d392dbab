//! Sigma rules over the CloudTrail stream: loaded once from a folder, evaluated on every record
//! the statistical detectors see, each match a `rule_match` finding.
//!
//! Why our own evaluator (see `detect/SIGMA.md`): the one near-complete Rust crate never matches
//! `contains` on object-valued fields such as `requestParameters` (three community rules are dead
//! there), allocates on every comparison, and keeps correlation windows in arrival order, where
//! trailwatch closes windows on event time. Here a rule compiles to field tests over the lake's
//! columns, and rules are indexed by the `eventName` they require, so most records meet one or two.

pub mod bundled;
pub mod condition;
pub mod correlation;
pub mod matcher;
pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_norway::Value as Yaml;
use trailwatch_core::finding::{RuleInfo, Severity};

use condition::Expr;
use correlation::{CorrKind, Correlation};
use matcher::{FieldTest, Modifiers, RuleValue};
use record::{Field, Record};

/// What rules take from configuration (`[rules]` in the detect config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Matches of one rule in one account and region less than this many minutes apart (event
    /// time) are one finding: a burst of 500 matching calls is one alert with its evidence.
    pub group_minutes: u32,
    /// Values of `%name%` placeholders for the `expand` modifier.
    pub placeholders: BTreeMap<String, Vec<String>>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig { group_minutes: 60, placeholders: BTreeMap::new() }
    }
}

/// A loaded rule set, shared (cheap to clone with the config that carries it).
#[derive(Debug, Clone, Default)]
pub struct Rules(pub Arc<RuleSet>);

impl Rules {
    pub fn new(set: RuleSet) -> Rules {
        Rules(Arc::new(set))
    }
}

impl std::ops::Deref for Rules {
    type Target = RuleSet;
    fn deref(&self) -> &RuleSet {
        &self.0
    }
}

/// Configs compare equal when they carry the same loaded rules (by their files and ids).
impl PartialEq for Rules {
    fn eq(&self, other: &Rules) -> bool {
        let ids = |r: &Rules| r.0.rules.iter().map(|r| (r.info.file.clone(), r.info.id.clone())).collect::<Vec<_>>();
        Arc::ptr_eq(&self.0, &other.0) || ids(self) == ids(other)
    }
}

/// A rule that could not be loaded, and why; the other rules still run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file, relative to the rules folder.
    pub file: String,
    /// The rule's title, when it got that far.
    pub rule: Option<String>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "{}: rule {r:?}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// One search identifier: a map of field tests that must all hold, or a list of such maps of
/// which one must.
#[derive(Debug, Clone)]
enum Selection {
    All(Vec<FieldTest>),
    Any(Vec<Vec<FieldTest>>),
}

impl Selection {
    fn eval(&self, rec: &dyn Record, fields: &[Field]) -> bool {
        match self {
            Selection::All(t) => t.iter().all(|t| t.eval(rec, fields)),
            Selection::Any(b) => b.iter().any(|t| t.iter().all(|t| t.eval(rec, fields))),
        }
    }
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub info: RuleInfo,
    pub severity: Severity,
    /// Sigma's `name`, which correlation rules refer to.
    pub name: Option<String>,
    /// Whether its matches are findings of their own (not when only a correlation uses it).
    pub generate: bool,
    selections: Vec<Selection>,
    condition: Expr,
}

impl Rule {
    pub fn eval(&self, rec: &dyn Record, fields: &[Field]) -> bool {
        self.condition.eval(&mut |i| self.selections[i].eval(rec, fields))
    }
}

/// Rules and the fields they read.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Every field any rule reads, once; [`Field::slot`] is the index here.
    pub fields: Vec<Field>,
    /// Rules by the lowercased `eventName` they require.
    by_name: HashMap<String, Vec<usize>>,
    /// Rules that do not pin an `eventName`: evaluated on every record.
    always: Vec<usize>,
    pub errors: Vec<LoadError>,
    /// Files and documents skipped because their log source is not CloudTrail.
    pub other_logsource: usize,
    pub correlations: Vec<Correlation>,
    /// Correlations by the rule (index) they refer to.
    by_rule: HashMap<usize, Vec<usize>>,
}

/// A record's match of a rule a correlation refers to: the correlation, the rule (its place in
/// the correlation's `rules`), the record's
/// group (its group-by values) and, for `value_count`, a hash of the counted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrHit {
    pub corr: u32,
    pub rule: u32,
    pub group: String,
    pub value: u64,
}

impl RuleSet {
    /// Every `.yml`/`.yaml` file below `dir` (sorted, so finding order is stable). Rules that
    /// cannot be loaded are listed in `errors`; an unreadable folder is an error.
    pub fn load_dir(dir: &Path, cfg: &RulesConfig) -> std::io::Result<RuleSet> {
        let mut set = RuleSet::default();
        set.add_dir(dir, cfg)?;
        set.finish();
        Ok(set)
    }

    /// trailwatch's own pack, compiled in.
    pub fn add_bundled(&mut self, cfg: &RulesConfig) {
        for (file, text) in bundled::PACK {
            self.add_yaml(text, file, cfg);
        }
    }

    /// Rules from a comma-separated list of sources, as the detect Lambda's `RULES` names them:
    /// `bundled` (trailwatch's pack), `s3://bucket/prefix` (every `.yml`/`.yaml` object below it,
    /// read through `src`), or `none`. A source that cannot be read is an error (so a deployment
    /// with a wrong location fails to start); a rule that cannot be loaded is in `errors`.
    pub fn from_spec(
        spec: &str,
        src: &dyn trailwatch_core::store::ObjectSource,
        cfg: &RulesConfig,
    ) -> Result<RuleSet, String> {
        let mut set = RuleSet::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "bundled" => set.add_bundled(cfg),
                loc => {
                    let rest = loc
                        .strip_prefix("s3://")
                        .ok_or_else(|| format!("rules source {loc:?}: expected bundled, none or s3://bucket/prefix"))?;
                    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                    let objs = src.list(bucket, prefix).map_err(|e| format!("rules source {loc}: {e}"))?;
                    for o in objs.iter().filter(|o| o.key.ends_with(".yml") || o.key.ends_with(".yaml")) {
                        let mut text = String::new();
                        src.open(o)
                            .and_then(|mut b| {
                                std::io::Read::read_to_string(&mut b.reader, &mut text).map_err(|e| {
                                    trailwatch_core::store::StoreError {
                                        op: "read",
                                        uri: o.uri(),
                                        message: e.to_string(),
                                        retryable: true,
                                    }
                                })
                            })
                            .map_err(|e| format!("rules source {loc}: {e}"))?;
                        set.add_yaml(&text, &o.uri(), cfg);
                    }
                }
            }
        }
        set.finish();
        Ok(set)
    }

    /// Adds the rules below `dir`; their `file` starts with the folder's own name
    /// (`trailwatch/aws_x.yml` for `--rules rules/trailwatch`), so rules of several folders stay apart.
    pub fn add_dir(&mut self, dir: &Path, cfg: &RulesConfig) -> std::io::Result<()> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        let base = dir.parent().unwrap_or(dir);
        for path in files {
            let rel = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            match std::fs::read_to_string(&path) {
                Ok(text) => self.add_yaml(&text, &rel, cfg),
                Err(e) => self.errors.push(LoadError { file: rel, rule: None, message: e.to_string() }),
            }
        }
        Ok(())
    }

    /// Resolves correlations' references (by `name` or `id`, to rules of any file loaded so
    /// far); one that names a rule not loaded is reported and dropped. Call after the last folder.
    pub fn finish(&mut self) {
        let mut kept = Vec::new();
        for mut c in std::mem::take(&mut self.correlations) {
            if !c.rules.is_empty() {
                kept.push(c);
                continue;
            }
            let found: Result<Vec<usize>, String> = c
                .refs
                .iter()
                .map(|r| {
                    self.rules
                        .iter()
                        .position(|x| x.name.as_deref() == Some(r.as_str()) || x.info.id == *r)
                        .ok_or_else(|| format!("correlation: no loaded rule is named {r:?} (by name or id)"))
                })
                .collect();
            match found {
                Ok(rules) => {
                    c.rules = rules;
                    kept.push(c);
                }
                Err(message) => {
                    self.errors.push(LoadError { file: c.info.file.clone(), rule: Some(c.info.title.clone()), message })
                }
            }
        }
        self.correlations = kept;
        self.by_rule.clear();
        for (ci, c) in self.correlations.iter().enumerate() {
            for &r in &c.rules {
                self.by_rule.entry(r).or_default().push(ci);
            }
        }
        for (ri, r) in self.rules.iter_mut().enumerate() {
            r.generate = self.by_rule.get(&ri).is_none_or(|cs| cs.iter().any(|&c| self.correlations[c].generate));
        }
    }

    /// The correlation marks of a record that matched `matched` (rule indices).
    pub fn correlation_hits(&self, rec: &dyn Record, matched: &[usize], out: &mut Vec<CorrHit>) {
        out.clear();
        for &r in matched {
            for &ci in self.by_rule.get(&r).into_iter().flatten() {
                let c = &self.correlations[ci];
                let first = |slot: usize| {
                    let mut v = None;
                    rec.visit(&self.fields[slot], &mut |l| {
                        v = Some(l.text().to_string());
                        true
                    });
                    v
                };
                let value = match c.kind {
                    // A record without the counted field is not counted.
                    CorrKind::ValueCount(slot) => match first(slot) {
                        Some(v) => crate::stats::hash_str(&v),
                        None => continue,
                    },
                    _ => 0,
                };
                let mut group = String::new();
                for (i, &g) in c.group_by.iter().enumerate() {
                    if i > 0 {
                        group.push_str(", ");
                    }
                    group.push_str(&self.fields[g].name);
                    group.push('=');
                    rec.visit(&self.fields[g], &mut |l| {
                        group.push_str(l.text());
                        true
                    });
                }
                // The rule's place in the correlation's list, not in the rule set: saved marks stay
                // right when the rule set changes between runs.
                let at = c.rules.iter().position(|&x| x == r).unwrap_or(0);
                out.push(CorrHit { corr: ci as u32, rule: at as u32, group, value });
            }
        }
    }

    /// The rules each row of a lake CloudTrail batch matches (`rules test`, tests).
    pub fn matches_batch(&self, batch: &arrow_array::RecordBatch) -> Vec<Vec<usize>> {
        let view = record::BatchView::new(batch, &self.fields);
        let names = batch.column_by_name("event_name").and_then(|c| crate::strs::Strs::of(c.as_ref()));
        (0..batch.num_rows())
            .map(|i| {
                let name = names.and_then(|n| n.get(i)).unwrap_or("");
                let mut out = Vec::new();
                self.matches(&view.row(i), name, &mut out);
                out
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds the rules of one file (several YAML documents are several rules).
    pub fn add_yaml(&mut self, text: &str, file: &str, cfg: &RulesConfig) {
        for doc in serde_norway::Deserializer::from_str(text) {
            let doc = match Yaml::deserialize(doc) {
                Ok(d) => d,
                Err(e) => {
                    self.errors.push(LoadError { file: file.into(), rule: None, message: format!("YAML: {e}") });
                    return;
                }
            };
            if doc.is_null() {
                continue;
            }
            let title = doc.get("title").and_then(Yaml::as_str).map(str::to_string);
            match self.compile(&doc, file, cfg) {
                Ok(Some(rule)) => {
                    let i = self.rules.len();
                    match self.index_names(&rule) {
                        Some(names) => {
                            for n in names {
                                self.by_name.entry(n).or_default().push(i);
                            }
                        }
                        None => self.always.push(i),
                    }
                    self.rules.push(rule);
                }
                Ok(None) => {}
                Err(message) => self.errors.push(LoadError { file: file.into(), rule: title, message }),
            }
        }
    }

    /// Refuses an id already loaded (a changed copy of a rule needs an id of its own), naming the
    /// file that has it.
    fn unique(&self, id: &str) -> Result<(), String> {
        let infos = self.rules.iter().map(|r| &r.info).chain(self.correlations.iter().map(|c| &c.info));
        match infos.into_iter().find(|i| i.id == id) {
            Some(other) => Err(format!(
                "id {id} is already the id of a rule in {}: give a changed copy an id of its own",
                other.file
            )),
            None => Ok(()),
        }
    }

    /// The lake column paths the rules read (lake names, root first), to decode with the rest.
    pub fn columns(&self) -> Vec<Vec<&'static str>> {
        let mut v: Vec<Vec<&'static str>> = self.fields.iter().flat_map(Field::columns).collect();
        // Values of the wrong type, and members the schema does not know, are only there.
        if !self.fields.is_empty() {
            v.push(vec![trailwatch_core::schema::UNKNOWN_FIELDS]);
        }
        v.sort();
        v.dedup();
        v
    }

    /// Rules (indices) matching `rec`, whose `eventName` is `event_name`, in rule order.
    pub fn matches(&self, rec: &dyn Record, event_name: &str, out: &mut Vec<usize>) {
        out.clear();
        let mut buf = [0u8; 96];
        let named = if event_name.len() <= buf.len() {
            let b = &mut buf[..event_name.len()];
            b.copy_from_slice(event_name.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).ok().and_then(|k| self.by_name.get(k))
        } else {
            self.by_name.get(&event_name.to_ascii_lowercase())
        };
        for &i in named.into_iter().flatten().chain(&self.always) {
            if self.rules[i].eval(rec, &self.fields) {
                out.push(i);
            }
        }
        out.sort_unstable();
    }

    fn slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.fields.iter().position(|f| f.name == name) {
            return i;
        }
        let mut f = Field::resolve(name);
        let i = self.fields.len();
        f.slot = i;
        self.fields.push(f);
        i
    }

    /// The lowercased event names a rule requires, when every match needs one of them.
    fn index_names(&self, rule: &Rule) -> Option<Vec<String>> {
        let name_slot = self.fields.iter().position(|f| f.name == "eventName")?;
        let of_tests = |tests: &[FieldTest]| -> Option<Vec<String>> {
            tests
                .iter()
                .find(|t| t.field == name_slot)
                .and_then(FieldTest::exact_values)
                .map(|v| v.into_iter().map(str::to_string).collect())
        };
        let of_sel = |s: usize| match &rule.selections[s] {
            Selection::All(t) => of_tests(t),
            Selection::Any(branches) => {
                branches.iter().map(|b| of_tests(b)).collect::<Option<Vec<_>>>().map(|v| v.concat())
            }
        };
        fn names(e: &Expr, of_sel: &dyn Fn(usize) -> Option<Vec<String>>) -> Option<Vec<String>> {
            match e {
                Expr::Sel(i) => of_sel(*i),
                // Any conjunct that pins the name pins it for the whole.
                Expr::And(v) => v.iter().find_map(|e| names(e, of_sel)),
                // Every alternative must pin one.
                Expr::Or(v) => v.iter().map(|e| names(e, of_sel)).collect::<Option<Vec<_>>>().map(|v| v.concat()),
                Expr::Not(_) => None,
            }
        }
        names(&rule.condition, &of_sel)
    }

    fn compile(&mut self, doc: &Yaml, file: &str, cfg: &RulesConfig) -> Result<Option<Rule>, String> {
        let (info, severity) = info_of(doc, file)?;
        if let Some(c) = doc.get("correlation") {
            let c = correlation::compile(c, info, severity, &mut |n| self.slot(n))?;
            self.unique(&c.info.id)?;
            self.correlations.push(c);
            return Ok(None);
        }
        let ls = doc.get("logsource").ok_or("no logsource")?;
        let is = |k: &str, want: &str| ls.get(k).and_then(Yaml::as_str).is_some_and(|v| v.eq_ignore_ascii_case(want));
        if !(is("product", "aws") && is("service", "cloudtrail")) {
            self.other_logsource += 1;
            return Ok(None);
        }
        self.unique(&info.id)?;
        let det = doc.get("detection").and_then(Yaml::as_mapping).ok_or("no detection")?;
        let mut names = Vec::new();
        let mut selections = Vec::new();
        let mut condition = None;
        for (k, v) in det {
            let k = k.as_str().ok_or("a detection key is not text")?;
            match k {
                "condition" => condition = Some(v),
                // Legacy Sigma: a timeframe correlated several records (`a and b` over 5 minutes),
                // which no single record can match.
                "timeframe" => {
                    return Err("timeframe is legacy Sigma for a correlation of several records: write a Sigma correlation rule instead".into())
                }
                _ => {
                    let sel = self.selection(v, cfg).map_err(|e| format!("{k}: {e}"))?;
                    names.push(k.to_string());
                    selections.push(sel);
                }
            }
        }
        let condition = match condition.ok_or("no condition")? {
            Yaml::String(s) => condition::parse(s, &names)?,
            Yaml::Sequence(v) => Expr::Or(
                v.iter()
                    .map(|c| {
                        c.as_str()
                            .ok_or("a condition is not text".to_string())
                            .and_then(|s| condition::parse(s, &names))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err("the condition is not text".into()),
        };
        let name = doc.get("name").and_then(Yaml::as_str).map(str::to_string);
        Ok(Some(Rule { info, severity, name, generate: true, selections, condition }))
    }

    fn selection(&mut self, v: &Yaml, cfg: &RulesConfig) -> Result<Selection, String> {
        match v {
            Yaml::Mapping(m) => Ok(Selection::All(self.tests(m, cfg)?)),
            Yaml::Sequence(items) if !items.is_empty() && items.iter().all(Yaml::is_mapping) => Ok(Selection::Any(
                items.iter().map(|i| self.tests(i.as_mapping().expect("checked"), cfg)).collect::<Result<_, _>>()?,
            )),
            Yaml::Sequence(_) | Yaml::String(_) => {
                Err("keyword searches (values without a field) are not supported: name the CloudTrail field".into())
            }
            _ => Err("a search identifier must be a map of fields or a list of such maps".into()),
        }
    }

    fn tests(&mut self, m: &serde_norway::Mapping, cfg: &RulesConfig) -> Result<Vec<FieldTest>, String> {
        let mut out = Vec::new();
        for (k, v) in m {
            let key = k.as_str().ok_or("a field name is not text")?;
            let mut parts = key.split('|');
            let field = parts.next().unwrap_or_default();
            if field.is_empty() {
                return Err(format!("{key:?}: keyword searches are not supported: name the CloudTrail field"));
            }
            let mods: Vec<&str> = parts.collect();
            let mods = Modifiers::parse(&mods).map_err(|e| format!("{key}: {e}"))?;
            let values = match v {
                Yaml::Sequence(s) => s.iter().map(rule_value).collect::<Result<Vec<_>, _>>(),
                v => rule_value(v).map(|x| vec![x]),
            }
            .map_err(|e| format!("{key}: {e}"))?;
            let slot = self.slot(field);
            let t = matcher::compile(slot, &mods, &values, &cfg.placeholders, &mut |n| self.slot(n))
                .map_err(|e| format!("{key}: {e}"))?;
            out.push(t);
        }
        Ok(out)
    }
}

/// A rule's metadata and severity (from `level`; medium when it has none).
fn info_of(doc: &Yaml, file: &str) -> Result<(RuleInfo, Severity), String> {
    let title = doc.get("title").and_then(Yaml::as_str).ok_or("no title")?.to_string();
    let id = doc.get("id").and_then(Yaml::as_str).map_or_else(|| title.clone(), str::to_string);
    let level = doc.get("level").and_then(Yaml::as_str).unwrap_or("medium").to_ascii_lowercase();
    let severity = match level.as_str() {
        "informational" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => return Err(format!("level {other:?} is not one of informational, low, medium, high, critical")),
    };
    let list = |k: &str| -> Vec<String> {
        match doc.get(k) {
            Some(Yaml::Sequence(s)) => s.iter().filter_map(scalar_text).collect(),
            Some(v) => scalar_text(v).into_iter().collect(),
            None => vec![],
        }
    };
    let info = RuleInfo {
        id,
        title,
        level,
        description: doc.get("description").and_then(Yaml::as_str).unwrap_or("").trim().to_string(),
        falsepositives: list("falsepositives"),
        references: list("references"),
        tags: list("tags"),
        file: file.to_string(),
    };
    Ok((info, severity))
}

fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn rule_value(v: &Yaml) -> Result<RuleValue, String> {
    match v {
        Yaml::Null => Ok(RuleValue::Null),
        v => scalar_text(v).map(RuleValue::Text).ok_or_else(|| "values must be text, numbers, booleans or null".into()),
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
