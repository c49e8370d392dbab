//! `trailwatch demo`: nine days of a small organisation's CloudTrail and Lambda logs, written the
//! way AWS delivers them, with one incident of each statistical kind on the last two days and
//! benign look-alikes every day. The data is made here, deterministically (the same bytes every
//! run, from a seeded generator), so a newcomer needs nothing but the binary and the repository
//! stays small. `testdata/scenario` is the larger, labelled replay the detectors are scored on.
//!
//! What is written, under `<out>/input/`:
//! - `AWSLogs/<account>/CloudTrail/eu-west-1/YYYY/MM/DD/<account>_CloudTrail_eu-west-1_<stamp>_<16>.json.gz`:
//!   one gzipped `{"Records":[...]}` file per account trail and 5 minutes, records in the file
//!   of their delivery (2-10 minutes after the call, some later), as CloudTrail writes them (keys
//!   in serde_json's order, not AWS's; readers do not care);
//! - `cwlogs/eu-west-1/YYYY/MM/DD/HH/trailwatch-logs-1-<stamp>-<8 hex>`: one Firehose object per
//!   5-minute buffer, gzip members back to back, each a CloudWatch Logs subscription payload of
//!   a function's START / END / REPORT lines (and `Task timed out` lines).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use trailwatch_core::finding::Finding;
use trailwatch_core::time::format_rfc3339_millis;

/// 2026-03-02T00:00:00Z, a Monday.
const T0: i64 = 1_772_409_600;
/// Days of data: seven to learn from (the unusual-invocation baseline needs them), two with
/// incidents.
pub const DAYS: i64 = 9;
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// CloudTrail files and Firehose buffers: 5 minutes.
const WIN: i64 = 300;
const REGION: &str = "eu-west-1";
pub const PROD: &str = "111122223333";
pub const STAGING: &str = "444455556666";
/// Invoke data events are kept for one in this many invocations, as `testdata/scenario` does: a
/// modelling shortcut to keep the demo small (a real trail logs every Invoke its selectors name,
/// or none).
const SAMPLE: u64 = 5;
/// Relative activity by UTC hour (eu-west-1 keeps UTC in winter): office hours.
const OFFICE: [f64; 24] = [
    0.03, 0.02, 0.02, 0.02, 0.02, 0.03, 0.08, 0.25, 0.6, 0.95, 1.0, 1.0, 0.85, 0.95, 1.0, 0.95, 0.8, 0.5, 0.3, 0.2,
    0.12, 0.08, 0.05, 0.04,
];

/// A finding the demo's data was built to raise, and what it stands for.
#[derive(Debug, Clone)]
pub struct Planted {
    pub kind: &'static str,
    pub account: &'static str,
    pub subject: &'static str,
    pub start: i64,
    pub end: i64,
    pub what: &'static str,
    /// Findings of other kinds or subjects the same incident rightly raises: (kind, subject).
    pub also: &'static [(&'static str, &'static str)],
}

impl Planted {
    /// The finding reports this incident: same kind, account and subject, and its time within
    /// the incident (give or take the windows around it).
    pub fn matches(&self, f: &Finding) -> bool {
        self.is(f, self.kind, self.subject)
    }

    /// The finding is one of the incident's side findings.
    pub fn explains(&self, f: &Finding) -> bool {
        self.also.iter().any(|(k, s)| self.is(f, k, s))
    }

    fn is(&self, f: &Finding, kind: &str, subject: &str) -> bool {
        let (s, e) = (f.start / 1000, f.end.unwrap_or(f.start) / 1000);
        f.kind.as_str() == kind
            && f.account_id == self.account
            && f.subject.contains(subject)
            && s <= self.end + HOUR
            && e >= self.start - 15 * 60
    }
}

/// The incidents, on days 8 and 9 (Monday 2026-03-09 and Tuesday 2026-03-10).
pub fn planted() -> Vec<Planted> {
    let d8 = T0 + 7 * DAY;
    let d9 = T0 + 8 * DAY;
    let at = |day: i64, h: i64, m: i64| day + h * HOUR + m * 60;
    vec![
        Planted {
            kind: "throttling",
            account: PROD,
            subject: "thumbnailer",
            start: at(d8, 11, 20),
            end: at(d8, 11, 40),
            what: "a retry storm from the app backend against thumbnailer's reserved concurrency",
            also: &[],
        },
        Planted {
            kind: "concurrency_spike",
            account: PROD,
            subject: "orders-api",
            start: at(d8, 16, 10),
            end: at(d8, 16, 55),
            what: "denial of wallet: a bot hammers the public orders API, 30x the usual rate of 5x slower requests",
            // API Gateway's Invoke data events, per principal: its calls rose as much.
            also: &[("api_call_rate", "apigateway.amazonaws.com")],
        },
        Planted {
            kind: "api_error_rate",
            account: STAGING,
            subject: "user/svc-legacy-backup",
            start: at(d8, 21, 40),
            end: at(d8, 21, 53),
            what: "enumeration: a leaked access key tries 30 APIs across 19 services, most denied",
            also: &[],
        },
        Planted {
            kind: "unusual_invocation",
            account: PROD,
            subject: "orders-api",
            start: at(d9, 3, 4),
            end: at(d9, 3, 14),
            what: "orders-api invoked at night by a role of an account never seen before",
            also: &[],
        },
        Planted {
            kind: "api_call_rate",
            account: PROD,
            subject: "ListBuckets",
            start: at(d9, 9, 10),
            end: at(d9, 9, 30),
            what: "stolen app-backend credentials list every bucket from a new IP, 40x the usual rate",
            also: &[],
        },
        Planted {
            kind: "timeouts",
            account: PROD,
            subject: "auth-authorizer",
            start: at(d9, 13, 30),
            end: at(d9, 15, 30),
            what: "a downstream hang: 40% of auth-authorizer's invocations time out",
            also: &[],
        },
        Planted {
            kind: "log_silence",
            account: STAGING,
            subject: "cloudtrail",
            start: at(d9, 14, 30),
            end: at(d9, 17, 30),
            what: "StopLogging, then three hours without CloudTrail until StartLogging",
            also: &[],
        },
    ]
}

