//! docs/openapi.yaml against the REST router: the document is an OpenAPI 3
//! document a real YAML parser reads, its paths are exactly the router's
//! Order API routes, every documented operation reaches a handler, and its
//! path parameters admit exactly the ids the API accepts.
//!
//! Owns: nothing the running API uses.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_yaml::Value;
use tower::ServiceExt;

use super::super::rest::{self, OPENAPI_YAML};
use super::fixture;

fn document() -> Value {
    serde_yaml::from_str(OPENAPI_YAML).expect("docs/openapi.yaml is YAML")
}

/// The paths `rest::router` registers, read from its source: axum cannot
/// list a router's routes, and a second hand-kept list could drift too.
fn router_paths() -> BTreeSet<String> {
    let source = include_str!("../rest.rs");
    let mut paths = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        paths.insert(after[..close].to_string());
        rest = &after[close..];
    }
    paths
}

#[test]
fn the_document_is_openapi_3_with_the_routers_paths() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi: version");
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].is_string());
    let paths: BTreeSet<String> = doc["paths"]
        .as_mapping()
        .expect("paths")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    assert_eq!(paths, router_paths());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"].as_str(),
        Some("bearer")
    );
}

#[test]
fn every_ref_resolves() {
    fn walk(node: &Value, doc: &Value, seen: &mut usize) {
        match node {
            Value::Mapping(map) => {
                if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                    let mut at = doc;
                    for part in target.trim_start_matches("#/").split('/') {
                        at = &at[part];
                    }
                    assert!(!at.is_null(), "{target} does not resolve");
                    *seen += 1;
                }
                map.values().for_each(|v| walk(v, doc, seen));
            }
            Value::Sequence(items) => items.iter().for_each(|v| walk(v, doc, seen)),
            _ => {}
        }
    }
    let doc = document();
    let mut seen = 0;
    walk(&doc, &doc, &mut seen);
    assert!(seen > 50, "{seen} refs");
}

/// A value each path parameter accepts.
fn example_path(template: &str) -> String {
    template
        .replace("{account}", "7")
        .replace("{order_id}", "42")
        .replace("{sku}", "AAPL")
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let f = fixture();
    let doc = document();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = path.as_str().expect("path");
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if method == "parameters" {
                continue;
            }
            let request = Request::builder()
                .method(method.to_ascii_uppercase().as_str())
                .uri(example_path(path))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let response = rest::router(Arc::clone(&f.api), None)
                .oneshot(request)
                .await
                .expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let text = String::from_utf8_lossy(&bytes);
            // A handler's own 404s name what is missing; the router's say
            // not_found, and 405 means the method is not routed.
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("\"not_found\""),
                "{method} {path}: {status} {text}"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 10);
}

#[tokio::test]
async fn path_ids_admit_exactly_the_u64_range_the_api_accepts() {
    let doc = document();
    let parameters = &doc["components"]["parameters"];
    for (name, minimum) in [("Account", 0u64), ("OrderId", 1)] {
        let schema = &parameters[name]["schema"];
        assert_eq!(schema["type"].as_str(), Some("integer"), "{name}");
        assert_eq!(schema["minimum"].as_u64(), Some(minimum), "{name}");
        assert_eq!(schema["maximum"].as_u64(), Some(u64::MAX), "{name}");
    }
    // The API agrees at both ends of the range and just past it.
    let f = fixture();
    let get = |uri: String| {
        let router = rest::router(Arc::clone(&f.api), None);
        async move {
            let request = Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request");
            router.oneshot(request).await.expect("infallible").status()
        }
    };
    let max = u64::MAX;
    let past = u128::from(u64::MAX) + 1;
    assert_ne!(
        get(format!("/v1/accounts/{max}/orders/{max}")).await,
        StatusCode::BAD_REQUEST
    );
    assert_ne!(
        get("/v1/accounts/0/orders/1".into()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("/v1/accounts/{past}")).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("/v1/accounts/7/orders/{past}")).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get("/v1/accounts/7/orders/0".into()).await,
        StatusCode::BAD_REQUEST
    );
}
