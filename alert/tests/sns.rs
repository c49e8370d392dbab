//! Alerts through a real SNS endpoint: moto in server mode, a topic with an SQS subscription,
//! DynamoDB for the sent records and an SQS dead-letter queue. Messages are read back from the
//! queue as an SQS subscriber sees them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use trailwatch_alert::aws::{sns, sqs, DynamoSent, SnsPublisher, SqsDeadLetter};
use trailwatch_alert::render::Message;
use trailwatch_alert::{alert, AlertConfig, PublishError, Publisher, RetryPolicy};
use trailwatch_core::finding::{finding_id, Contributor, Finding, Severity, Status};
use trailwatch_core::testing::{create_state_table, Moto};

struct Env {
    _moto: Moto,
    rt: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    dlq: String,
    publisher: SnsPublisher,
    sent: DynamoSent,
    dead: SqsDeadLetter,
}

fn setup() -> Env {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let shared = rt.block_on(trailwatch_core::aws::load(Some(&moto.endpoint)));
    let (sns, sqs, ddb) = (sns(&shared, None), sqs(&shared, None), trailwatch_core::aws::dynamodb(&shared, None));
    let (topic, queue, dlq) = rt.block_on(async {
        let topic = sns.create_topic().name("trailwatch-alerts").send().await.unwrap().topic_arn.unwrap();
        let queue = sqs.create_queue().queue_name("subscriber").send().await.unwrap().queue_url.unwrap();
        let dlq = sqs.create_queue().queue_name("alert-dlq").send().await.unwrap().queue_url.unwrap();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).send().await.unwrap();
        create_state_table(&ddb, "state").await;
        (topic, queue, dlq)
    });
    let h = rt.handle().clone();
    Env {
        publisher: SnsPublisher { client: sns, handle: h.clone(), topic_arn: topic },
        sent: DynamoSent { client: ddb, handle: h.clone(), table: "state".into() },
        dead: SqsDeadLetter { client: sqs.clone(), handle: h, queue_url: dlq.clone() },
        sqs,
        queue,
        dlq,
        rt,
        _moto: moto,
    }
}

impl Env {
    /// Every message waiting in `queue`, deleted as read.
    fn drain(&self, queue: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let r = self
                .rt
                .block_on(
                    self.sqs.receive_message().queue_url(queue).max_number_of_messages(10).wait_time_seconds(1).send(),
                )
                .unwrap();
            let msgs = r.messages.unwrap_or_default();
            if msgs.is_empty() {
                empty += 1;
            }
            for m in msgs {
                out.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
                self.rt
                    .block_on(
                        self.sqs.delete_message().queue_url(queue).receipt_handle(m.receipt_handle.unwrap()).send(),
                    )
                    .unwrap();
            }
        }
        out
    }

    fn cfg(&self) -> AlertConfig {
        AlertConfig {
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            ..AlertConfig::default()
        }
    }
}

fn finding(kind: &str, account: &str, subject: &str, start: i64, sev: Severity, status: Status) -> Finding {
    Finding {
        id: finding_id(&kind.into(), account, "eu-west-1", subject, start),
        kind: kind.into(),
        severity: sev,
        account_id: account.into(),
        region: "eu-west-1".into(),
        subject: subject.into(),
        start,
        end: (status == Status::Closed).then_some(start + 1_800_000),
        observed: 480.0,
        baseline: 12.0,
        score: 9.5,
        estimated_cost_usd: (kind == "concurrency_spike").then_some(41.5),
        summary: format!("{kind} on {subject}"),
        top_contributors: vec![Contributor {
            dimension: "user_agent".into(),
            value: "curl/8\r\nSubject: you have won\r\n".into(),
            count: 9000,
        }],
        evidence: vec!["req-1".into()],
        status,
        suppressed: false,
        suppression_reason: None,
        rule: None,
    }
}

/// The SNS envelope's `MessageAttributes` as (name, type, value).
fn attr<'a>(env: &'a Value, name: &str) -> (&'a str, &'a str) {
    let a = &env["MessageAttributes"][name];
    (a["Type"].as_str().unwrap_or(""), a["Value"].as_str().unwrap_or(""))
}

const T0: i64 = 1_764_000_000_000;

