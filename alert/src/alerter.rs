//! The alerting pass over a batch of findings: what to send, folded and grouped, then
//! published with retries and recorded so nothing is sent twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use trailwatch_core::finding::{Finding, Severity, Status};

use crate::error::AlertError;
use crate::publish::{publish_with_retry, DeadLetter, DeadLetterEntry, Delivery, Publisher, RetryPolicy};
use crate::render::{self, Message, RenderConfig};
use crate::sent::{sent_key, Sent, SentStore};

/// Tuning for alerting.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub render: RenderConfig,
    /// A new episode of the same kind and subject starting within this much event time of an
    /// alerted one is folded into it instead of mailing again.
    pub fold_window_ms: i64,
    /// More alerts than this for one account in one batch become a digest.
    pub digest_threshold: usize,
    /// Findings below this severity are written to the lake and the findings file only.
    pub min_severity: Severity,
    pub retry: RetryPolicy,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            render: RenderConfig::default(),
            fold_window_ms: 6 * 3_600_000,
            digest_threshold: 5,
            min_severity: Severity::Info,
            retry: RetryPolicy::default(),
        }
    }
}

/// Parses a fold window in minutes (`--fold-window-minutes`, `FOLD_WINDOW_MINUTES`): a whole
/// number, 0 or more (0 folds nothing), small enough to hold in milliseconds. A negative window
/// would fold nothing and hide the mistake, so it is refused.
pub fn parse_fold_window_minutes(s: &str) -> Result<i64, String> {
    let m: i64 = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number of minutes"))?;
    if m < 0 {
        return Err(format!("`{s}` is negative: the fold window is 0 minutes or more (0 folds nothing)"));
    }
    if m.checked_mul(60_000).is_none() {
        return Err(format!("`{s}` minutes is too long a fold window"));
    }
    Ok(m)
}

impl AlertConfig {
    /// The `alert` Lambda's configuration from its environment (`env` returns a variable's
    /// value, `None` when unset or empty): `FOLD_WINDOW_MINUTES` (default 360),
    /// `DIGEST_THRESHOLD` (default 5), `MIN_SEVERITY` (default `info`), `ATHENA_DATABASE` and
    /// `ATHENA_WORKGROUP` (default `trailwatch`). A bad value is an error naming the variable,
    /// so the function fails at start rather than alerting with a setting nobody chose.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<AlertConfig, String> {
        let mut cfg = AlertConfig::default();
        if let Some(m) = env("FOLD_WINDOW_MINUTES") {
            cfg.fold_window_ms =
                parse_fold_window_minutes(&m).map_err(|e| format!("FOLD_WINDOW_MINUTES: {e}"))? * 60_000;
        }
        if let Some(n) = env("DIGEST_THRESHOLD") {
            cfg.digest_threshold =
                n.trim().parse().map_err(|_| format!("DIGEST_THRESHOLD: `{n}` is not a whole number, 0 or more"))?;
        }
        if let Some(s) = env("MIN_SEVERITY") {
            cfg.min_severity = serde_json::from_value(serde_json::Value::String(s.clone()))
                .map_err(|_| format!("MIN_SEVERITY: `{s}` is not info, low, medium, high or critical"))?;
        }
        if let Some(db) = env("ATHENA_DATABASE") {
            cfg.render.athena_database = db;
        }
        if let Some(wg) = env("ATHENA_WORKGROUP") {
            cfg.render.athena_workgroup = wg;
        }
        Ok(cfg)
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct AlertReport {
    pub findings: u64,
    pub suppressed: u64,
    pub below_severity: u64,
    /// Already recorded as sent (a retried invocation, a re-run).
    pub already_sent: u64,
    /// Folded into an alert of the same kind and subject.
    pub folded: u64,
    /// Closes of episodes whose open was never alerted (suppressed, below severity, folded).
    pub closes_skipped: u64,
    pub messages: u64,
    pub digests: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    /// A record another writer made first: a concurrent invocation sent the same alert.
    pub record_conflicts: u64,
}

/// One thing to tell a person about.
struct Item<'a> {
    /// The newest state of the finding (a close when the episode ended in this batch).
    finding: &'a Finding,
    /// The open was in this batch too: one message covers open and close.
    with_open: bool,
    folded: usize,
}

