//! `trailwatch report`: one self-contained HTML page of the findings and the lake behind them.
//!
//! Charts are SVG drawn here, server-side: the page needs no script, no CDN and no network, and
//! every plotted point carries its time and value (`data-t`, `data-v`) so a test (or a curious
//! reader) can check the picture against the lake. The lake is read with detect's own decoder,
//! so a chart counts what the detectors saw: the same principals, functions and error codes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use trailwatch_core::finding::{Finding, Status};
use trailwatch_core::store::ObjectSource;
use trailwatch_core::time::{format_rfc3339_millis, EpochMillis};
use trailwatch_detect::config::Prices;
use trailwatch_detect::detectors::{is_denial, is_throttle};
use trailwatch_detect::event::{Event, InvocationStatus, Table};
use trailwatch_detect::read::{partition_of, Decoded};
use trailwatch_detect::LakeLocation;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Days before a chart whose same hours make its baseline band.
const BAND_DAYS: i64 = 7;

/// What a chart counts. Keys are (account, region, name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Series {
    Invocations(String, String, String),
    Timeouts(String, String, String),
    FailedInvocations(String, String, String),
    FunctionThrottles(String, String, String),
    InvokeCalls(String, String, String),
    ApiCalls(String, String, String),
    ApiErrors(String, String, String),
    ApiThrottles(String, String, String),
    PrincipalCalls(String, String, String),
    PrincipalDenied(String, String, String),
    TrailRecords(String, String),
}

/// A finding's chart: the series, its window width, and a label.
struct ChartSpec {
    series: Series,
    width: i64,
    label: String,
    from: EpochMillis,
    to: EpochMillis,
}

/// One episode: its opening finding and, once ended, its closing one.
struct Episode<'a> {
    open: &'a Finding,
    closed: Option<&'a Finding>,
}

impl Episode<'_> {
    fn end(&self) -> EpochMillis {
        self.closed.and_then(|c| c.end).or(self.open.end).unwrap_or(self.open.start)
    }

    fn last(&self) -> &Finding {
        self.closed.unwrap_or(self.open)
    }
}

fn is_api(subject: &str) -> bool {
    subject.contains(".amazonaws.com:")
}

fn is_principal(subject: &str) -> bool {
    subject.starts_with("arn:") || subject.ends_with(".amazonaws.com") || subject.contains(':')
}

fn spec(f: &Finding, end: EpochMillis) -> ChartSpec {
    let (a, r, s) = (f.account_id.clone(), f.region.clone(), f.subject.clone());
    let five = 5 * MINUTE;
    let (series, width, label) = match f.kind.as_str() {
        "concurrency_spike" => (Series::Invocations(a, r, s), five, "invocations per 5 minutes"),
        "timeouts" => (Series::Timeouts(a, r, s), 15 * MINUTE, "timeouts per 15 minutes"),
        "retry_storm" => (Series::FailedInvocations(a, r, s), five, "failed invocations per 5 minutes"),
        "throttling" if is_api(&s) => (Series::ApiThrottles(a, r, s), five, "throttled calls per 5 minutes"),
        "throttling" | "noisy_neighbour" | "event_loss" => {
            (Series::FunctionThrottles(a, r, s), five, "throttles per 5 minutes")
        }
        "unusual_invocation" => {
            (Series::InvokeCalls(a, r, s), 15 * MINUTE, "Invoke calls in CloudTrail per 15 minutes")
        }
        "api_call_rate" if is_api(&s) => (Series::ApiCalls(a, r, s), five, "calls per 5 minutes"),
        "api_call_rate" if is_principal(&s) => (Series::PrincipalCalls(a, r, s), five, "calls per 5 minutes"),
        "api_error_rate" if is_api(&s) => (Series::ApiErrors(a, r, s), five, "failed calls per 5 minutes"),
        "api_error_rate" if is_principal(&s) => (Series::PrincipalDenied(a, r, s), five, "denied calls per 5 minutes"),
        "log_silence" if s != "cloudtrail" => (Series::Invocations(a, r, s), HOUR, "invocations per hour"),
        _ => (Series::TrailRecords(a, r), HOUR, "CloudTrail records per hour"),
    };
    // Hours of context before and after, more for hourly charts.
    let pad = if width >= HOUR { DAY } else { 6 * HOUR };
    let from = (f.start - pad).div_euclid(width) * width;
    let to = ((end + pad / 2).div_euclid(width) + 1) * width;
    ChartSpec { series, width, label: label.to_string(), from, to }
}

