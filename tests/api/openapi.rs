//! The OpenAPI document the real app serves.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, TestApp};

#[tokio::test]
async fn the_openapi_document_is_3_1_and_names_every_route_and_the_problem_schema() {
    let app = TestApp::memory().await;
    let doc = json_with(app.request(Method::GET, "/openapi.json", None).await, 200).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut paths: Vec<_> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    let mut want = vec![
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/elections/{name}",
        "/elections/{name}/campaign",
        "/elections/{name}/proclaim",
        "/elections/{name}/renew",
        "/elections/{name}/resign",
        "/elections/{name}/leader",
        "/elections/{name}/observe",
    ];
    for base in ["", "/buckets/{bucket}"] {
        for p in [
            "/locks",
            "/locks/{key}",
            "/locks/{key}/acquire",
            "/locks/{key}/renew",
            "/locks/{key}/release",
            "/locks/{key}/break",
            "/locks/{key}/events",
            "/semaphores",
            "/semaphores/{key}",
            "/semaphores/{key}/watch",
            "/semaphores/{key}/acquire",
            "/semaphores/{key}/renew",
            "/semaphores/{key}/release",
            "/semaphores/{key}/break",
            "/semaphores/{key}/events",
            "/rwlocks",
            "/rwlocks/{key}",
            "/rwlocks/{key}/watch",
            "/rwlocks/{key}/acquire",
            "/rwlocks/{key}/renew",
            "/rwlocks/{key}/release",
            "/rwlocks/{key}/break",
            "/rwlocks/{key}/events",
        ] {
            want.push(Box::leak(format!("{base}{p}").into_boxed_str()));
        }
    }
    want.sort();
    assert_eq!(paths, want);
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{problem}"
        );
    }
    // The server's own limits are in the document.
    assert_eq!(
        doc["components"]["schemas"]["AcquireBody"]["properties"]["ttl"]["maximum"],
        3600
    );
    for events in [
        "/locks/{key}/events",
        "/semaphores/{key}/events",
        "/rwlocks/{key}/events",
    ] {
        let stream = &doc["paths"][events]["get"]["responses"]["200"]["content"];
        assert!(
            stream.get("text/event-stream").is_some(),
            "{events}: {stream}"
        );
    }
    for (list, field) in [("/semaphores", "semaphores"), ("/rwlocks", "rwlocks")] {
        let page = &doc["paths"][list]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"];
        let schema = page.as_str().unwrap().rsplit('/').next().unwrap();
        let props = &doc["components"]["schemas"][schema]["properties"];
        assert!(
            props.get(field).is_some() && props.get("next").is_some(),
            "{list}: {props}"
        );
        let limit = doc["paths"][list]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["maximum"], 1000, "{list}");
    }
    let conflict = &doc["paths"]["/locks/{key}/acquire"]["post"]["responses"]["409"]["content"];
    assert!(
        conflict.get("application/problem+json").is_some(),
        "{conflict}"
    );
}

#[tokio::test]
async fn the_document_shows_the_value_the_lock_delay_and_the_lock_delayed_problem() {
    let app = TestApp::memory().await;
    let doc = json_with(app.request(Method::GET, "/openapi.json", None).await, 200).await;
    let schemas = &doc["components"]["schemas"];
    for field in ["value", "available_at"] {
        assert!(
            schemas["LockView"]["properties"].get(field).is_some(),
            "LockView.{field}"
        );
    }
    // Any JSON: no type constrains the value.
    assert!(schemas["LockView"]["properties"]["value"]
        .get("type")
        .is_none());
    for body in ["AcquireBody", "RenewBody"] {
        let props = &schemas[body]["properties"];
        assert!(props["value"].get("type").is_none(), "{body}.value");
        assert_eq!(props["lock_delay"]["maximum"], 60, "{body}.lock_delay");
        assert_eq!(props["lock_delay"]["minimum"], 0, "{body}.lock_delay");
    }
    assert!(schemas["Problem"]["properties"]
        .get("available_at")
        .is_some());
    let conflict = doc["paths"]["/locks/{key}/acquire"]["post"]["responses"]["409"]["description"]
        .as_str()
        .unwrap();
    assert!(conflict.contains("lock-delayed"), "{conflict}");
}