#[test]
fn single_alerts_carry_the_finding_json_and_filterable_attributes_and_are_sent_once() {
    let e = setup();
    let fs = vec![
        finding("concurrency_spike", "111122223333", "orders-api", T0, Severity::High, Status::Open),
        finding("throttling", "111122223333", "payments", T0, Severity::Medium, Status::Open),
    ];
    let r = alert(&fs, &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((r.messages, r.digests, r.dead_lettered), (2, 0, 0));
    let got = e.drain(&e.queue);
    assert_eq!(got.len(), 2);
    for env in &got {
        // The SQS subscriber gets `default`: the finding, as JSON a machine deserializes.
        let f: Finding = serde_json::from_str(env["Message"].as_str().unwrap()).unwrap();
        let orig = fs.iter().find(|x| x.id == f.id).expect("a finding we sent");
        assert_eq!(attr(env, "kind"), ("String", orig.kind.as_str()));
        assert_eq!(attr(env, "severity"), ("String", orig.severity.as_str()));
        assert_eq!(attr(env, "account_id"), ("String", "111122223333"));
        assert_eq!(attr(env, "region"), ("String", "eu-west-1"));
        let subject = env["Subject"].as_str().unwrap();
        assert!(subject.len() <= 100 && subject.bytes().all(|b| (0x20..0x7f).contains(&b)), "{subject:?}");
        assert_eq!(
            f.top_contributors[0].value, orig.top_contributors[0].value,
            "JSON keeps the value, escaped by JSON"
        );
    }
    // A retried invocation publishes the same findings again: nothing is sent twice.
    let again = alert(&fs, &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((again.messages, again.already_sent), (0, 2));
    assert!(e.drain(&e.queue).is_empty());
    // The episode ends: one short update, once.
    let mut closed = fs[0].clone();
    closed.status = Status::Closed;
    closed.end = Some(T0 + 3_600_000);
    let r = alert(std::slice::from_ref(&closed), &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!(r.messages, 1);
    let got = e.drain(&e.queue);
    assert_eq!(got.len(), 1);
    assert_eq!(attr(&got[0], "status"), ("String", "closed"));
    let f: Finding = serde_json::from_str(got[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!((f.id.as_str(), f.status), (fs[0].id.as_str(), Status::Closed));
    let r = alert(&[closed], &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!(r.messages, 0);
}

#[test]
fn repeats_fold_and_bursts_become_one_digest_per_account() {
    let e = setup();
    // Three episodes of one kind and subject within the fold window: one alert.
    let repeats: Vec<Finding> = (0..3)
        .map(|i| {
            finding(
                "api_error_rate",
                "111122223333",
                "ec2.amazonaws.com:DescribeInstances",
                T0 + i * 3_600_000,
                Severity::Medium,
                Status::Open,
            )
        })
        .collect();
    let r = alert(&repeats, &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((r.messages, r.folded), (1, 2));
    assert_eq!(e.drain(&e.queue).len(), 1);
    // A wide attack: 30 findings in one account, 2 in another.
    let mut burst: Vec<Finding> = (0..30)
        .map(|i| {
            let sev = if i == 7 { Severity::Critical } else { Severity::Low };
            let kind = if i % 2 == 0 { "unusual_invocation" } else { "api_call_rate" };
            finding(kind, "444455556666", &format!("fn-{i}"), T0 + 7_200_000 * 10, sev, Status::Open)
        })
        .collect();
    burst.push(finding("throttling", "777788889999", "a", T0, Severity::High, Status::Open));
    burst.push(finding("throttling", "777788889999", "b", T0, Severity::High, Status::Open));
    let r = alert(&burst, &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((r.digests, r.messages), (1, 3), "one digest for the burst, two single alerts: {r:?}");
    let got = e.drain(&e.queue);
    let digest = got.iter().find(|m| attr(m, "digest").1 == "true").expect("a digest");
    assert_eq!(attr(digest, "account_id"), ("String", "444455556666"));
    assert_eq!(attr(digest, "severity"), ("String", "critical"), "the highest severity");
    let (ty, kinds) = attr(digest, "kind");
    assert_eq!(ty, "String.Array");
    let kinds: Vec<String> = serde_json::from_str(kinds).unwrap();
    assert_eq!(kinds, ["api_call_rate", "unusual_invocation"]);
    let body: Value = serde_json::from_str(digest["Message"].as_str().unwrap()).unwrap();
    assert_eq!(body["findings"].as_array().unwrap().len(), 30);
    // Re-running the burst sends nothing: the digest recorded each finding.
    let r = alert(&burst, &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((r.messages, r.already_sent), (0, 32));
}

/// Answers 503 for its first `fails` calls, then passes through.
struct Flaky<'a> {
    inner: &'a dyn Publisher,
    fails: AtomicU32,
    calls: AtomicU32,
}

impl Publisher for Flaky<'_> {
    fn topic(&self) -> &str {
        self.inner.topic()
    }
    fn publish(&self, m: &Message) -> Result<String, PublishError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fails.load(Ordering::SeqCst) > 0 {
            self.fails.fetch_sub(1, Ordering::SeqCst);
            return Err(PublishError { message: "ServiceUnavailable (503)".into(), retryable: true });
        }
        self.inner.publish(m)
    }
}

#[test]
fn a_publish_that_fails_twice_then_succeeds_sends_exactly_once_and_a_spent_budget_dead_letters() {
    let e = setup();
    let f = finding("timeouts", "111122223333", "orders", T0, Severity::High, Status::Open);
    let flaky = Flaky { inner: &e.publisher, fails: AtomicU32::new(2), calls: AtomicU32::new(0) };
    let r = alert(std::slice::from_ref(&f), &e.cfg(), &e.sent, &flaky, &e.dead).unwrap();
    assert_eq!((r.messages, r.retries, r.dead_lettered), (1, 2, 0));
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    assert_eq!(e.drain(&e.queue).len(), 1);
    assert!(e.drain(&e.dlq).is_empty());

    // Down for longer than the budget: the alert goes to the dead-letter queue with the reason.
    let g = finding("timeouts", "111122223333", "billing", T0, Severity::High, Status::Open);
    let down = Flaky { inner: &e.publisher, fails: AtomicU32::new(100), calls: AtomicU32::new(0) };
    let r = alert(std::slice::from_ref(&g), &e.cfg(), &e.sent, &down, &e.dead).unwrap();
    assert_eq!((r.messages, r.dead_lettered), (0, 1));
    assert_eq!(down.calls.load(Ordering::SeqCst), 4, "the whole budget, no more");
    assert!(e.drain(&e.queue).is_empty());
    let dl = e.drain(&e.dlq);
    assert_eq!(dl.len(), 1);
    assert!(dl[0]["reason"].as_str().unwrap().contains("retry budget spent after 4 attempts"), "{}", dl[0]);
    assert_eq!(dl[0]["findings"][0][0], g.id.as_str());
    // The dead letter holds what to publish again, and is not re-sent by a retry.
    assert!(dl[0]["message"].as_str().unwrap().contains("\"email\""));
    let r = alert(&[g], &e.cfg(), &e.sent, &e.publisher, &e.dead).unwrap();
    assert_eq!((r.messages, r.already_sent), (0, 1));
}

#[test]
fn the_lambda_handler_alerts_on_findings_objects_and_reports_unreadable_ones_as_failed() {
    use trailwatch_alert::handler::{handle_event, Deps};
    let e = setup();
    let s3 = e.rt.block_on(trailwatch_core::s3::client(Some(&e._moto.endpoint)));
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/findings/account_id=143434273843/region=unknown/date=2024-07-31/stoplogging.parquet"
    );
    let good = "lake/findings/account_id=143434273843/region=unknown/date=2024-07-31/stop logging.parquet";
    let bad = "lake/findings/account_id=143434273843/region=unknown/date=2024-07-31/truncated.parquet";
    e.rt.block_on(async {
        s3.create_bucket().bucket("lake").send().await.unwrap();
        for (key, body) in [(good, std::fs::read(fixture).unwrap()), (bad, b"PAR1 not really".to_vec())] {
            s3.put_object().bucket("lake").key(key).body(body.into()).send().await.unwrap();
        }
    });
    // S3 notifications inside SQS, as the alert queue delivers them; keys URL-encoded.
    let msg = |id: &str, key: &str, extra: &str| {
        let body = serde_json::json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": "lake"}, "object": {"key": key.replace(' ', "+")}}},
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": "lake"}, "object": {"key": extra}}}
        ]});
        serde_json::json!({"messageId": id, "eventSource": "aws:sqs", "body": body.to_string()})
    };
    let event = serde_json::json!({"Records": [
        msg("m1", good, "lake/cloudtrail/account_id=1/x.parquet"),
        msg("m2", bad, "lake/_rejected/x.json")
    ]});
    let src = trailwatch_core::s3::S3Source::new(s3, e.rt.handle().clone());
    let deps = Deps { src: &src, sent: &e.sent, publisher: &e.publisher, dead: &e.dead };
    let (reply, summary) = handle_event(&event, "lake/", &deps, &e.cfg()).unwrap();
    assert_eq!(reply["batchItemFailures"], serde_json::json!([{"itemIdentifier": "m2"}]));
    assert_eq!((summary.objects_read, summary.objects_failed, summary.objects_ignored), (1, 1, 2));
    let got = e.drain(&e.queue);
    assert_eq!(got.len(), 1);
    let f: Finding = serde_json::from_str(got[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!((f.kind.as_str(), f.account_id.as_str(), f.severity), ("log_silence", "143434273843", Severity::High));
    assert_eq!(f.top_contributors[0].value, "arn:aws:iam::143434273843:user/christophe");
    // SQS redelivers the batch (the failed message and, say, a timeout): still one alert.
    let (_, again) = handle_event(&event, "lake/", &deps, &e.cfg()).unwrap();
    assert_eq!((again.report.messages, again.report.already_sent), (0, 1));
}
