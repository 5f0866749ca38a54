//! Shared by the integration-test binaries: a real S3 server (SeaweedFS, started by
//! `scripts/test`) and fresh buckets on it.
#![allow(dead_code)]

pub mod counting;
pub mod proxy;

use std::time::Duration;

use s3lock::store::s3::{S3Settings, S3Store};

/// The S3 endpoint `scripts/test` started. These tests never use a mock: without a real server
/// they fail and say how to get one.
pub fn s3_endpoint() -> String {
    std::env::var("S3LOCK_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "S3LOCK_TEST_S3_ENDPOINT is not set: the S3 tests need a real S3 server. \
             Run them through scripts/test, which installs and starts SeaweedFS."
        )
    })
}

pub fn s3_settings() -> S3Settings {
    s3_settings_via(&s3_endpoint())
}

/// Settings for reaching S3 at `endpoint` (the real server, or a fault proxy in front of it).
pub fn s3_settings_via(endpoint: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint.to_owned()),
        path_style: true,
        operation_timeout: Duration::from_secs(10),
        // The server's default, so tests meet what users run.
        max_clock_spread: Some(Duration::from_secs(10)),
    }
}

/// A connected S3 store and a bucket of its own, so tests never see each other's objects.
pub async fn s3_with_fresh_bucket() -> (S3Store, String) {
    let store = S3Store::connect(&s3_settings()).await;
    let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());
    store
        .create_bucket(&bucket)
        .await
        .expect("creating a test bucket on the S3 server");
    (store, bucket)
}

/// An `http://` URL on loopback where nothing listens: connections to it are refused at once.
pub fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}
