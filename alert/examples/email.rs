//! Prints the alert each finding of a findings file (JSON Lines, as `trailwatch run --findings`
//! writes) would send: subject, email body and size. `cargo run -p trailwatch-alert --example
//! email < findings.jsonl`
use std::io::BufRead;

use trailwatch_alert::render::{opened, RenderConfig};
use trailwatch_core::finding::Finding;

fn main() {
    let cfg = RenderConfig::default();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if line.trim().is_empty() {
            continue;
        }
        let f: Finding = serde_json::from_str(&line).expect("a finding per line");
        let m = opened(&f, 0, &cfg);
        println!("Subject: {}\n\n{}\n--- {} bytes to publish", m.subject, m.email, m.publish_size());
    }
}