/// Counts per window, for every wanted series, and the overview's totals.
#[derive(Default)]
struct Gathered {
    counts: HashMap<Series, BTreeMap<EpochMillis, f64>>,
    /// The first event time per account and region: no band before data began.
    first: HashMap<(String, String), EpochMillis>,
    functions: BTreeMap<(String, String, String), FunctionTotals>,
    trails: BTreeMap<(String, String), (u64, u64)>,
}

#[derive(Default)]
struct FunctionTotals {
    invocations: u64,
    errors: u64,
    timeouts: u64,
    throttles: u64,
    gb_seconds: f64,
    cost: f64,
    /// Busy milliseconds per minute, for the busiest minute's average concurrency.
    busy: HashMap<EpochMillis, f64>,
    per_hour: BTreeMap<EpochMillis, u64>,
}

/// Reads the lake's files of the dates in `[from, to)` and counts what the charts and overview
/// need.
fn gather(
    src: &dyn ObjectSource,
    lake: &LakeLocation,
    wanted: &HashMap<Series, i64>,
    from: EpochMillis,
    to: EpochMillis,
    prices: &Prices,
) -> Result<Gathered> {
    let mut g = Gathered::default();
    let (first_date, last_date) =
        (format_rfc3339_millis(from)[..10].to_string(), format_rfc3339_millis(to)[..10].to_string());
    for (table, name) in [
        (Table::CloudTrail, trailwatch_core::lake::CLOUDTRAIL_TABLE),
        (Table::Invocations, trailwatch_core::lake::LAMBDA_INVOCATIONS_TABLE),
        (Table::Metrics, trailwatch_core::lake::LAMBDA_METRICS_TABLE),
    ] {
        let prefix = lake.table_prefix(name);
        // A local lake has no folder for a table nothing was written to.
        if lake.bucket.is_empty() && !std::path::Path::new(&prefix).exists() {
            continue;
        }
        let files = src.list(&lake.bucket, &prefix).with_context(|| format!("listing {prefix}"))?;
        for obj in files.iter().filter(|o| o.key.ends_with(".parquet")) {
            let Some((account, region, date)) = partition_of(lake.relative(&obj.key)) else { continue };
            if date < first_date || date > last_date {
                continue;
            }
            let mut body = src.open(obj).with_context(|| format!("opening {}", obj.uri()))?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut body.reader, &mut bytes)
                .with_context(|| format!("reading {}", obj.uri()))?;
            let decoded = Decoded::new(bytes.into(), table).map_err(|e| anyhow::anyhow!("{}: {e}", obj.uri()))?;
            let mut events = Vec::new();
            decoded.events(&account, &region, 0, &mut events).map_err(|e| anyhow::anyhow!("{}: {e}", obj.uri()))?;
            for (_, ev) in &events {
                g.add(ev, &account, &region, wanted, prices);
            }
        }
    }
    Ok(g)
}

impl Gathered {
    fn bump(&mut self, wanted: &HashMap<Series, i64>, s: Series, t: EpochMillis, by: f64) {
        if let Some(&w) = wanted.get(&s) {
            *self.counts.entry(s).or_default().entry(t.div_euclid(w) * w).or_default() += by;
        }
    }