impl Item<'_> {
    fn keys(&self) -> Vec<String> {
        let mut k = vec![sent_key(&self.finding.id, self.finding.status)];
        if self.with_open && self.finding.status == Status::Closed {
            k.push(sent_key(&self.finding.id, Status::Open));
        }
        k
    }
}

/// The fold group of a finding: kind, account, region and subject, hashed like the finding id
/// so an attacker's 10 KB subject cannot exceed a store's key size.
fn group_of(f: &Finding) -> String {
    format!("group#{}", trailwatch_core::finding::finding_id(&f.kind, &f.account_id, &f.region, &f.subject, 0))
}

/// Sends the alerts `findings` call for. Errors only when an alert could be neither published
/// nor dead-lettered, or the sent records cannot be read or written: then nothing of the batch
/// should be acknowledged, and the retry skips whatever was recorded as sent.
pub fn alert(
    findings: &[Finding],
    cfg: &AlertConfig,
    sent: &dyn SentStore,
    publisher: &dyn Publisher,
    dead: &dyn DeadLetter,
) -> Result<AlertReport, AlertError> {
    let mut report = AlertReport { findings: findings.len() as u64, ..Default::default() };
    // The newest state per episode; an open and its close in one batch become one alert.
    let mut latest: BTreeMap<&str, (&Finding, bool)> = BTreeMap::new();
    for f in findings {
        let e = latest.entry(f.id.as_str()).or_insert((f, false));
        if f.status == Status::Open {
            e.1 = true;
        }
        if f.status == Status::Closed || e.0.status == Status::Open {
            e.0 = f;
        }
    }
    let mut episodes: Vec<(&Finding, bool)> = latest.into_values().collect();
    // Earliest first, so the first episode of a group is the one that alerts.
    episodes.sort_by(|a, b| (a.0.start, &a.0.id).cmp(&(b.0.start, &b.0.id)));

    let mut items: Vec<Item> = Vec::new();
    let mut winner_of: BTreeMap<String, usize> = BTreeMap::new();
    for (f, has_open) in episodes {
        if f.suppressed {
            report.suppressed += 1;
            continue;
        }
        if f.severity < cfg.min_severity {
            report.below_severity += 1;
            continue;
        }
        let open_sent = sent.get(&sent_key(&f.id, Status::Open))?;
        let status_sent = sent.get(&sent_key(&f.id, f.status))?;
        if status_sent.is_some() {
            report.already_sent += 1;
            continue;
        }
        let with_open = f.status == Status::Closed && has_open && open_sent.is_none();
        if f.status == Status::Closed && !with_open {
            match open_sent {
                Some(Sent::Alone | Sent::Digest | Sent::DeadLetter) => {
                    items.push(Item { finding: f, with_open: false, folded: 0 });
                }
                Some(Sent::Folded) => {
                    record(sent, &sent_key(&f.id, Status::Closed), Sent::Folded, f, &mut report)?;
                    report.folded += 1;
                }
                None => report.closes_skipped += 1,
            }
            continue;
        }
        let group = group_of(f);
        if !sent.claim_group(&group, &f.id, f.start, cfg.fold_window_ms, f.severity as u8)? {
            let item = Item { finding: f, with_open, folded: 0 };
            for k in item.keys() {
                record(sent, &k, Sent::Folded, f, &mut report)?;
            }
            report.folded += 1;
            if let Some(&w) = winner_of.get(&group) {
                items[w].folded += 1;
            }
            continue;
        }
        winner_of.insert(group, items.len());
        items.push(Item { finding: f, with_open, folded: 0 });
    }

    let out = Out { cfg, publisher, dead, sent };
    let mut by_account: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for it in &items {
        by_account.entry(it.finding.account_id.as_str()).or_default().push(it);
    }
    for (account, its) in by_account {
        if its.len() > cfg.digest_threshold {
            let fs: Vec<&Finding> = its.iter().map(|i| i.finding).collect();
            let opens: BTreeSet<&str> = its.iter().filter(|i| i.with_open).map(|i| i.finding.id.as_str()).collect();
            for m in render::digest(account, &fs, &cfg.render) {
                report.digests += 1;
                let mut keys: Vec<(String, &Finding)> = Vec::new();
                for (id, status) in &m.findings {
                    let f = its
                        .iter()
                        .find(|i| &i.finding.id == id)
                        .map(|i| i.finding)
                        .expect("digest carries batch findings");
                    keys.push((sent_key(id, *status), f));
                    if opens.contains(id.as_str()) {
                        keys.push((sent_key(id, Status::Open), f));
                    }
                }
                out.send(&m, &keys, Sent::Digest, &mut report)?;
            }
        } else {
            for it in its {
                let m = match it.finding.status {
                    Status::Open => render::opened(it.finding, it.folded, &cfg.render),
                    Status::Closed if it.with_open => render::opened(it.finding, it.folded, &cfg.render),
                    Status::Closed => render::closed(it.finding, &cfg.render),
                };
                let keys: Vec<(String, &Finding)> = it.keys().into_iter().map(|k| (k, it.finding)).collect();
                out.send(&m, &keys, Sent::Alone, &mut report)?;
            }
        }
    }
    Ok(report)
}

