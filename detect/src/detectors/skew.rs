//! Records whose event time is ahead of the processing wall clock. Event time is evidence, not
//! authority: such records stay in the lake (ingest keeps them), but they never move a
//! watermark or the clock, and they are reported, since a forged or skewed timestamp is itself
//! suspicious (one record claiming 2099 would otherwise make every real record look late).

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{FindingKind, Severity, Status};
use trailwatch_core::time::{format_rfc3339_millis, EpochMillis};

use super::Ctx;
use crate::event::{Event, Table};
use crate::window::{push_evidence, Episode, Subject, Verdict, HOUR};

/// The lake table a finding's subject names.
pub fn table_name(t: Table) -> &'static str {
    match t {
        Table::CloudTrail => trailwatch_core::lake::CLOUDTRAIL_TABLE,
        Table::Invocations => trailwatch_core::lake::LAMBDA_INVOCATIONS_TABLE,
        Table::Metrics => trailwatch_core::lake::LAMBDA_METRICS_TABLE,
    }
}

/// One table's episode of future-dated records in one shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FutureTime {
    pub ep: Option<Episode>,
}

impl FutureTime {
    /// Gathers one record claiming a time ahead of `now` (the wall clock). `at` is the shard's
    /// own event-time position (its watermark), so the episode and its id do not depend on when
    /// the run happened and a retried invocation yields the same finding.
    pub fn observe(&mut self, ctx: &mut Ctx, ev: &Event, now: EpochMillis, at: EpochMillis) {
        let t = ev.time();
        let ahead_h = (t - now) as f64 / HOUR as f64;
        let ep = self.ep.get_or_insert_with(|| {
            let s = Subject {
                account: ctx.account,
                region: ctx.region,
                kind: FindingKind::EventTimeSkew,
                subject: table_name(ev.table()),
                describe,
            };
            let v = Verdict { observed: 0.0, expected: 0.0, z: ahead_h, anomalous: true };
            let mut ep = Episode::new(&s, at, at, &v);
            ep.severity = Severity::High;
            ep.reported = false;
            ep
        });
        ep.observed += 1.0;
        ep.last = ep.last.max(at);
        ep.quiet = 0;
        if ahead_h >= ep.score {
            ep.score = ahead_h;
            ep.detail = format_rfc3339_millis(t);
        }
        match ev {
            Event::Api(a) => {
                ep.top.add("principal", &a.principal, 1);
                ep.top.add("source_ip", &a.source_ip, 1);
                ep.top.add("user_agent", &a.user_agent, 1);
                push_evidence(&mut ep.evidence, &a.event_id);
            }
            Event::Invocation(i) => {
                ep.top.add("function", &i.function, 1);
                push_evidence(&mut ep.evidence, i.request_id.as_deref().unwrap_or(&i.log_event_id));
            }
            Event::Metric(m) => ep.top.add("function", &m.function, 1),
        }
    }

    /// Reports a new episode once the records of a batch are in (so the finding counts them
    /// all), and closes it once the table's own data has moved an hour past its last forged
    /// record.
    pub fn advance(&mut self, ctx: &mut Ctx, watermark: Option<EpochMillis>) {
        let Some(ep) = &mut self.ep else { return };
        if !ep.reported {
            ep.reported = true;
            ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Open, describe));
        } else if watermark.is_some_and(|w| w >= ep.last + HOUR) {
            let ep = self.ep.take().expect("checked");
            ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Closed, describe));
        }
    }

    pub fn is_open(&self) -> bool {
        self.ep.is_some()
    }
}

/// The sentence of an `event_time_skew` finding.
pub fn describe(ep: &Episode) -> String {
    format!(
        "{} {} record(s) claim event times ahead of the processing clock, up to {:.1} hours ahead ({}): \
         forged or skewed timestamps; they are kept in the lake but do not move detection's clock",
        ep.observed, ep.subject, ep.score, ep.detail
    )
}