    fn add(&mut self, ev: &Event, account: &str, region: &str, wanted: &HashMap<Series, i64>, prices: &Prices) {
        let (a, r) = (account.to_string(), region.to_string());
        let t = ev.time();
        let first = self.first.entry((a.clone(), r.clone())).or_insert(t);
        *first = (*first).min(t);
        match ev {
            Event::Api(c) => {
                let trail = self.trails.entry((a.clone(), r.clone())).or_default();
                trail.0 += 1;
                trail.1 += u64::from(c.error_code.is_some());
                let api = format!("{}:{}", c.source, c.name);
                let throttled = is_throttle(c.error_code.as_deref(), c.error_message.as_deref());
                self.bump(wanted, Series::TrailRecords(a.clone(), r.clone()), t, 1.0);
                self.bump(wanted, Series::ApiCalls(a.clone(), r.clone(), api.clone()), t, 1.0);
                self.bump(wanted, Series::PrincipalCalls(a.clone(), r.clone(), c.principal.to_string()), t, 1.0);
                if c.error_code.is_some() && !throttled {
                    self.bump(wanted, Series::ApiErrors(a.clone(), r.clone(), api.clone()), t, 1.0);
                }
                if is_denial(c.error_code.as_deref()) {
                    self.bump(wanted, Series::PrincipalDenied(a.clone(), r.clone(), c.principal.to_string()), t, 1.0);
                }
                if throttled {
                    self.bump(wanted, Series::ApiThrottles(a.clone(), r.clone(), api), t, 1.0);
                }
                if let (Some(f), true) = (&c.function, c.name.starts_with("Invoke")) {
                    if throttled {
                        self.bump(wanted, Series::FunctionThrottles(a.clone(), r.clone(), f.to_string()), t, 1.0);
                        let k = (a.clone(), r.clone(), f.to_string());
                        self.functions.entry(k).or_default().throttles += 1;
                    } else if c.error_code.is_none() {
                        self.bump(wanted, Series::InvokeCalls(a, r, f.to_string()), t, 1.0);
                    }
                }
            }
            Event::Invocation(i) => {
                let f = i.function.to_string();
                self.bump(wanted, Series::Invocations(a.clone(), r.clone(), f.clone()), i.start, 1.0);
                let failed = matches!(i.status, InvocationStatus::Error | InvocationStatus::OutOfMemory);
                if i.status == InvocationStatus::Timeout {
                    self.bump(wanted, Series::Timeouts(a.clone(), r.clone(), f.clone()), i.end, 1.0);
                }
                if failed || i.status == InvocationStatus::Timeout {
                    self.bump(wanted, Series::FailedInvocations(a.clone(), r.clone(), f.clone()), i.end, 1.0);
                }
                let tot = self.functions.entry((a, r.clone(), f)).or_default();
                tot.invocations += 1;
                tot.errors += u64::from(failed);
                tot.timeouts += u64::from(i.status == InvocationStatus::Timeout);
                tot.gb_seconds += i.billed_ms / 1000.0 * i.memory_mb / 1024.0;
                tot.cost += prices.cost(&r, false, i.billed_ms, i.memory_mb, 1.0);
                *tot.per_hour.entry(i.start.div_euclid(HOUR) * HOUR).or_default() += 1;
                // Spread the invocation's running time over the minutes it ran in.
                let (mut s, e) = (i.start, i.end.max(i.start));
                while s < e {
                    let m = s.div_euclid(MINUTE) * MINUTE;
                    let upto = e.min(m + MINUTE);
                    *tot.busy.entry(m).or_default() += (upto - s) as f64;
                    s = upto;
                }
            }
            Event::Metric(m) if m.metric == "Throttles" && !m.function.is_empty() => {
                let f = m.function.to_string();
                self.bump(wanted, Series::FunctionThrottles(a.clone(), r.clone(), f.clone()), t, m.sum);
                self.functions.entry((a, r, f)).or_default().throttles += m.sum as u64;
            }
            Event::Metric(_) => {}
        }
    }
}

/// The baseline band at `t`: mean ± 2 standard deviations of the same window on the
/// [`BAND_DAYS`] days before (those after data began), or `None` with fewer than two.
fn band(counts: &BTreeMap<EpochMillis, f64>, t: EpochMillis, first: EpochMillis) -> Option<(f64, f64, f64)> {
    let xs: Vec<f64> = (1..=BAND_DAYS)
        .map(|k| t - k * DAY)
        .filter(|&u| u >= first)
        .map(|u| counts.get(&u).copied().unwrap_or(0.0))
        .collect();
    if xs.len() < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
    Some(((mean - 2.0 * sd).max(0.0), mean, mean + 2.0 * sd))
}

/// Text from the data is attacker-controlled: escaped for HTML text and attributes alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn hhmm(t: EpochMillis) -> String {
    format_rfc3339_millis(t)[11..16].to_string()
}

