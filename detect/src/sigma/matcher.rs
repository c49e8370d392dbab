//! Sigma values and their modifiers, compiled once when a rule loads: plain text compared without
//! allocating (ASCII case folding, an Aho-Corasick searcher for `contains`), wildcards and `re` as
//! regexes, `cidr` as a network, `base64`/`base64offset`/`expand` rewritten into plain values.
//!
//! Matching follows the Sigma specification: case-insensitive unless `cased` (or `re`), `*` and
//! `?` are wildcards unless escaped with `\`, a list of values matches when any does (all of them
//! with `all`), and a test on an absent field is false (only `null` and `exists: false` match it).

use std::collections::BTreeMap;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use regex::Regex;

use super::record::{Field, Leaf, Record};

/// How a text value is compared with a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Exact,
    Contains,
    StartsWith,
    EndsWith,
}

/// A numeric comparison (`gt`, `gte`, `lt`, `lte`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Plain text to find, folded once.
#[derive(Debug, Clone)]
pub struct Needle {
    /// Lowercased unless `cased`.
    text: String,
    cased: bool,
    ascii: bool,
    /// Case-insensitive ASCII `contains`.
    finder: Option<AhoCorasick>,
}

impl Needle {
    fn new(text: &str, cased: bool, op: Op) -> Result<Needle, String> {
        let ascii = text.is_ascii();
        let folded = if cased { text.to_string() } else { text.to_lowercase() };
        let finder = if !cased && ascii && op == Op::Contains {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build([folded.as_str()])
                    .map_err(|e| format!("value {text:?}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Needle { text: folded, cased, ascii, finder })
    }

    fn test(&self, op: Op, hay: &str) -> bool {
        let t = self.text.as_str();
        if self.cased {
            return apply(op, hay, t);
        }
        if !self.ascii {
            return apply(op, &hay.to_lowercase(), t);
        }
        let (h, n) = (hay.as_bytes(), t.as_bytes());
        match op {
            Op::Exact => h.eq_ignore_ascii_case(n),
            Op::StartsWith => h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n),
            Op::EndsWith => h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n),
            Op::Contains => self.finder.as_ref().is_some_and(|f| f.is_match(hay)),
        }
    }
}

fn apply(op: Op, hay: &str, t: &str) -> bool {
    match op {
        Op::Exact => hay == t,
        Op::Contains => hay.contains(t),
        Op::StartsWith => hay.starts_with(t),
        Op::EndsWith => hay.ends_with(t),
    }
}

/// One compiled value of a field test.
#[derive(Debug, Clone)]
pub enum Pattern {
    Text(Op, Needle),
    Regex(Regex),
    /// A regex and text every match contains, tested first (a substring search is far cheaper
    /// than the regex on the many values that do not contain it).
    RegexWith(String, Regex),
    Cidr(IpAddr, u8),
    Num(Cmp, f64),
    /// The value of another field (its slot), compared as the operation says, case-sensitively.
    FieldRef(usize, Op),
}

impl Pattern {
    fn matches(&self, leaf: &Leaf, rec: &dyn Record, fields: &[Field]) -> bool {
        let hay = leaf.text();
        match self {
            Pattern::Text(op, n) => n.test(*op, hay),
            Pattern::Regex(r) => r.is_match(hay),
            Pattern::RegexWith(lit, r) => hay.contains(lit.as_str()) && r.is_match(hay),
            Pattern::Cidr(net, bits) => hay.parse::<IpAddr>().is_ok_and(|ip| in_network(ip, *net, *bits)),
            Pattern::Num(cmp, x) => hay.trim().parse::<f64>().is_ok_and(|v| match cmp {
                Cmp::Gt => v > *x,
                Cmp::Gte => v >= *x,
                Cmp::Lt => v < *x,
                Cmp::Lte => v <= *x,
            }),
            Pattern::FieldRef(slot, op) => rec.visit(&fields[*slot], &mut |o| apply(*op, hay, o.text())) == Some(true),
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// One `field|modifiers: values` item of a selection.
#[derive(Debug, Clone)]
pub struct FieldTest {
    /// The field's slot in the rule set.
    pub field: usize,
    pub patterns: Vec<Pattern>,
    /// `all`: every value must match (else any).
    pub all: bool,
    /// The values included `null`: an absent field matches.
    pub null: bool,
    /// `exists`: whether the field must be present.
    pub exists: Option<bool>,
}

impl FieldTest {
    pub fn eval(&self, rec: &dyn Record, fields: &[Field]) -> bool {
        let field = &fields[self.field];
        if let Some(want) = self.exists {
            return rec.visit(field, &mut |_| true).is_some() == want;
        }
        if self.all && !self.patterns.is_empty() {
            return self.patterns.iter().all(|p| rec.visit(field, &mut |l| p.matches(l, rec, fields)) == Some(true));
        }
        match rec.visit(field, &mut |l| self.patterns.iter().any(|p| p.matches(l, rec, fields))) {
            None => self.null,
            Some(hit) => hit,
        }
    }

    /// The exact values this test requires of its field, when that is all it does (no modifier,
    /// no wildcard, no `null`): the rule index keys rules by `eventName` this way.
    pub fn exact_values(&self) -> Option<Vec<&str>> {
        if self.all || self.null || self.exists.is_some() || self.patterns.is_empty() {
            return None;
        }
        self.patterns
            .iter()
            .map(|p| match p {
                Pattern::Text(Op::Exact, n) if !n.cased && n.ascii => Some(n.text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A field name with its modifiers, as a selection's key writes them (`userAgent|contains|all`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub op: Option<Op>,
    pub all: bool,
    pub cased: bool,
    pub re: bool,
    pub re_flags: String,
    pub cidr: bool,
    pub base64: bool,
    pub base64offset: bool,
    pub expand: bool,
    pub fieldref: bool,
    pub exists: bool,
    pub cmp: Option<Cmp>,
}

impl Modifiers {
    pub fn parse(mods: &[&str]) -> Result<Modifiers, String> {
        let mut m = Modifiers::default();
        for &x in mods {
            let op = |m: &mut Modifiers, op: Op| {
                if m.op.is_some_and(|o| o != op) {
                    return Err(format!("modifiers {} conflict", mods.join("|")));
                }
                m.op = Some(op);
                Ok(())
            };
            match x {
                "contains" => op(&mut m, Op::Contains)?,
                "startswith" => op(&mut m, Op::StartsWith)?,
                "endswith" => op(&mut m, Op::EndsWith)?,
                "all" => m.all = true,
                "cased" => m.cased = true,
                "re" => m.re = true,
                "i" | "ignorecase" => m.re_flags.push('i'),
                "m" | "multiline" => m.re_flags.push('m'),
                "s" | "dotall" => m.re_flags.push('s'),
                "cidr" => m.cidr = true,
                "base64" => m.base64 = true,
                "base64offset" => m.base64offset = true,
                "expand" => m.expand = true,
                "fieldref" => m.fieldref = true,
                "exists" => m.exists = true,
                "gt" => m.cmp = Some(Cmp::Gt),
                "gte" => m.cmp = Some(Cmp::Gte),
                "lt" => m.cmp = Some(Cmp::Lt),
                "lte" => m.cmp = Some(Cmp::Lte),
                "" => return Err("an empty modifier".into()),
                other => return Err(format!("modifier {other:?} is not supported (CloudTrail rules do not need it)")),
            }
        }
        if !m.re_flags.is_empty() && !m.re {
            return Err("the regex flags i, m and s need the re modifier".into());
        }
        Ok(m)
    }
}

/// A value as the rule writes it: text (numbers and booleans as YAML writes them), or `null`.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleValue {
    Text(String),
    Null,
}

/// Compiles one field's values. `field_slot` interns a field name (for `fieldref`).
pub fn compile(
    field: usize,
    mods: &Modifiers,
    values: &[RuleValue],
    placeholders: &BTreeMap<String, Vec<String>>,
    field_slot: &mut dyn FnMut(&str) -> usize,
) -> Result<FieldTest, String> {
    let mut test = FieldTest { field, patterns: Vec::new(), all: mods.all, null: false, exists: None };
    if mods.exists {
        test.exists = match values {
            [RuleValue::Text(t)] if t.eq_ignore_ascii_case("true") => Some(true),
            [RuleValue::Text(t)] if t.eq_ignore_ascii_case("false") => Some(false),
            _ => return Err("exists takes true or false".into()),
        };
        return Ok(test);
    }
    let mut texts = Vec::new();
    for v in values {
        match v {
            RuleValue::Null if mods.op.is_none() && !mods.re && !mods.cidr && !mods.fieldref => test.null = true,
            RuleValue::Null => return Err("null cannot take modifiers".into()),
            RuleValue::Text(t) if mods.expand => texts.extend(expand(t, placeholders)?),
            RuleValue::Text(t) => texts.push(t.clone()),
        }
    }
    if mods.base64 || mods.base64offset {
        texts = texts
            .iter()
            .flat_map(|t| if mods.base64offset { base64_offsets(t) } else { vec![b64(t.as_bytes())] })
            .collect();
    }
    let op = mods.op.unwrap_or(Op::Exact);
    for t in &texts {
        let p = if mods.fieldref {
            Pattern::FieldRef(field_slot(t), op)
        } else if mods.re {
            let flags = if mods.re_flags.is_empty() { String::new() } else { format!("(?{})", mods.re_flags) };
            Regex::new(&format!("{flags}{t}")).map_err(|e| format!("regex {t:?}: {e}"))?;
            let r = Regex::new(&format!("{flags}{}", search_form(t))).map_err(|e| format!("regex {t:?}: {e}"))?;
            match required_literal(t).filter(|_| !mods.re_flags.contains('i')) {
                Some(lit) => Pattern::RegexWith(lit, r),
                None => Pattern::Regex(r),
            }
        } else if mods.cidr {
            let (net, bits) = parse_cidr(t)?;
            Pattern::Cidr(net, bits)
        } else if let Some(cmp) = mods.cmp {
            Pattern::Num(cmp, t.trim().parse().map_err(|_| format!("{t:?} is not a number"))?)
        } else {
            text_pattern(t, op, mods.cased || mods.base64 || mods.base64offset)?
        };
        test.patterns.push(p);
    }
    if test.patterns.is_empty() && !test.null {
        return Err("no values".into());
    }
    Ok(test)
}

/// A plain value: wildcards (`*`, `?`) unless escaped make it a regex; otherwise a needle.
fn text_pattern(t: &str, op: Op, cased: bool) -> Result<Pattern, String> {
    let mut plain = String::new();
    let mut re = String::new();
    let mut wild = false;
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                let e = chars.next().expect("peeked");
                plain.push(e);
                re.push_str(&regex::escape(&e.to_string()));
            }
            '*' => {
                wild = true;
                re.push_str(".*");
            }
            '?' => {
                wild = true;
                re.push('.');
            }
            c => {
                plain.push(c);
                re.push_str(&regex::escape(&c.to_string()));
            }
        }
    }
    if !wild {
        return Ok(Pattern::Text(op, Needle::new(&plain, cased, op)?));
    }
    let (pre, post) = match op {
        Op::Exact => ("^", "$"),
        Op::Contains => ("", ""),
        Op::StartsWith => ("^", ""),
        Op::EndsWith => ("", "$"),
    };
    let flags = if cased { "(?s)" } else { "(?si)" };
    Regex::new(&format!("{flags}{pre}{re}{post}")).map(Pattern::Regex).map_err(|e| format!("value {t:?}: {e}"))
}

/// The same search without a leading or trailing `.*`/`.+`: for "does it match anywhere" `.+x`
/// is `.x` and `.*x` is `x`, and without them the regex engine finds the literal inside with a
/// fast substring search instead of running its automaton over every character (the community
/// rule `.+:assumed-role/aws:.+` runs on every record).
fn search_form(re: &str) -> String {
    let mut r = re;
    let mut head = "";
    for (lead, keep) in [(".*?", ""), (".+?", "."), (".*", ""), (".+", ".")] {
        if let Some(rest) = r.strip_prefix(lead) {
            r = rest;
            head = keep;
            break;
        }
    }
    let mut tail = "";
    for (trail, keep) in [(".*", ""), (".+", ".")] {
        if let Some(rest) = r.strip_suffix(trail) {
            // Not an escaped dot: an even number of backslashes before it.
            let slashes = rest.len() - rest.trim_end_matches('\\').len();
            if slashes % 2 == 0 && !rest.is_empty() {
                r = rest;
                tail = keep;
            }
            break;
        }
    }
    // A `|` at the top level would bind the kept ends to one alternative only: leave such
    // patterns (and anything with a lone end) as written.
    if r.contains('|') || r.is_empty() {
        return re.to_string();
    }
    format!("{head}{r}{tail}")
}

/// The longest run of plain characters every match of `re` must contain, for patterns simple
/// enough to be sure of it: no alternation, groups, classes, counted or optional repetition, and
/// no escapes. A `*` or `+` takes the character before it out of the run.
fn required_literal(re: &str) -> Option<String> {
    if re.contains(['|', '(', ')', '[', ']', '{', '}', '?', '\\']) {
        return None;
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '-' | '_' | '@' | '=' | ',' | ' ' | '%');
    let chars: Vec<char> = re.chars().collect();
    let (mut best, mut run) = (String::new(), String::new());
    for (i, &c) in chars.iter().enumerate() {
        let quantified = matches!(chars.get(i + 1), Some('*' | '+'));
        if plain(c) && !quantified {
            run.push(c);
            continue;
        }
        if run.len() > best.len() {
            best = std::mem::take(&mut run);
        }
        run.clear();
    }
    if run.len() > best.len() {
        best = run;
    }
    (best.len() >= 3).then_some(best)
}

fn parse_cidr(t: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{t:?} is not a network (a.b.c.d/n or an IPv6 prefix)");
    let (ip, bits) = t.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
    let bits: u8 = bits.trim().parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad());
    }
    Ok((ip, bits))
}

/// `%name%` placeholders replaced by each of their configured values.
fn expand(t: &str, placeholders: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, String> {
    let Some(start) = t.find('%') else { return Ok(vec![t.to_string()]) };
    let Some(len) = t[start + 1..].find('%') else { return Ok(vec![t.to_string()]) };
    let name = &t[start + 1..start + 1 + len];
    let values = placeholders.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        format!(
            "placeholder %{name}% has no values: set them in the configuration ([rules.placeholders] {name} = [...])"
        )
    })?;
    let rest = expand(&t[start + len + 2..], placeholders)?;
    Ok(values.iter().flat_map(|v| rest.iter().map(move |r| format!("{}{v}{r}", &t[..start]))).collect())
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The three encodings of `t` at each offset in a base64 stream, trimmed to the characters that
/// do not depend on what surrounds it (as the specification and pySigma define `base64offset`).
fn base64_offsets(t: &str) -> Vec<String> {
    let (starts, ends) = ([0usize, 2, 3], [0usize, 3, 2]);
    (0..3)
        .map(|i| {
            let mut v = vec![b' '; i];
            v.extend_from_slice(t.as_bytes());
            let e = b64(&v);
            let end = e.len() - ends[(t.len() + i) % 3];
            e[starts[i]..end.max(starts[i])].to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::record::JsonRecord;

    fn test_of(field: &str, mods: &[&str], values: &[&str], rec: serde_json::Value) -> bool {
        let mut fields = vec![Field::resolve(field)];
        let m = Modifiers::parse(mods).unwrap();
        let vals: Vec<RuleValue> =
            values.iter().map(|v| if *v == "~" { RuleValue::Null } else { RuleValue::Text(v.to_string()) }).collect();
        let mut slot = |n: &str| {
            fields.push(Field::resolve(n));
            fields.len() - 1
        };
        let t = compile(0, &m, &vals, &BTreeMap::new(), &mut slot).unwrap();
        for (i, f) in fields.iter_mut().enumerate() {
            f.slot = i;
        }
        t.eval(&JsonRecord(&rec), &fields)
    }

    #[test]
    fn modifiers_match_as_the_specification_says() {
        use serde_json::json;
        let r = json!({"eventName": "PutBucketPolicy", "userAgent": "aws-cli/2.0 Boto3/1.2",
            "requestParameters": {"bucketName": "b", "policy": {"Effect": "Allow"}, "ids": ["i-1", "i-2"], "enable": false},
            "sourceIPAddress": "10.1.2.3", "errorCode": null});
        assert!(test_of("eventName", &[], &["putbucketpolicy"], r.clone()), "case-insensitive by default");
        assert!(!test_of("eventName", &["cased"], &["putbucketpolicy"], r.clone()));
        assert!(test_of("eventName", &[], &["Put*Policy"], r.clone()));
        assert!(test_of("eventName", &[], &["PutBucketP?licy"], r.clone()));
        assert!(!test_of("eventName", &[], &["Put\\*Policy"], r.clone()), "escaped wildcard is literal");
        assert!(test_of("userAgent", &["contains"], &["BOTO3"], r.clone()));
        assert!(test_of("userAgent", &["contains", "all"], &["aws-cli", "boto3"], r.clone()));
        assert!(!test_of("userAgent", &["contains", "all"], &["aws-cli", "terraform"], r.clone()));
        assert!(test_of("userAgent", &["startswith"], &["AWS-CLI"], r.clone()));
        assert!(test_of("userAgent", &["endswith"], &["/1.2"], r.clone()));
        assert!(test_of("requestParameters.ids", &[], &["i-2"], r.clone()), "any element of an array");
        assert!(test_of("requestParameters", &["contains"], &["\"effect\":\"allow\""], r.clone()), "objects as JSON");
        assert!(test_of("requestParameters.enable", &[], &["false"], r.clone()), "booleans as text");
        assert!(test_of("errorCode", &[], &["~"], r.clone()), "null matches a null field");
        assert!(test_of("errorMessage", &[], &["~"], r.clone()), "null matches an absent field");
        assert!(!test_of("errorMessage", &["contains"], &["x"], r.clone()), "a test on an absent field is false");
        assert!(test_of("sourceIPAddress", &["cidr"], &["10.0.0.0/8"], r.clone()));
        assert!(!test_of("sourceIPAddress", &["cidr"], &["192.168.0.0/16"], r.clone()));
        assert!(test_of("userAgent", &["re"], &["^aws-cli/\\d"], r.clone()));
        assert!(!test_of("userAgent", &["re"], &["^AWS-CLI"], r.clone()), "re is case-sensitive");
        assert!(test_of("userAgent", &["re", "i"], &["^AWS-CLI"], r.clone()));
        assert!(test_of("requestParameters.bucketName", &["exists"], &["true"], r.clone()));
        assert!(test_of("requestParameters.nope", &["exists"], &["false"], r.clone()));
        assert!(test_of("requestParameters.bucketName", &["fieldref"], &["requestParameters.bucketName"], r.clone()));
        assert!(!test_of("eventName", &["fieldref"], &["userAgent"], r.clone()));
    }

    #[test]
    fn regexes_lose_only_ends_that_change_nothing() {
        assert_eq!(search_form(".+:assumed-role/aws:.+"), ".:assumed-role/aws:.");
        assert_eq!(search_form(".*admin.*"), "admin");
        assert_eq!(search_form("^arn:.*"), "^arn:");
        assert_eq!(search_form("x\\.+"), "x\\.+", "an escaped dot is kept");
        assert_eq!(search_form("a\\\\.+"), "a\\\\.", "an escaped backslash then any character");
        assert_eq!(search_form(".*a|b"), ".*a|b");
        assert_eq!(search_form(".*"), ".*");
        for (re, hay, want) in [
            (".+:assumed-role/aws:.+", "arn:aws:sts::1:assumed-role/aws:ec2-instance/i-1", true),
            (".+:assumed-role/aws:.+", ":assumed-role/aws:x", false),
            (".+:assumed-role/aws:.+", "a:assumed-role/aws:", false),
        ] {
            let full = Regex::new(re).unwrap().is_match(hay);
            assert_eq!(full, want, "{re} on {hay}");
            assert_eq!(Regex::new(&search_form(re)).unwrap().is_match(hay), want, "{re} on {hay}");
        }
    }

    #[test]
    fn a_regex_is_tested_for_its_required_text_first() {
        assert_eq!(required_literal(".+:assumed-role/aws:.+").as_deref(), Some(":assumed-role/aws:"));
        assert_eq!(required_literal("^arn:aws:iam::\\d+"), None, "escapes: no prefilter");
        assert_eq!(required_literal("admins*x"), Some("admin".into()), "a starred character is optional");
        assert_eq!(required_literal("(admin)?x"), None);
        assert_eq!(required_literal("a|bcdef"), None);
        assert_eq!(required_literal("ab.c"), None, "too short to be worth it");
    }

    #[test]
    fn base64_offsets_are_the_three_pysigma_encodings() {
        // pySigma: base64offset of "/bin/bash" is L2Jpbi9iYXNo, 9iaW4vYmFza, vYmluL2Jhc2
        assert_eq!(base64_offsets("/bin/bash"), vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
        assert_eq!(b64(b"sigma"), "c2lnbWE=");
    }

    #[test]
    fn expand_fills_placeholders_and_names_a_missing_one() {
        let mut p = BTreeMap::new();
        p.insert("admins".to_string(), vec!["alice".to_string(), "bob".to_string()]);
        assert_eq!(expand("user/%admins%", &p).unwrap(), vec!["user/alice", "user/bob"]);
        let e = expand("%countries%", &p).unwrap_err();
        assert!(e.contains("%countries%") && e.contains("[rules.placeholders]"), "{e}");
    }

    #[test]
    fn unsupported_and_conflicting_modifiers_are_named() {
        assert!(Modifiers::parse(&["windash"]).unwrap_err().contains("windash"));
        assert!(Modifiers::parse(&["contains", "startswith"]).unwrap_err().contains("conflict"));
        assert!(Modifiers::parse(&["i"]).is_err());
    }
}
