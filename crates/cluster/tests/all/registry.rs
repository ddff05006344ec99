//! The cluster's registry on a real JetStream: what one node stores,
//! another reads and is told of.

use crate::nats::NatsServer;
use isola_cluster::JetStreamRegistry;
use isola_core::SourceFile;
use isola_store::{NewDeployment, NodeKey, Registry, SqliteRegistry, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A node's view of the shared registry, with records of its own.
async fn node(server: &NatsServer, key: &NodeKey) -> JetStreamRegistry {
    let records = Arc::new(SqliteRegistry::in_memory().unwrap());
    JetStreamRegistry::open(server.client().await, key.clone(), records)
        .await
        .unwrap()
}

fn deployment(code: &str, secret: &str) -> NewDeployment {
    NewDeployment {
        files: vec![SourceFile {
            path: "main.js".into(),
            code: code.as_bytes().to_vec(),
        }],
        entry: "main.js".into(),
        limits: Default::default(),
        env: BTreeMap::from([("MODE".into(), "test".into())]),
        secrets: BTreeMap::from([("TOKEN".into(), secret.into())]),
        kv_binding: None,
        allowed_hosts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_deploys_another_runs_and_hears_of() {
    let server = NatsServer::with_jetstream().await;
    let key = NodeKey::generate();
    let (one, other) = (node(&server, &key).await, node(&server, &key).await);
    let mut changes = other.watch();

    one.create_function("hello").await.unwrap();
    assert!(matches!(
        other.create_function("hello").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        one.create_function("Not A Name").await,
        Err(StoreError::Invalid(_))
    ));
    // A bundle larger than one NATS message.
    let big = format!("export default () => {:?}", "x".repeat(2 << 20));
    let first = one
        .create_deployment("hello", deployment(&big, "s1"), true)
        .await
        .unwrap();
    assert_eq!((first.version, first.active), (1, true));
    let (info, source) = other.active_source("hello").await.unwrap().unwrap();
    assert_eq!(info.version, 1);
    assert_eq!(source.files[0].code, big.as_bytes());
    assert_eq!(source.env["TOKEN"], "s1");
    assert_eq!(source.env["MODE"], "test");
    assert_eq!(source.id, first.instance_key());

    // A second deployment, then a rollback, made on the other node.
    let second = one
        .create_deployment("hello", deployment("export default () => 2", "s2"), false)
        .await
        .unwrap();
    assert_eq!((second.version, second.active), (2, false));
    other.activate("hello", 2).await.unwrap();
    let listed = one.deployments("hello").await.unwrap();
    let versions: Vec<_> = listed.iter().map(|d| (d.version, d.active)).collect();
    assert_eq!(versions, [(2, true), (1, false)]);
    assert!(listed.iter().all(|d| d.secret_names == ["TOKEN"]));
    assert!(matches!(
        one.activate("hello", 9).await,
        Err(StoreError::NotFound(_))
    ));

    // The other node heard of each change made on the first.
    let heard = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change reaches the other node")
        .unwrap();
    assert_eq!(heard.function, "hello");

    // Settings are shared; a deleted function is gone everywhere.
    one.set_setting("admin_token_sha256", "abc").await.unwrap();
    assert_eq!(
        other
            .setting("admin_token_sha256")
            .await
            .unwrap()
            .as_deref(),
        Some("abc")
    );
    other.delete_function("hello").await.unwrap();
    assert!(matches!(
        one.active_source("hello").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(one.functions().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_made_at_once_on_two_nodes_get_versions_of_their_own() {
    let server = NatsServer::with_jetstream().await;
    let key = NodeKey::generate();
    let (one, other) = (node(&server, &key).await, node(&server, &key).await);
    one.create_function("race").await.unwrap();
    let deploys = (0..8).map(|i| {
        let registry = if i % 2 == 0 { &one } else { &other };
        let code = format!("export default () => {i}");
        async move {
            let info = registry
                .create_deployment("race", deployment(&code, "s"), true)
                .await
                .unwrap();
            (info.version, code)
        }
    });
    let mut made = futures::future::join_all(deploys).await;
    made.sort();
    let versions: Vec<u32> = made.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    // Each version holds the code deployed as it.
    for (version, code) in &made {
        other.activate("race", *version).await.unwrap();
        let (_, source) = one.active_source("race").await.unwrap().unwrap();
        assert_eq!(source.files[0].code, code.as_bytes(), "version {version}");
    }
    // A registry opened again finds the buckets as they are.
    let again = node(&server, &key).await;
    assert_eq!(again.deployments("race").await.unwrap().len(), 8);
}