fn day_hhmm(t: EpochMillis) -> String {
    let s = format_rfc3339_millis(t);
    format!("{} {}", &s[5..10], &s[11..16])
}

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A chart of `points` (window start, value) against its band, with the episode shaded.
fn chart_svg(
    id: &str,
    c: &ChartSpec,
    points: &[(EpochMillis, f64)],
    bands: &[(EpochMillis, f64, f64, f64)],
    episode: (EpochMillis, EpochMillis),
) -> String {
    let ymax = points.iter().map(|p| p.1).chain(bands.iter().map(|b| b.3)).fold(1.0f64, f64::max) * 1.1;
    let x = |t: EpochMillis| LEFT + (t - c.from) as f64 / (c.to - c.from).max(1) as f64 * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / ymax) * (H - TOP - BOTTOM);
    let mid = |t: EpochMillis| x(t + c.width / 2);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" data-finding="{}" data-width-ms="{}" data-ymax="{ymax:.4}"><title>{}</title>"#,
        esc(id),
        c.width,
        esc(&c.label)
    );
    // Axes and ticks: the value scale, and a time label every few hours.
    let _ =
        write!(s, r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#888"/>"##, H - BOTTOM, W - RIGHT, H - BOTTOM);
    for frac in [0.0, 0.5, 1.0] {
        let v = ymax / 1.1 * frac;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text><line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            LEFT - 4.0,
            y(v) + 3.0,
            fmt_num(v),
            W - RIGHT,
            y(v),
            y(v)
        );
    }
    let span = c.to - c.from;
    let step = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY].into_iter().find(|s| span / s <= 8).unwrap_or(DAY);
    let mut t = (c.from / step + 1) * step;
    while t < c.to {
        let label = if step >= DAY || t % DAY == 0 { day_hhmm(t) } else { hhmm(t) };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="#555">{label}</text>"##,
            x(t),
            H - 10.0
        );
        t += step;
    }
    // The episode.
    let (es, ee) = (episode.0.max(c.from), episode.1.max(episode.0 + c.width).min(c.to));
    let _ = write!(
        s,
        r##"<rect class="episode" x="{:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#f5b7b1" fill-opacity="0.45" data-start="{}" data-end="{}"><title>episode {} to {}</title></rect>"##,
        x(es),
        (x(ee) - x(es)).max(2.0),
        H - TOP - BOTTOM,
        episode.0,
        episode.1,
        day_hhmm(episode.0),
        day_hhmm(episode.1)
    );
    // The band: upper edge forward, lower edge back.
    if !bands.is_empty() {
        let mut d = String::new();
        for (i, b) in bands.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, mid(b.0), y(b.3));
        }
        for b in bands.iter().rev() {
            let _ = write!(d, "L{:.1},{:.1} ", mid(b.0), y(b.1));
        }
        let _ = write!(s, r##"<path class="band" d="{}Z" fill="#aed6f1" fill-opacity="0.6" stroke="none"/>"##, d);
        let line: Vec<String> = bands.iter().map(|b| format!("{:.1},{:.1}", mid(b.0), y(b.2))).collect();
        let _ = write!(
            s,
            r##"<polyline class="baseline" points="{}" fill="none" stroke="#2e86c1" stroke-dasharray="4 3"/>"##,
            line.join(" ")
        );
    }
    let line: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", mid(p.0), y(p.1))).collect();
    let _ = write!(
        s,
        r##"<polyline class="observed" points="{}" fill="none" stroke="#c0392b" stroke-width="1.5"/>"##,
        line.join(" ")
    );
    for p in points {
        let _ = write!(
            s,
            r##"<circle class="point" cx="{:.1}" cy="{:.1}" r="1.8" fill="#c0392b" data-t="{}" data-v="{}"><title>{} {}</title></circle>"##,
            mid(p.0),
            y(p.1),
            p.0,
            p.1,
            day_hhmm(p.0),
            fmt_num(p.1)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A small line of invocations per hour.
fn sparkline(per_hour: &BTreeMap<EpochMillis, u64>, from: EpochMillis, to: EpochMillis) -> String {
    let (w, h) = (220.0, 28.0);
    let max = per_hour.values().copied().max().unwrap_or(1).max(1) as f64;
    let hours = ((to - from) / HOUR).max(1);
    let pts: Vec<String> = (0..hours)
        .map(|i| {
            let v = per_hour.get(&(from + i * HOUR)).copied().unwrap_or(0) as f64;
            format!("{:.1},{:.1}", i as f64 / hours as f64 * w, h - 2.0 - v / max * (h - 4.0))
        })
        .collect();
    format!(
        r##"<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><polyline points="{}" fill="none" stroke="#2e86c1"/></svg>"##,
        pts.join(" ")
    )
}

/// Builds the page for `findings` (as the findings file holds them: opens and closes) over the
/// lake at `lake`.
pub fn build(src: &dyn ObjectSource, lake: &LakeLocation, findings: &[Finding], prices: &Prices) -> Result<String> {
    let mut episodes: Vec<Episode> = Vec::new();
    for f in findings.iter().filter(|f| !f.suppressed) {
        match episodes.iter_mut().find(|e| e.open.id == f.id) {
            Some(e) if f.status == Status::Closed => e.closed = Some(f),
            Some(_) => {}
            None => episodes.push(Episode { open: f, closed: (f.status == Status::Closed).then_some(f) }),
        }
    }
    episodes.sort_by_key(|e| (e.open.start, e.open.id.clone()));
    let specs: Vec<ChartSpec> = episodes.iter().map(|e| spec(e.open, e.end())).collect();
    let mut wanted: HashMap<Series, i64> = HashMap::new();
    for c in &specs {
        wanted.insert(c.series.clone(), c.width);
    }
    // The charts' windows and the week before them; without findings, every date.
    let (from, to) = match (specs.iter().map(|c| c.from).min(), specs.iter().map(|c| c.to).max()) {
        (Some(a), Some(b)) => (a - BAND_DAYS * DAY, b),
        _ => (0, i64::MAX / 2),
    };
    let g = gather(src, lake, &wanted, from, to, prices)?;

    let mut html = String::new();
    let title = "trailwatch report";
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body><h1>{title}</h1><p class="meta">Lake <code>{}</code>; {} findings in {} episodes. Times are UTC. Bands are the mean &plusmn; 2 standard deviations of the same window on the {BAND_DAYS} days before.</p>"#,
        esc(&if lake.bucket.is_empty() {
            lake.prefix.clone()
        } else {
            format!("s3://{}/{}", lake.bucket, lake.prefix)
        }),
        findings.len(),
        episodes.len()
    );

    // The findings table.
    html.push_str(r#"<h2 id="findings">Findings</h2><table class="findings"><thead><tr><th>severity</th><th>kind</th><th>account / region</th><th>subject</th><th>from</th><th>to</th><th>summary</th></tr></thead><tbody>"#);
    for (i, e) in episodes.iter().enumerate() {
        let f = e.open;
        let _ = write!(
            html,
            r##"<tr class="sev-{sev}"><td>{sev}</td><td><a href="#f{i}">{}</a></td><td>{}<br>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"##,
            f.kind,
            esc(&f.account_id),
            esc(&f.region),
            esc(&f.subject),
            day_hhmm(f.start),
            if e.closed.is_some() { day_hhmm(e.end()) } else { "open".into() },
            esc(e.last().summary.strip_prefix("Ended: ").unwrap_or(&e.last().summary)),
            sev = f.severity.as_str(),
        );
    }
    html.push_str("</tbody></table>");

    // One section a finding.
    let rc = trailwatch_alert::render::RenderConfig::default();
    for (i, (e, c)) in episodes.iter().zip(&specs).enumerate() {
        let f = e.last();
        let counts = g.counts.get(&c.series);
        let first = g.first.get(&(f.account_id.clone(), f.region.clone())).copied().unwrap_or(c.from);
        let empty = BTreeMap::new();
        let mut points = Vec::new();
        let mut bands = Vec::new();
        let mut t = c.from;
        while t < c.to {
            // No point before the lake's data begins for this account and region.
            if t + c.width > first {
                points.push((t, counts.and_then(|m| m.get(&t)).copied().unwrap_or(0.0)));
                // A window with no rows counted zero.
                if let Some((lo, mean, hi)) = band(counts.unwrap_or(&empty), t, first) {
                    bands.push((t, lo, mean, hi));
                }
            }
            t += c.width;
        }
        let _ = write!(
            html,
            r#"<section class="finding" id="f{i}" data-id="{}" data-kind="{}" data-start="{}" data-end="{}"><h2>[{}] {} &mdash; {}</h2><p>{} / {}. {}</p><p class="label">{}</p>{}"#,
            esc(&f.id),
            f.kind,
            e.open.start,
            e.end(),
            f.severity.as_str().to_uppercase(),
            f.kind,
            esc(&f.subject),
            esc(&f.account_id),
            esc(&f.region),
            esc(&f.summary),
            esc(&c.label),
            chart_svg(&f.id, c, &points, &bands, (e.open.start, e.end()))
        );
        if !f.top_contributors.is_empty() {
            html.push_str(r#"<table class="contributors"><thead><tr><th>dimension</th><th>value</th><th>count</th></tr></thead><tbody>"#);
            for k in &f.top_contributors {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&k.dimension),
                    esc(&k.value),
                    k.count
                );
            }
            html.push_str("</tbody></table>");
        }
        if let Some(rule) = &f.rule {
            let _ = write!(html, "<p>Rule <code>{}</code>: {}</p>", esc(&rule.id), esc(&rule.title));
        }
        let _ = write!(
            html,
            r#"<details><summary>Athena query of the evidence</summary><pre>{}</pre></details></section>"#,
            esc(&trailwatch_alert::render::athena_query(f, &rc))
        );
    }

    // The overview.
    html.push_str(r#"<h2 id="overview">Overview</h2><h3>Lambda functions</h3><table class="functions"><thead><tr><th>account</th><th>region</th><th>function</th><th>invocations</th><th>invocations per hour</th><th>peak concurrency</th><th>throttles</th><th>timeouts</th><th>errors</th><th>GB-seconds</th><th>cost USD</th></tr></thead><tbody>"#);
    let (lo, hi) = g
        .functions
        .values()
        .flat_map(|t| t.per_hour.keys().copied())
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t + HOUR)));
    for ((a, r, name), t) in &g.functions {
        let peak = t.busy.values().fold(0.0f64, |m, v| m.max(*v)) / MINUTE as f64;
        let _ = write!(
            html,
            r#"<tr data-function="{}"><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td>{}</td><td class="n">{:.1}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.0}</td><td class="n">{:.2}</td></tr>"#,
            esc(name),
            esc(a),
            esc(r),
            esc(name),
            t.invocations,
            if lo < hi { sparkline(&t.per_hour, lo, hi) } else { String::new() },
            peak,
            t.throttles,
            t.timeouts,
            t.errors,
            t.gb_seconds,
            t.cost
        );
    }
    html.push_str("</tbody></table><h3>CloudTrail</h3><table class=\"trails\"><thead><tr><th>account</th><th>region</th><th>records</th><th>errors</th></tr></thead><tbody>");
    for ((a, r), (n, errs)) in &g.trails {
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td>{}</td><td class="n">{n}</td><td class="n">{errs}</td></tr>"#,
            esc(a),
            esc(r)
        );
    }
    html.push_str("</tbody></table><p class=\"meta\">Peak concurrency is the busiest minute's average (running time in the minute over 60 s). Cost is billed duration and requests at the x86 list price. Counts are rows in the lake over the report's dates.</p></body></html>\n");
    Ok(html)
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1.05em}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.meta,.label{color:#555;font-size:.9em}\
tr.sev-critical td:first-child,tr.sev-high td:first-child{color:#a93226;font-weight:600}tr.sev-medium td:first-child{color:#b9770e}\
section.finding{border-top:1px solid #ccc;padding-top:.5em}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}\
svg.chart{max-width:100%;height:auto;background:#fff}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_data_cannot_become_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{1b}[31mb"), "a [31mb");
    }

    #[test]
    fn the_band_is_the_same_window_on_the_days_before() {
        let t = 10 * DAY + 3 * HOUR;
        let mut m = BTreeMap::new();
        for k in 1..=7 {
            m.insert(t - k * DAY, if k % 2 == 0 { 12.0 } else { 8.0 });
        }
        m.insert(t - 8 * DAY, 1000.0); // beyond the week: ignored
        let (lo, mean, hi) = band(&m, t, 0).unwrap();
        let (mean_x, sd) = (68.0 / 7.0, ((3.0 * 2.2857f64.powi(2) + 4.0 * 1.7143f64.powi(2)) / 7.0).sqrt());
        assert!(
            (mean - mean_x).abs() < 1e-9
                && (hi - (mean_x + 2.0 * sd)).abs() < 1e-3
                && (lo - (mean_x - 2.0 * sd)).abs() < 1e-3
        );
        // Days before the data began do not count; fewer than two days, no band.
        assert_eq!(band(&m, t, t - DAY), None);
    }
}
