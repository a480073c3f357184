//! The registry against a real Kafka (scripts/kafka): every route through the
//! router, and a second node reading the same `_schemas` log back serves the
//! same subjects, versions and ids.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use registry::{router, KafkaLog, Node, StoreConfig, CONTENT_TYPE};
use serde_json::{json, Value};
use tower::ServiceExt;
use tradeflow_tests::{unique_topic, KafkaCluster};

const ORDER_CREATED: &str = "order-service.order.created-value";

async fn node(config: &StoreConfig) -> axum::Router {
    let (log, registry) = KafkaLog::open(config).await.expect("the schemas log opens");
    router(Node::new(log, registry))
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", CONTENT_TYPE)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(CONTENT_TYPE),
        "{method} {uri}"
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

fn schema(version: u32) -> Value {
    let schemas = codecs::avro::value_schemas();
    let found = schemas
        .iter()
        .find(|s| s.subject() == ORDER_CREATED && s.version == version)
        .expect("order.created schema");
    json!({"schema": found.text()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_routes_on_kafka_and_the_same_ids_after_a_restart() {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single().expect("Kafka on loopback (scripts/kafka up)");
    let config = StoreConfig {
        bootstrap: cluster.bootstrap().to_owned(),
        topic: unique_topic("_schemas-test"),
        replication: -1,
        properties: vec![("broker.address.family".into(), "v4".into())],
    };
    let app = node(&config).await;
    let uri = format!("/subjects/{ORDER_CREATED}/versions");

    // Empty at first; the default level is BACKWARD.
    assert_eq!(
        call(&app, "GET", "/subjects", None).await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        call(&app, "GET", "/config", None).await,
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );

    // v1, then the BACKWARD-compatible v2 (new fields with defaults).
    let (status, v1) = call(&app, "POST", &uri, Some(schema(1))).await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    let (status, v2) = call(&app, "POST", &uri, Some(schema(2))).await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_ne!(v1["id"], v2["id"]);
    assert_eq!(
        call(&app, "POST", &uri, Some(schema(2))).await.1,
        v2,
        "idempotent"
    );

    // A field without default: 409, Confluent's code, apache-avro's reason.
    let mut bad: Value =
        serde_json::from_str(schema(2)["schema"].as_str().expect("text")).expect("json");
    bad["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "venue", "type": "string"}));
    let (status, error) = call(&app, "POST", &uri, Some(json!({"schema": bad.to_string()}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error_code"], 409);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("venue"),
        "{error}"
    );
    let compat = format!("/compatibility/subjects/{ORDER_CREATED}/versions/latest?verbose=true");
    let (status, answer) = call(
        &app,
        "POST",
        &compat,
        Some(json!({"schema": bad.to_string()})),
    )
    .await;
    assert_eq!(
        (status, &answer["is_compatible"]),
        (StatusCode::OK, &json!(false))
    );

    // Invalid input: 422 42201, 404 40401/40402/40403, 422 42203.
    let (status, error) = call(&app, "POST", &uri, Some(json!({"schema": "{\"type\": 1}"}))).await;
    assert_eq!(
        (status, &error["error_code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!(42201))
    );
    let (status, error) = call(&app, "GET", "/subjects/nope/versions", None).await;
    assert_eq!(
        (status, &error["error_code"]),
        (StatusCode::NOT_FOUND, &json!(40401))
    );
    let (_, error) = call(&app, "GET", &format!("{uri}/9"), None).await;
    assert_eq!(error["error_code"], 40402);
    let (_, error) = call(&app, "GET", "/schemas/ids/999", None).await;
    assert_eq!(error["error_code"], 40403);
    let (status, error) = call(
        &app,
        "PUT",
        "/config",
        Some(json!({"compatibility": "SOMETIMES"})),
    )
    .await;
    assert_eq!(
        (status, &error["error_code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!(42203))
    );

    // A subject level, lookups, and every other tradeflow subject.
    let (status, _) = call(
        &app,
        "PUT",
        &format!("/config/{ORDER_CREATED}"),
        Some(json!({"compatibility": "FULL_TRANSITIVE"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, found) = call(
        &app,
        "POST",
        &format!("/subjects/{ORDER_CREATED}"),
        Some(schema(1)),
    )
    .await;
    assert_eq!((&found["version"], &found["id"]), (&json!(1), &v1["id"]));
    for s in codecs::avro::value_schemas()
        .into_iter()
        .filter(|s| s.subject() != ORDER_CREATED)
    {
        let (status, body) = call(
            &app,
            "POST",
            &format!("/subjects/{}/versions", s.subject()),
            Some(json!({"schema": s.text()})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", s.subject());
    }
    let (_, subjects) = call(&app, "GET", "/subjects", None).await;
    assert_eq!(subjects.as_array().map(Vec::len), Some(9));

    // Delete: a soft delete, the id stays readable.
    let (_, deleted) = call(
        &app,
        "DELETE",
        "/subjects/inventory-service.stock.updated-value",
        None,
    )
    .await;
    assert_eq!(deleted, json!([1]));

    // A second node, as after a restart, reads the log back.
    let before: Vec<_> = everything_readable(&app).await;
    drop(app);
    let again = node(&config).await;
    assert_eq!(everything_readable(&again).await, before);
    assert_eq!(
        call(&again, "GET", &format!("/config/{ORDER_CREATED}"), None)
            .await
            .1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    let (status, text) = call(&again, "GET", &format!("/schemas/ids/{}", v1["id"]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text["schema"], schema(1)["schema"]);
}

/// Everything a client can read: subjects, each one's versions and ids.
async fn everything_readable(app: &axum::Router) -> Vec<(String, Value)> {
    let (_, subjects) = call(app, "GET", "/subjects", None).await;
    let mut out = vec![("subjects".to_owned(), subjects.clone())];
    for subject in subjects.as_array().expect("list") {
        let subject = subject.as_str().expect("name");
        let (_, versions) = call(app, "GET", &format!("/subjects/{subject}/versions"), None).await;
        for v in versions.as_array().expect("list") {
            let (_, info) = call(
                app,
                "GET",
                &format!("/subjects/{subject}/versions/{v}"),
                None,
            )
            .await;
            out.push((format!("{subject} v{v}"), info));
        }
    }
    out
}

/// A node's start-up registration through a real HTTP server: every flow
/// topic's schema registered, again idempotently, and an incompatible
/// subject refused with its name and apache-avro's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_its_schemas_and_an_incompatible_one_is_named() {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single().expect("Kafka on loopback (scripts/kafka up)");
    let config = StoreConfig {
        bootstrap: cluster.bootstrap().to_owned(),
        topic: unique_topic("_schemas-client"),
        replication: -1,
        properties: vec![("broker.address.family".into(), "v4".into())],
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = registry::bind(&config, "127.0.0.1:0".parse().expect("addr"), async {
        let _ = stopped.await;
    })
    .await
    .expect("the registry starts");
    let server = tokio::spawn(server);
    let url = format!("http://{addr}");
    let namespace = codecs::topics::TopicNamespace::new("desk-a").expect("namespace");

    let register = |topics: Vec<&'static str>| {
        let url = url.clone();
        let namespace = namespace.clone();
        tokio::task::spawn_blocking(move || {
            registry::client::register_value_schemas(&url, &namespace, &topics)
        })
    };
    let first = register(codecs::topics::ALL.to_vec())
        .await
        .expect("task")
        .expect("registered");
    assert_eq!(first.len(), 9);
    assert!(first
        .iter()
        .all(|r| r.subject.starts_with("desk-a.") && r.subject.ends_with("-value")));
    let again = register(codecs::topics::ALL.to_vec())
        .await
        .expect("task")
        .expect("registered");
    assert_eq!(again, first, "idempotent");

    // Another namespace's order.created lacks `quantity`, which ours needs
    // and has no default for: ours cannot read its records (not BACKWARD).
    let other = codecs::topics::TopicNamespace::new("desk-b").expect("namespace");
    let subject = codecs::avro::value_subject(&other.physical(codecs::topics::ORDER_CREATED));
    let mut theirs: Value = schema(2)["schema"]
        .as_str()
        .map(serde_json::from_str)
        .expect("text")
        .expect("json");
    theirs["fields"]
        .as_array_mut()
        .expect("fields")
        .retain(|f| f["name"] != "quantity");
    let (status, _) = {
        let url = format!("{url}/subjects/{subject}/versions");
        let body = json!({"schema": theirs.to_string()}).to_string();
        tokio::task::spawn_blocking(move || {
            let response = ureq::post(&url)
                .header("content-type", CONTENT_TYPE)
                .send(body)
                .expect("post");
            (response.status().as_u16(), ())
        })
        .await
        .expect("task")
    };
    assert_eq!(status, 200);
    let refused = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            registry::client::register_value_schemas(&url, &other, &[codecs::topics::ORDER_CREATED])
        }
    })
    .await
    .expect("task")
    .expect_err("incompatible");
    let text = refused.to_string();
    assert!(
        text.contains(&subject) && text.contains("409") && text.contains("quantity"),
        "{text}"
    );

    let unreachable = registry::client::register_value_schemas(
        "http://127.0.0.1:1",
        &namespace,
        &[codecs::topics::ORDER_CREATED],
    );
    assert!(matches!(
        unreachable,
        Err(registry::client::ClientError::Transport { .. })
    ));

    let _ = stop.send(());
    server.await.expect("task").expect("served");
}