/// The look-alikes that must stay quiet, for the summary.
pub const BENIGN: &[&str] = &[
    "nightly-report: 400 invocations of 20 s every night at 02:00 (a daily burst, learned)",
    "AWS Config sweeps Describe APIs every hour (bursts on a schedule, learned)",
    "people's AccessDenied errors in office hours",
];

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, a: i64, b: i64) -> i64 {
        a + self.below((b - a).max(1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.f64().max(1e-12), self.f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn poisson(&mut self, lam: f64) -> u64 {
        if lam <= 0.0 {
            return 0;
        }
        if lam >= 30.0 {
            return (lam + lam.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let (l, mut k, mut p) = ((-lam).exp(), 0, 1.0);
        loop {
            p *= self.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize])).collect()
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..])
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| char::from(A[self.below(A.len() as u64) as usize])).collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Who {
    /// An IAM role's session: name, session name.
    Role(&'static str, &'static str),
    User(&'static str),
    /// An AWS service acting for the account (`invokedBy`).
    Service(&'static str),
}

#[derive(Clone, Copy)]
struct Principal {
    who: Who,
    account: &'static str,
    ip: &'static str,
    ua: &'static str,
}

const UA_BOTO: &str = "Boto3/1.34.44 md/Botocore#1.34.44 ua/2.0 os/linux#5.10.205-195.807.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.1 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.44";
const UA_GO: &str = "aws-sdk-go-v2/1.24.1 os/linux lang/go#1.21.6 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.142.0";
const UA_CONSOLE: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const UA_CLI: &str = "aws-cli/2.15.10 Python/3.11.6 Linux/6.5.0-1014-azure exe/x86_64.ubuntu.22 prompt/off";

impl Principal {
    const fn role(
        account: &'static str,
        name: &'static str,
        session: &'static str,
        ip: &'static str,
        ua: &'static str,
    ) -> Self {
        Principal { who: Who::Role(name, session), account, ip, ua }
    }

    fn identity(&self) -> Value {
        let a = self.account;
        match self.who {
            Who::Service(s) => json!({"type": "AWSService", "invokedBy": s}),
            Who::User(name) => json!({
                "type": "IAMUser", "principalId": format!("AIDA{}", id_of(&[a, name], 17)),
                "arn": format!("arn:aws:iam::{a}:user/{name}"), "accountId": a,
                "accessKeyId": format!("AKIA{}", id_of(&["key", a, name], 16)), "userName": name,
            }),
            Who::Role(name, session) => {
                let role_id = format!("AROA{}", id_of(&[a, name], 17));
                json!({
                    "type": "AssumedRole", "principalId": format!("{role_id}:{session}"),
                    "arn": format!("arn:aws:sts::{a}:assumed-role/{name}/{session}"), "accountId": a,
                    "accessKeyId": format!("ASIA{}", id_of(&["sess", a, name, session], 16)),
                    "sessionContext": {
                        "sessionIssuer": {"type": "Role", "principalId": role_id,
                            "arn": format!("arn:aws:iam::{a}:role/{name}"), "accountId": a, "userName": name},
                        "webIdFederationData": {},
                        "attributes": {"creationDate": "2026-03-01T23:12:09Z", "mfaAuthenticated": "false"}
                    }
                })
            }
        }
    }
}

/// A stable id of `n` characters from its parts (FNV-1a stretched over splitmix64).
fn id_of(parts: &[&str], n: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let mut r = Rng(h);
    (0..n).map(|_| char::from(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[r.below(36) as usize])).collect()
}

fn iso(ts: i64) -> String {
    format_rfc3339_millis(ts * 1000).replace(".000Z", "Z")
}

/// Activity at `ts` for a profile: office hours, customer traffic (a floor at night, half at
/// weekends), or flat.
#[derive(Clone, Copy)]
enum Profile {
    Office,
    Traffic,
    Flat,
}

fn activity(p: Profile, ts: i64) -> f64 {
    let hour = (ts.rem_euclid(DAY)) as f64 / HOUR as f64;
    let i = hour as usize % 24;
    let f = OFFICE[i] + (OFFICE[(i + 1) % 24] - OFFICE[i]) * (hour - i as f64);
    let weekend = (ts - T0).div_euclid(DAY).rem_euclid(7) >= 5;
    match p {
        Profile::Flat => 1.0,
        Profile::Office => f * if weekend { 0.06 } else { 1.0 },
        Profile::Traffic => (0.12 + 0.88 * f) * if weekend { 0.45 } else { 1.0 },
    }
}

fn service_of(source: &str) -> &str {
    source.split('.').next().unwrap_or(source)
}

/// One CloudTrail record as AWS writes it.
#[allow(clippy::too_many_arguments)]
fn record(
    rng: &mut Rng,
    account: &str,
    p: &Principal,
    source: &str,
    name: &str,
    ts: i64,
    params: Value,
    error: Option<(&str, &str)>,
) -> Value {
    let (ip, ua) = match p.who {
        Who::Service(s) => (s, s),
        _ => (p.ip, p.ua),
    };
    let read_only = ["Describe", "Get", "List", "Head", "Lookup"].iter().any(|v| name.starts_with(v))
        || matches!(name, "Decrypt" | "GenerateDataKey");
    let data = matches!(name, "GetObject" | "PutObject" | "Invoke");
    let mut r = json!({
        "eventVersion": if data { "1.11" } else { "1.09" },
        "userIdentity": p.identity(),
        "eventTime": iso(ts),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": ip,
        "userAgent": ua,
    });
    let m = r.as_object_mut().expect("an object");
    if let Some((code, message)) = error {
        m.insert("errorCode".into(), json!(code));
        m.insert("errorMessage".into(), json!(message));
    }
    m.insert("requestParameters".into(), params);
    m.insert("responseElements".into(), Value::Null);
    m.insert("requestID".into(), json!(rng.uuid()));
    m.insert("eventID".into(), json!(rng.uuid()));
    m.insert("readOnly".into(), json!(read_only));
    m.insert("eventType".into(), json!("AwsApiCall"));
    m.insert("managementEvent".into(), json!(!data));
    m.insert("recipientAccountId".into(), json!(account));
    if p.account != account && !matches!(p.who, Who::Service(_)) {
        m.insert("sharedEventID".into(), json!(rng.uuid()));
    }
    m.insert("eventCategory".into(), json!(if data { "Data" } else { "Management" }));
    if !matches!(p.who, Who::Service(_)) {
        m.insert(
            "tlsDetails".into(),
            json!({"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                   "clientProvidedHostHeader": format!("{}.{REGION}.amazonaws.com", service_of(source))}),
        );
    }
    r
}

fn params_for(rng: &mut Rng, account: &str, name: &str) -> Value {
    let bucket = |rng: &mut Rng| format!("acme-{}-{account}", rng.pick(&["media", "artifacts", "exports"]));
    match name {
        "GetObject" | "PutObject" => {
            let b = bucket(rng);
            json!({"bucketName": b, "Host": format!("{b}.s3.{REGION}.amazonaws.com"),
                   "key": format!("uploads/{:06}/{}.jpg", rng.below(1_000_000), rng.hex(12))})
        }
        "ListBuckets" => json!({"Host": "s3.amazonaws.com"}),
        "GetBucketAcl" | "GetBucketEncryption" => {
            let b = bucket(rng);
            json!({"bucketName": b, "Host": format!("{b}.s3.{REGION}.amazonaws.com")})
        }
        "DescribeInstances" => json!({"instancesSet": {}, "filterSet": {}}),
        "DescribeSecurityGroups" => json!({"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}}),
        "DescribeVpcs" | "DescribeSubnets" => json!({"filterSet": {}}),
        "Decrypt" => json!({"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
        "GenerateDataKey" => json!({"keyId": format!("alias/app-{account}"), "keySpec": "AES_256"}),
        "DescribeTable" | "GetItem" | "PutItem" | "Query" => {
            json!({"tableName": rng.pick(&["orders", "sessions", "customers"])})
        }
        "GetSecretValue" => json!({"secretId": "prod/orders/db"}),
        "GetFunction20150331v2" | "UpdateFunctionCode20150331v2" => {
            json!({"functionName": rng.pick(&["orders-api", "thumbnailer", "auth-authorizer", "etl-loader"])})
        }
        "ListFunctions20150331" => json!({"maxItems": 50}),
        _ => Value::Null,
    }
}

/// The service and error an API's denial comes with.
fn denial(source: &str, name: &str, p: &Principal) -> (&'static str, String) {
    let arn = match p.who {
        Who::User(n) => format!("arn:aws:iam::{}:user/{n}", p.account),
        Who::Role(n, s) => format!("arn:aws:sts::{}:assumed-role/{n}/{s}", p.account),
        Who::Service(s) => s.to_string(),
    };
    match service_of(source) {
        "ec2" => ("Client.UnauthorizedOperation", "You are not authorized to perform this operation.".into()),
        "s3" => ("AccessDenied", "Access Denied".into()),
        svc => {
            // The IAM action drops the API version some event names carry (ListFunctions20150331).
            let action = &name[..name.find(|c: char| c.is_ascii_digit()).unwrap_or(name.len())];
            (
                "AccessDeniedException",
                format!("User: {arn} is not authorized to perform: {svc}:{action} on resource: * because no identity-based policy allows the {svc}:{action} action"),
            )
        }
    }
}

/// A Lambda function and its usual traffic.
struct Function {
    account: &'static str,
    name: &'static str,
    memory: u32,
    timeout_s: u32,
    median_ms: f64,
    sigma: f64,
    /// Invocations an hour at the profile's peak.
    per_hour: f64,
    profile: Profile,
    invoker: Principal,
}

const APIGW: Principal = Principal { who: Who::Service("apigateway.amazonaws.com"), account: PROD, ip: "", ua: "" };
const S3SVC: Principal = Principal { who: Who::Service("s3.amazonaws.com"), account: PROD, ip: "", ua: "" };
const EVENTS: Principal = Principal { who: Who::Service("events.amazonaws.com"), account: PROD, ip: "", ua: "" };
const EVENTS_STAGING: Principal =
    Principal { who: Who::Service("events.amazonaws.com"), account: STAGING, ip: "", ua: "" };

fn functions() -> Vec<Function> {
    vec![
        Function {
            account: PROD,
            name: "orders-api",
            memory: 512,
            timeout_s: 6,
            median_ms: 120.0,
            sigma: 0.5,
            per_hour: 600.0,
            profile: Profile::Traffic,
            invoker: APIGW,
        },
        Function {
            account: PROD,
            name: "auth-authorizer",
            memory: 256,
            timeout_s: 3,
            median_ms: 40.0,
            sigma: 0.4,
            per_hour: 400.0,
            profile: Profile::Traffic,
            invoker: APIGW,
        },
        Function {
            account: PROD,
            name: "thumbnailer",
            memory: 1024,
            timeout_s: 30,
            median_ms: 1500.0,
            sigma: 0.45,
            per_hour: 90.0,
            profile: Profile::Traffic,
            invoker: S3SVC,
        },
        Function {
            account: STAGING,
            name: "etl-loader",
            memory: 1024,
            timeout_s: 120,
            median_ms: 4000.0,
            sigma: 0.6,
            per_hour: 60.0,
            profile: Profile::Flat,
            invoker: EVENTS_STAGING,
        },
    ]
}

/// The nightly batch: `nightly-report`, 02:00 UTC, a burst the baseline learns.
const NIGHTLY: &str = "nightly-report";

/// One invocation to simulate.
struct Inv {
    start_ms: i64,
    invoker: Principal,
    slow: f64,
    /// Force its Invoke data event into the trail (a caller from another account is always
    /// logged by the trail's selector).
    logged: bool,
}

/// A log stream: (account, log group, stream name).
type Stream = (&'static str, String, String);
/// A log event: (time ms, id, message).
type LogEvent = (i64, String, String);

/// Everything generated, held until its 5-minute delivery window is written.
#[derive(Default)]
struct Buffers {
    /// (account, delivery window) -> (event time ms, record JSON).
    trail: BTreeMap<(&'static str, i64), Vec<(i64, String)>>,
    /// delivery window -> (account, log group, stream) -> (time ms, id, message).
    logs: BTreeMap<i64, BTreeMap<Stream, Vec<LogEvent>>>,
    log_id: u64,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    pub trail_files: usize,
    pub trail_records: usize,
    pub log_objects: usize,
    pub invocations: usize,
}

struct Gen {
    rng: Rng,
    buf: Buffers,
    out: std::path::PathBuf,
    written: Written,
    /// [from, to) in seconds when the staging trail is stopped.
    staging_silence: (i64, i64),
}

/// Writes the demo's input under `out/input`.
pub fn generate(out: &Path) -> Result<Written> {
    let silence_from = T0 + 8 * DAY + 14 * HOUR + 30 * 60;
    let mut g = Gen {
        rng: Rng(20260302),
        buf: Buffers::default(),
        out: out.join("input"),
        written: Written::default(),
        staging_silence: (silence_from + 1, silence_from + 3 * HOUR),
    };
    for d in 0..DAYS {
        let day0 = T0 + d * DAY;
        g.background(day0);
        for f in functions() {
            g.lambda(&f, day0);
        }
        g.nightly(day0);
        g.incidents(d, day0);
        g.flush((day0 + DAY) / WIN)?;
    }
    g.flush(i64::MAX)?;
    Ok(g.written)
}

const AUTOSCALER: Principal = Principal::role(PROD, "eks-node-autoscaler", "i-0a1b2c3d4e5f60718", "10.20.3.41", UA_GO);
const BACKEND: Principal = Principal::role(PROD, "app-backend", "ecs-task-7f3a", "10.20.8.17", UA_BOTO);
const OPS: Principal =
    Principal::role(PROD, "AWSReservedSSO_AdministratorAccess_5f2c", "maria@example.com", "81.2.69.160", UA_CONSOLE);
const CONFIG: Principal = Principal { who: Who::Service("config.amazonaws.com"), account: PROD, ip: "", ua: "" };
const ETL: Principal = Principal::role(STAGING, "etl-runner", "etl-runner-session", "10.40.1.9", UA_BOTO);
const CI: Principal = Principal::role(STAGING, "ci-deploy", "github-actions-2231", "140.82.112.5", UA_CLI);
const LEGACY: Principal =
    Principal { who: Who::User("svc-legacy-backup"), account: STAGING, ip: "10.40.2.77", ua: UA_CLI };
const STAGING_OPS: Principal =
    Principal::role(STAGING, "AWSReservedSSO_AdministratorAccess_5f2c", "tom@example.com", "81.2.69.161", UA_CONSOLE);

/// Background callers: (principal, profile, calls per 5 minutes at peak, (source, API) choices).
type Caller = (Principal, Profile, f64, &'static [(&'static str, &'static str)]);

fn callers() -> Vec<(&'static str, Caller)> {
    const EC2: &str = "ec2.amazonaws.com";
    const S3: &str = "s3.amazonaws.com";
    const KMS: &str = "kms.amazonaws.com";
    const DDB: &str = "dynamodb.amazonaws.com";
    const LAMBDA: &str = "lambda.amazonaws.com";
    const SM: &str = "secretsmanager.amazonaws.com";
    vec![
        (
            PROD,
            (
                BACKEND,
                Profile::Traffic,
                40.0,
                &[
                    (S3, "GetObject"),
                    (S3, "GetObject"),
                    (S3, "PutObject"),
                    (KMS, "Decrypt"),
                    (KMS, "GenerateDataKey"),
                    (DDB, "DescribeTable"),
                    (SM, "GetSecretValue"),
                    (S3, "ListBuckets"),
                ],
            ),
        ),
        (PROD, (AUTOSCALER, Profile::Flat, 8.0, &[(EC2, "DescribeInstances"), (EC2, "DescribeSubnets")])),
        (
            PROD,
            (
                OPS,
                Profile::Office,
                6.0,
                &[
                    (EC2, "DescribeInstances"),
                    (LAMBDA, "ListFunctions20150331"),
                    (LAMBDA, "GetFunction20150331v2"),
                    (S3, "ListBuckets"),
                    (S3, "GetBucketAcl"),
                ],
            ),
        ),
        (STAGING, (ETL, Profile::Flat, 16.0, &[(S3, "GetObject"), (S3, "PutObject"), (KMS, "Decrypt")])),
        (
            STAGING,
            (CI, Profile::Office, 2.0, &[(LAMBDA, "GetFunction20150331v2"), (LAMBDA, "UpdateFunctionCode20150331v2")]),
        ),
        (STAGING, (LEGACY, Profile::Flat, 0.5, &[(S3, "GetObject"), (S3, "PutObject")])),
        (STAGING, (STAGING_OPS, Profile::Office, 3.0, &[(EC2, "DescribeInstances"), (S3, "ListBuckets")])),
    ]
}

impl Gen {
    /// Delivers a record: into the file of its account and delivery window, 2-10 minutes after
    /// the call (3% 10-15 minutes), unless that account's trail is stopped.
    fn trail(&mut self, account: &'static str, ts_ms: i64, rec: Value) {
        let ts = ts_ms / 1000;
        if account == STAGING && ts >= self.staging_silence.0 && ts < self.staging_silence.1 {
            return;
        }
        let u = self.rng.f64();
        let delay = if u < 0.03 { self.rng.range(600, 900) } else { self.rng.range(120, 600) };
        let win = (ts + delay) / WIN;
        self.buf.trail.entry((account, win)).or_default().push((ts_ms, rec.to_string()));
        self.written.trail_records += 1;
    }

    fn call(
        &mut self,
        account: &'static str,
        p: &Principal,
        source: &str,
        name: &str,
        ts_ms: i64,
        error: Option<(&str, &str)>,
    ) {
        let params = params_for(&mut self.rng, account, name);
        let rec = record(&mut self.rng, account, p, source, name, ts_ms / 1000, params, error);
        self.trail(account, ts_ms, rec);
    }

    fn background(&mut self, day0: i64) {
        for (account, (p, profile, per_win, apis)) in callers() {
            for w in 0..DAY / WIN {
                let ws = day0 + w * WIN;
                let n = self.rng.poisson(per_win * activity(profile, ws + WIN / 2));
                for _ in 0..n {
                    let ts_ms = ws * 1000 + self.rng.range(0, WIN * 1000);
                    let &(src, name) = self.rng.pick(apis);
                    // People try things they may not do: a few benign denials.
                    let error = (matches!(p.who, Who::Role(r, _) if r.starts_with("AWSReserved"))
                        && self.rng.f64() < 0.04)
                        .then(|| denial(src, name, &p));
                    let error = error.as_ref().map(|(c, m)| (*c, m.as_str()));
                    self.call(account, &p, src, name, ts_ms, error);
                }
            }
        }
        // AWS Config reads the account's network every hour at :17, 20-30 calls of each.
        for h in 0..24 {
            let at = day0 + h * HOUR + 17 * 60;
            for api in ["DescribeSecurityGroups", "DescribeVpcs", "DescribeSubnets"] {
                for _ in 0..self.rng.range(20, 31) {
                    let ts_ms = at * 1000 + self.rng.range(0, 90_000);
                    self.call(PROD, &CONFIG, "ec2.amazonaws.com", api, ts_ms, None);
                }
            }
        }
    }

    fn lambda(&mut self, f: &Function, day0: i64) {
        let mut invs = Vec::new();
        for w in 0..DAY / WIN {
            let ws = day0 + w * WIN;
            let n = self.rng.poisson(f.per_hour / 12.0 * activity(f.profile, ws + WIN / 2));
            for _ in 0..n {
                invs.push(Inv {
                    start_ms: ws * 1000 + self.rng.range(0, WIN * 1000),
                    invoker: f.invoker,
                    slow: 1.0,
                    logged: false,
                });
            }
        }
        self.incident_invocations(f, day0, &mut invs);
        self.invoke_all(f, invs, day0);
    }

    /// Extra invocations of the incidents.
    fn incident_invocations(&mut self, f: &Function, day0: i64, invs: &mut Vec<Inv>) {
        let d = (day0 - T0) / DAY;
        if f.name == "orders-api" && d == 7 {
            // Denial of wallet: 30x the usual peak rate, each request 5x slower, for 45 minutes.
            let from = day0 + 16 * HOUR + 10 * 60;
            for _ in 0..(f.per_hour / 60.0 * 30.0 * 45.0) as usize {
                let start_ms = from * 1000 + self.rng.range(0, 45 * 60_000);
                invs.push(Inv { start_ms, invoker: APIGW, slow: 5.0, logged: false });
            }
        }
        if f.name == "orders-api" && d == 8 {
            // A role of a never-seen account, at night.
            const STRANGER: Principal = Principal::role(
                "987654321098",
                "DataSyncRole",
                "sync-7731",
                "185.220.101.47",
                "python-requests/2.31.0",
            );
            let from = day0 + 3 * HOUR + 4 * 60;
            for i in 0..20 {
                let start_ms = from * 1000 + i * 30_000 + self.rng.range(0, 20_000);
                invs.push(Inv { start_ms, invoker: STRANGER, slow: 1.0, logged: true });
            }
        }
        invs.sort_by_key(|i| i.start_ms);
    }

    fn nightly(&mut self, day0: i64) {
        let f = Function {
            account: PROD,
            name: NIGHTLY,
            memory: 2048,
            timeout_s: 900,
            median_ms: 20_000.0,
            sigma: 0.3,
            per_hour: 0.0,
            profile: Profile::Flat,
            invoker: EVENTS,
        };
        let n = 380 + self.rng.below(40) as i64;
        let invs = (0..n)
            .map(|_| Inv {
                start_ms: (day0 + 2 * HOUR) * 1000 + self.rng.range(0, 10 * 60_000),
                invoker: EVENTS,
                slow: 1.0,
                logged: false,
            })
            .collect::<Vec<_>>();
        let mut invs = invs;
        invs.sort_by_key(|i| i.start_ms);
        self.invoke_all(&f, invs, day0);
    }

    /// Simulates invocations: log lines to the Firehose buffers, sampled Invoke data events to
    /// the trail.
    fn invoke_all(&mut self, f: &Function, invs: Vec<Inv>, day0: i64) {
        let d = (day0 - T0) / DAY;
        // auth-authorizer's downstream hangs on day 9, 13:30-15:30: 40% time out.
        let hang = (f.name == "auth-authorizer" && d == 8)
            .then_some(((day0 + 13 * HOUR + 30 * 60) * 1000, (day0 + 15 * HOUR + 30 * 60) * 1000));
        let date = &iso(day0)[..10].replace('-', "/");
        let group = format!("/aws/lambda/{}", f.name);
        let streams: Vec<String> = (0..6)
            .map(|i| format!("{date}/[$LATEST]{}", id_of(&[f.name, date, &i.to_string()], 32).to_lowercase()))
            .collect();
        for inv in invs {
            let rid = self.rng.uuid();
            let mut dur = self.rng.lognormal(f.median_ms, f.sigma) * inv.slow;
            let mut timeout = dur >= f.timeout_s as f64 * 1000.0;
            if hang.is_some_and(|(a, b)| inv.start_ms >= a && inv.start_ms < b) && self.rng.f64() < 0.4 {
                timeout = true;
            }
            if timeout {
                dur = f.timeout_s as f64 * 1000.0;
            }
            let dur = (dur * 100.0).round() / 100.0;
            let end = inv.start_ms + dur.ceil() as i64;
            let stream = streams[self.rng.below(streams.len() as u64) as usize].clone();
            let used = (f.memory as f64 * (0.3 + 0.2 * self.rng.f64())) as u32;
            let mut lines = vec![(inv.start_ms, format!("START RequestId: {rid} Version: $LATEST\n"))];
            if timeout {
                lines.push((
                    end,
                    format!("{} {rid} Task timed out after {}.00 seconds\n\n", format_rfc3339_millis(end), f.timeout_s),
                ));
            }
            lines.push((end, format!("END RequestId: {rid}\n")));
            lines.push((
                end,
                format!(
                    "REPORT RequestId: {rid}\tDuration: {dur:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {used} MB\t{}\n",
                    dur.ceil() as i64,
                    f.memory,
                    if timeout { "Status: timeout" } else { "" }
                ),
            ));
            for (t, msg) in lines {
                self.log(f.account, &group, &stream, t, msg);
            }
            self.written.invocations += 1;
            if inv.logged || self.rng.below(SAMPLE) == 0 {
                let rec = self.invoke_event(f, &inv.invoker, inv.start_ms, &rid, None);
                self.trail(f.account, inv.start_ms, rec);
            }
        }
    }

    fn invoke_event(
        &mut self,
        f: &Function,
        p: &Principal,
        ts_ms: i64,
        rid: &str,
        error: Option<(&str, &str)>,
    ) -> Value {
        let arn = format!("arn:aws:lambda:{REGION}:{}:function:{}", f.account, f.name);
        // S3 and EventBridge invoke asynchronously.
        let params = match p.who {
            Who::Service("s3.amazonaws.com" | "events.amazonaws.com") => {
                json!({"functionName": arn, "invocationType": "Event"})
            }
            _ => json!({"functionName": arn}),
        };
        let mut rec =
            record(&mut self.rng, f.account, p, "lambda.amazonaws.com", "Invoke", ts_ms / 1000, params, error);
        rec["requestID"] = json!(rid);
        rec["resources"] = json!([{"accountId": f.account, "type": "AWS::Lambda::Function", "ARN": arn}]);
        if error.is_none() {
            rec["additionalEventData"] = json!({"functionVersion": format!("{arn}:$LATEST")});
        }
        rec
    }

    /// A log line reaches Firehose 0.2-20 s after it was written.
    fn log(&mut self, account: &'static str, group: &str, stream: &str, t: i64, msg: String) {
        let arrive = t + self.rng.range(200, 20_000);
        self.buf.log_id += 1;
        let id = format!("3{t:019}{:036}", self.buf.log_id);
        self.buf
            .logs
            .entry(arrive / 1000 / WIN)
            .or_default()
            .entry((account, group.to_string(), stream.to_string()))
            .or_default()
            .push((t, id, msg));
    }

    /// The incidents CloudTrail shows by itself.
    fn incidents(&mut self, d: i64, day0: i64) {
        match d {
            7 => {
                // 11:20-11:40: the app backend, retrying at once, storms thumbnailer past its
                // reserved concurrency with synchronous calls; Lambda answers
                // TooManyRequestsException (sampled like any Invoke).
                let f = functions().into_iter().find(|f| f.name == "thumbnailer").expect("defined");
                let from = day0 + 11 * HOUR + 20 * 60;
                for _ in 0..700 {
                    let ts_ms = from * 1000 + self.rng.range(0, 20 * 60_000);
                    if self.rng.below(SAMPLE) == 0 {
                        let rid = self.rng.uuid();
                        let rec = self.invoke_event(
                            &f,
                            &BACKEND,
                            ts_ms,
                            &rid,
                            Some(("TooManyRequestsException", "Rate Exceeded.")),
                        );
                        self.trail(PROD, ts_ms, rec);
                    }
                }
                // 21:40-21:53: a leaked key of svc-legacy-backup tries what it can, across
                // services; most is denied.
                const TRIES: &[(&str, &str)] = &[
                    ("ec2.amazonaws.com", "DescribeInstances"),
                    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
                    ("ec2.amazonaws.com", "DescribeVpcs"),
                    ("ec2.amazonaws.com", "DescribeSnapshots"),
                    ("ec2.amazonaws.com", "DescribeKeyPairs"),
                    ("s3.amazonaws.com", "ListBuckets"),
                    ("s3.amazonaws.com", "GetBucketPolicy"),
                    ("elasticloadbalancing.amazonaws.com", "DescribeLoadBalancers"),
                    ("ecs.amazonaws.com", "ListClusters"),
                    ("athena.amazonaws.com", "ListWorkGroups"),
                    ("lambda.amazonaws.com", "ListFunctions20150331"),
                    ("lambda.amazonaws.com", "GetAccountSettings20160819"),
                    ("kms.amazonaws.com", "ListKeys"),
                    ("kms.amazonaws.com", "ListAliases"),
                    ("secretsmanager.amazonaws.com", "ListSecrets"),
                    ("secretsmanager.amazonaws.com", "GetSecretValue"),
                    ("ssm.amazonaws.com", "DescribeParameters"),
                    ("ssm.amazonaws.com", "GetParameters"),
                    ("dynamodb.amazonaws.com", "ListTables"),
                    ("rds.amazonaws.com", "DescribeDBInstances"),
                    ("rds.amazonaws.com", "DescribeDBSnapshots"),
                    ("sns.amazonaws.com", "ListTopics"),
                    ("sqs.amazonaws.com", "ListQueues"),
                    ("ecr.amazonaws.com", "DescribeRepositories"),
                    ("logs.amazonaws.com", "DescribeLogGroups"),
                    ("cloudtrail.amazonaws.com", "DescribeTrails"),
                    ("cloudtrail.amazonaws.com", "GetTrailStatus"),
                    ("glue.amazonaws.com", "GetDatabases"),
                    ("guardduty.amazonaws.com", "ListDetectors"),
                    ("sts.amazonaws.com", "GetCallerIdentity"),
                ];
                let from = day0 + 21 * HOUR + 40 * 60;
                let attacker = Principal { ip: "45.137.21.9", ua: "aws-cli/1.18.69 Python/2.7.18", ..LEGACY };
                for (i, &(src, name)) in TRIES.iter().enumerate() {
                    for k in 0..2 {
                        let ts_ms = from * 1000 + i as i64 * 25_000 + k * 4_000 + self.rng.range(0, 3_000);
                        let allowed = matches!(name, "GetCallerIdentity" | "ListBuckets");
                        let e = (!allowed).then(|| denial(src, name, &attacker));
                        let e = e.as_ref().map(|(c, m)| (*c, m.as_str()));
                        self.call(STAGING, &attacker, src, name, ts_ms, e);
                    }
                }
            }
            8 => {
                // 09:10-09:30: app-backend's credentials, stolen, list buckets from a new IP.
                let thief = Principal { ip: "198.51.100.23", ua: UA_CLI, ..BACKEND };
                let from = day0 + 9 * HOUR + 10 * 60;
                for _ in 0..240 {
                    let ts_ms = from * 1000 + self.rng.range(0, 20 * 60_000);
                    self.call(PROD, &thief, "s3.amazonaws.com", "ListBuckets", ts_ms, None);
                }
                // 14:30: the staging trail is stopped; 17:30 it is started again.
                let (a, b) = self.staging_silence;
                let who = Principal { ip: "45.137.21.9", ..STAGING_OPS };
                let stop = record(
                    &mut self.rng,
                    STAGING,
                    &who,
                    "cloudtrail.amazonaws.com",
                    "StopLogging",
                    a - 1,
                    json!({"name": format!("arn:aws:cloudtrail:{REGION}:{STAGING}:trail/account-trail")}),
                    None,
                );
                self.trail(STAGING, (a - 1) * 1000, stop);
                let start = record(
                    &mut self.rng,
                    STAGING,
                    &STAGING_OPS,
                    "cloudtrail.amazonaws.com",
                    "StartLogging",
                    b,
                    json!({"name": format!("arn:aws:cloudtrail:{REGION}:{STAGING}:trail/account-trail")}),
                    None,
                );
                self.trail(STAGING, b * 1000, start);
            }
            _ => {}
        }
    }

    /// Writes every buffered delivery window before `before`.
    fn flush(&mut self, before: i64) -> Result<()> {
        let keys: Vec<(&'static str, i64)> = self.buf.trail.keys().filter(|(_, w)| *w < before).copied().collect();
        for key in keys {
            let (account, win) = key;
            let mut recs = self.buf.trail.remove(&key).expect("listed");
            recs.sort_by_key(|r| r.0);
            let fts = (win + 1) * WIN;
            let t = iso(fts);
            let stamp = format!("{}{}{}T{}{}Z", &t[..4], &t[5..7], &t[8..10], &t[11..13], &t[14..16]);
            let rel = format!(
                "AWSLogs/{account}/CloudTrail/{REGION}/{}/{}/{}/{account}_CloudTrail_{REGION}_{stamp}_{}.json.gz",
                &t[..4],
                &t[5..7],
                &t[8..10],
                self.rng.alnum(16)
            );
            let mut body = String::from("{\"Records\":[");
            for (i, (_, r)) in recs.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(r);
            }
            body.push_str("]}");
            self.write(&rel, &gzip(body.as_bytes())?)?;
            self.written.trail_files += 1;
        }
        let wins: Vec<i64> = self.buf.logs.range(..before).map(|(w, _)| *w).collect();
        for win in wins {
            let streams = self.buf.logs.remove(&win).expect("listed");
            let mut members = Vec::new();
            for ((owner, group, stream), mut evs) in streams {
                evs.sort();
                for chunk in evs.chunks(400) {
                    let doc = json!({
                        "messageType": "DATA_MESSAGE", "owner": owner, "logGroup": group, "logStream": stream,
                        "subscriptionFilters": ["trailwatch"],
                        "logEvents": chunk.iter().map(|(t, id, m)| json!({"id": id, "timestamp": t, "message": m})).collect::<Vec<_>>(),
                    });
                    members.extend(gzip(doc.to_string().as_bytes())?);
                }
            }
            let ots = win * WIN + self.rng.range(0, 25);
            let t = iso(ots);
            let rel = format!(
                "cwlogs/{REGION}/{}/{}/{}/{}/trailwatch-logs-1-{}-{}-{}-{}-{}-{}-{}",
                &t[..4],
                &t[5..7],
                &t[8..10],
                &t[11..13],
                &t[..4],
                &t[5..7],
                &t[8..10],
                &t[11..13],
                &t[14..16],
                &t[17..19],
                self.rng.hex(8)
            );
            self.write(&rel, &members)?;
            self.written.log_objects += 1;
        }
        Ok(())
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_its_clock_is_a_monday() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert!((0..100).all(|_| a.next() == b.next()));
        assert_eq!(iso(T0), "2026-03-02T00:00:00Z");
        // 2026-03-02 is a Monday: 1970-01-01 was a Thursday.
        assert_eq!((T0 / DAY + 3) % 7, 0);
        assert!(activity(Profile::Office, T0 + 5 * DAY + 11 * HOUR) < 0.1, "Saturday is quiet");
    }

    #[test]
    fn poisson_and_lognormal_have_the_means_they_promise() {
        let mut r = Rng(1);
        let n = 20_000;
        let mean = (0..n).map(|_| r.poisson(4.0) as f64).sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.1, "{mean}");
        let mut xs: Vec<f64> = (0..n).map(|_| r.lognormal(100.0, 0.5)).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[n / 2] - 100.0).abs() < 3.0, "median {}", xs[n / 2]);
    }
}
