//! Test support shared by the stages' tests (feature `test-support`, dev-dependencies only): a
//! real AWS-compatible endpoint, moto in server mode, started and stopped by the test, and (with
//! feature `dynamodb`) the state table the stages share.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on 127.0.0.1, killed when dropped. The binary is `$MOTO_SERVER`, else
/// `moto_server` on the PATH (`scripts/test.sh` installs it in `.venv`).
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run scripts/test.sh, which installs moto, or set MOTO_SERVER")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Credentials and region for the SDK's default chain; moto accepts any.
        for (k, v) in
            [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")]
        {
            std::env::set_var(k, v);
        }
        std::env::remove_var("AWS_PROFILE");
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a DynamoDB table keyed by a string partition key `pk`, billed per request: the shape
/// of detect's state table, which alert's sent records share.
#[cfg(feature = "dynamodb")]
pub async fn create_state_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating table {name}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
}
