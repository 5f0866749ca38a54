//! The shared HTTP client against the real app.

use s3lock::client::{ClientError, LockClient};

use crate::helpers::TestApp;

#[tokio::test]
async fn the_client_drives_every_route_and_names_each_refusal() {
    let app = TestApp::memory().await;
    let client = LockClient::new(&format!("{}/", app.base), None);
    let key = "jobs/café & bar?#";
    let granted = client
        .acquire(key, Some("alice"), Some(30), None)
        .await
        .unwrap();
    assert_eq!(granted.key, key, "awkward characters survive the path");
    let token = granted.holder_token().unwrap().to_owned();

    match client.acquire(key, Some("bob"), None, Some(0.0)).await {
        Err(ClientError::Held {
            owner, retry_after, ..
        }) => {
            assert_eq!(owner, "alice");
            assert!(retry_after.is_some());
        }
        other => panic!("expected Held, got {other:?}"),
    }
    let status = client.status(key, Some("bob")).await.unwrap();
    assert!(status.locked && status.token.is_none());
    assert!(!client.status(key, Some("alice")).await.unwrap().locked);
    assert_eq!(client.list("jobs/").await.unwrap().len(), 1);

    let renewed = client.renew(key, &token, Some(60)).await.unwrap();
    assert_eq!(renewed.expire, 60);
    assert!(matches!(
        client.renew(key, "wrong", None).await,
        Err(ClientError::NotHolder { .. })
    ));
    assert!(matches!(
        client.release("never", "t").await,
        Err(ClientError::NotFound)
    ));
    assert!(matches!(
        client.acquire(key, None, Some(0), None).await,
        Err(ClientError::Problem { status: 400, ref kind, .. }) if kind == "invalid-input"
    ));
    let released = client.release(key, &token).await.unwrap();
    assert_eq!(released.owner, None);
}

#[tokio::test]
async fn an_unreachable_server_is_unreachable_not_a_transport_error_of_a_sent_request() {
    let base = crate::helpers::support::closed_url();
    let client = LockClient::new(&base, None);
    // Refused at connect: the request was never sent, so nothing it asked for can have landed.
    assert!(matches!(
        client.status("k", None).await,
        Err(ClientError::Unreachable(_))
    ));
}