fn record(sent: &dyn SentStore, key: &str, how: Sent, f: &Finding, report: &mut AlertReport) -> Result<(), AlertError> {
    if !sent.put_if_absent(key, how, f.end.unwrap_or(f.start))? {
        report.record_conflicts += 1;
    }
    Ok(())
}

/// Where messages go and how their sending is recorded.
struct Out<'a> {
    cfg: &'a AlertConfig,
    publisher: &'a dyn Publisher,
    dead: &'a dyn DeadLetter,
    sent: &'a dyn SentStore,
}

impl Out<'_> {
    /// Publishes `m` (or dead-letters it) and records every key it carries.
    fn send(
        &self,
        m: &Message,
        keys: &[(String, &Finding)],
        how: Sent,
        report: &mut AlertReport,
    ) -> Result<(), AlertError> {
        let how = match publish_with_retry(self.publisher, m, &self.cfg.retry) {
            Delivery::Published { attempts, .. } => {
                report.messages += 1;
                report.retries += u64::from(attempts - 1);
                how
            }
            Delivery::Failed { reason, attempts } => {
                report.retries += u64::from(attempts.saturating_sub(1));
                tracing::error!(topic = self.publisher.topic(), %reason, findings = m.findings.len(), "alert dead-lettered");
                self.dead.send(&DeadLetterEntry::new(self.publisher, m, reason, attempts))?;
                report.dead_lettered += 1;
                Sent::DeadLetter
            }
        };
        for (k, f) in keys {
            record(self.sent, k, how, f, report)?;
        }
        // An ended episode no longer absorbs new ones: the next one alerts.
        for (_, f) in keys.iter().filter(|(_, f)| f.status == Status::Closed) {
            self.sent.release_group(&group_of(f), &f.id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use trailwatch_core::finding::{finding_id, Finding, Severity, Status};

    use super::*;
    use crate::publish::{DeadLetterEntry, PublishError};
    use crate::sent::{FileSent, MemorySent};

    #[test]
    fn fold_window_must_be_zero_or_more_minutes() {
        assert_eq!(parse_fold_window_minutes("360"), Ok(360));
        assert_eq!(parse_fold_window_minutes("0"), Ok(0));
        let e = parse_fold_window_minutes("-5").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        assert!(parse_fold_window_minutes("six").is_err());
        assert!(parse_fold_window_minutes("1.5").is_err());
        assert!(parse_fold_window_minutes(&i64::MAX.to_string()).is_err(), "overflows in milliseconds");
    }

    #[test]
    fn lambda_config_refuses_a_negative_fold_window() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let e = AlertConfig::from_env(env(&[("FOLD_WINDOW_MINUTES", "-60")])).unwrap_err();
        assert!(e.starts_with("FOLD_WINDOW_MINUTES:") && e.contains("negative"), "{e}");
        let cfg = AlertConfig::from_env(env(&[("FOLD_WINDOW_MINUTES", "30"), ("MIN_SEVERITY", "high")])).unwrap();
        assert_eq!((cfg.fold_window_ms, cfg.min_severity), (30 * 60_000, Severity::High));
        assert_eq!(AlertConfig::from_env(env(&[])).unwrap().fold_window_ms, AlertConfig::default().fold_window_ms);
        assert!(AlertConfig::from_env(env(&[("DIGEST_THRESHOLD", "-1")])).unwrap_err().starts_with("DIGEST_THRESHOLD"));
        assert!(AlertConfig::from_env(env(&[("MIN_SEVERITY", "urgent")])).unwrap_err().starts_with("MIN_SEVERITY"));
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Message>>);

    impl Publisher for Recorder {
        fn topic(&self) -> &str {
            "test"
        }
        fn publish(&self, m: &Message) -> Result<String, PublishError> {
            self.0.lock().unwrap().push(m.clone());
            Ok("id".into())
        }
    }

    impl DeadLetter for Recorder {
        fn send(&self, _: &DeadLetterEntry) -> Result<(), AlertError> {
            panic!("nothing should be dead-lettered")
        }
    }

    fn f(kind: &str, subject: &str, start: i64, status: Status) -> Finding {
        Finding {
            id: finding_id(&kind.into(), "111122223333", "eu-west-1", subject, start),
            kind: kind.into(),
            severity: Severity::Medium,
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            subject: subject.into(),
            start,
            end: (status == Status::Closed).then_some(start + 600_000),
            observed: 10.0,
            baseline: 1.0,
            score: 5.0,
            estimated_cost_usd: None,
            summary: "s".into(),
            top_contributors: vec![],
            evidence: vec![],
            status,
            suppressed: false,
            suppression_reason: None,
            rule: None,
        }
    }

    fn run(fs: &[Finding], sent: &dyn SentStore) -> (AlertReport, Vec<Message>) {
        let p = Recorder::default();
        let r = alert(fs, &AlertConfig::default(), sent, &p, &p).unwrap();
        (r, p.0.into_inner().unwrap())
    }

    #[test]
    fn an_episode_opening_and_closing_in_one_batch_is_one_message() {
        let sent = MemorySent::default();
        let (r, ms) = run(&[f("throttling", "a", 0, Status::Open), f("throttling", "a", 0, Status::Closed)], &sent);
        assert_eq!((r.messages, ms.len()), (1, 1));
        // Both statuses are recorded: neither is sent again.
        let (r, _) = run(&[f("throttling", "a", 0, Status::Open), f("throttling", "a", 0, Status::Closed)], &sent);
        assert_eq!((r.messages, r.already_sent), (0, 1));
        let (r, _) = run(&[f("throttling", "a", 0, Status::Closed)], &sent);
        assert_eq!((r.messages, r.already_sent), (0, 1));
    }

    #[test]
    fn closes_follow_their_opens() {
        let sent = MemorySent::default();
        // A close whose open was never alerted (suppressed, before alerting was on) says nothing.
        let (r, ms) = run(&[f("timeouts", "x", 0, Status::Closed)], &sent);
        assert_eq!((r.closes_skipped, ms.len()), (1, 0));
        // A folded episode's close is folded too.
        let first = f("timeouts", "y", 0, Status::Open);
        let second = f("timeouts", "y", 3_600_000, Status::Open);
        let (r, ms) = run(&[first, second.clone()], &sent);
        assert_eq!((r.messages, r.folded, ms[0].findings.len()), (1, 1, 1));
        let mut closed = second;
        closed.status = Status::Closed;
        let (r, ms) = run(&[closed], &sent);
        assert_eq!((r.folded, ms.len()), (1, 0));
        // Outside the fold window, the same subject alerts again.
        let (r, _) = run(&[f("timeouts", "y", 7 * 3_600_000, Status::Open)], &sent);
        assert_eq!(r.messages, 1);
    }

    #[test]
    fn suppressed_and_minor_findings_are_not_sent_and_bursts_digest() {
        let sent = MemorySent::default();
        let mut muted = f("api_call_rate", "s3.amazonaws.com:ListBuckets", 0, Status::Open);
        muted.suppressed = true;
        let mut info = f("log_silence", "lambda data events", 0, Status::Open);
        info.severity = Severity::Info;
        let p = Recorder::default();
        let cfg = AlertConfig { min_severity: Severity::Low, ..AlertConfig::default() };
        let r = alert(&[muted, info], &cfg, &sent, &p, &p).unwrap();
        assert_eq!((r.suppressed, r.below_severity, r.messages), (1, 1, 0));
        let burst: Vec<Finding> =
            (0..6).map(|i| f("unusual_invocation", &format!("fn-{i}"), 0, Status::Open)).collect();
        let (r, ms) = run(&burst, &sent);
        assert_eq!((r.digests, ms.len(), ms[0].findings.len()), (1, 1, 6));
        let (r, ms) = run(&burst[..5], &MemorySent::default());
        assert_eq!((r.digests, ms.len()), (0, 5), "at the threshold, single alerts");
    }

    #[test]
    fn an_ended_episode_or_a_worse_one_is_not_folded() {
        let sent = MemorySent::default();
        let (r, _) = run(&[f("throttling", "a", 0, Status::Open)], &sent);
        assert_eq!(r.messages, 1);
        // Worse within the window: alerts anyway.
        let mut worse = f("throttling", "a", 600_000, Status::Open);
        worse.severity = Severity::Critical;
        let (r, _) = run(&[worse], &sent);
        assert_eq!((r.messages, r.folded), (1, 0));
        // The holder ends; the next episode within the window is news, not a repeat.
        let mut closed = f("throttling", "a", 600_000, Status::Closed);
        closed.severity = Severity::Critical;
        let (r, _) = run(&[closed], &sent);
        assert_eq!(r.messages, 1);
        let (r, _) = run(&[f("throttling", "a", 1_200_000, Status::Open)], &sent);
        assert_eq!((r.messages, r.folded), (1, 0));
    }

    #[test]
    fn noncharacters_never_reach_a_message() {
        let mut x = f("throttling", "fn\u{FFFF}\u{FDD0}", 0, Status::Open);
        x.top_contributors.push(trailwatch_core::finding::Contributor {
            dimension: "user_agent".into(),
            value: "ua\u{FFFE}\u{1FFFF}".into(),
            count: 1,
        });
        let m = render::opened(&x, 0, &AlertConfig::default().render);
        let bad = |s: &str| s.chars().any(crate::text::is_noncharacter);
        assert!(!bad(&m.message_json()) && !bad(&m.subject), "{}", m.message_json());
    }

    #[test]
    fn the_cli_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let batch = [f("throttling", "a", 0, Status::Open)];
        let (r, _) = run(&batch, &FileSent::open(dir.path()).unwrap());
        assert_eq!(r.messages, 1);
        let (r, _) = run(&batch, &FileSent::open(dir.path()).unwrap());
        assert_eq!((r.messages, r.already_sent), (0, 1));
    }
}
