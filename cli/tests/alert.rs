//! `trailwatch run --sns-topic-arn` against moto: the quick start's finding reaches an SQS
//! subscriber once however often the run is repeated, and an unreachable topic leaves the alert
//! in `<STATE>/dead-letter.jsonl` with the reason.

use std::path::Path;
use std::process::Command;

use trailwatch_core::testing::Moto;

fn run(root: &Path, work: &Path, endpoint: &str, topic: &str) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_trailwatch"))
        .current_dir(root)
        .args(["run", "testdata/cloudtrail", "--quiet"])
        .arg("--lake")
        .arg(work.join("lake"))
        .arg("--state")
        .arg(work.join("state"))
        .arg("--findings")
        .arg(work.join("findings.jsonl"))
        .args(["--endpoint-url", endpoint, "--sns-topic-arn", topic])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn run_publishes_each_alert_once_and_dead_letters_what_it_cannot_send() {
    let moto = Moto::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let shared = rt.block_on(trailwatch_core::aws::load(Some(&moto.endpoint)));
    let sns = aws_sdk_sns::Client::new(&shared);
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let (topic, queue) = rt.block_on(async {
        let topic = sns.create_topic().name("alerts").send().await.unwrap().topic_arn.unwrap();
        let queue = sqs.create_queue().queue_name("sub").send().await.unwrap().queue_url.unwrap();
        let arn = "arn:aws:sqs:us-east-1:123456789012:sub";
        sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).send().await.unwrap();
        (topic, queue)
    });
    let work = tempfile::tempdir().unwrap();
    let first = run(root, work.path(), &moto.endpoint, &topic);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("alert: 1 messages"), "{stdout}");
    // The same inputs again (a re-run after a crash, say): nothing new is mailed.
    // Detect's state is lost, the sent records are kept: detect emits the finding again.
    let state = work.path().join("state");
    let sent = std::fs::read(state.join("alerts-sent.json")).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("alerts-sent.json"), sent).unwrap();
    let second = run(root, work.path(), &moto.endpoint, &topic);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("alert: 0 messages") && stdout.contains("1 already sent"), "{stdout}");
    let lines = std::fs::read_to_string(work.path().join("findings.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 2, "detect emitted the finding again; alert did not send it again");
    let received = rt.block_on(async {
        let r = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        r.messages.unwrap_or_default()
    });
    assert_eq!(received.len(), 1);
    let env: serde_json::Value = serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(env["MessageAttributes"]["kind"]["Value"], "log_silence");

    // A topic that does not exist: a permanent error, so straight to the dead-letter file.
    let other = tempfile::tempdir().unwrap();
    let out = run(root, other.path(), &moto.endpoint, "arn:aws:sns:us-east-1:123456789012:missing");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dead-lettered"));
    let dl = std::fs::read_to_string(other.path().join("state").join("dead-letter.jsonl")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert!(entry["reason"].as_str().unwrap().contains("permanent error"), "{entry}");
    assert_eq!(entry["topic"], "arn:aws:sns:us-east-1:123456789012:missing");
}
