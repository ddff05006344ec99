//! Tests of the active-deployment cache: negative caching, per-name
//! refreshes and name checks, over a registry that counts and delays.

use super::*;
use crate::testing::{Counting, Idle};
use isola_core::SourceFile;
use isola_store::NewDeployment;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn setup() -> (Arc<Counting>, Arc<ActiveFunctions>) {
    let registry = Arc::new(Counting::new());
    let active = Arc::new(ActiveFunctions::new(
        registry.clone(),
        Arc::new(Idle),
        Arc::new(crate::metrics::Metrics::new()),
    ));
    (registry, active)
}

async fn deploy(registry: &Counting, name: &str) {
    registry.create_function(name).await.unwrap();
    let deployment = NewDeployment {
        files: vec![SourceFile {
            path: "main.js".into(),
            code: "export default () => 1".into(),
        }],
        entry: "main.js".into(),
        limits: Default::default(),
        env: Default::default(),
        secrets: Default::default(),
        kv_binding: None,
        allowed_hosts: Vec::new(),
    };
    registry
        .create_deployment(name, deployment, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_names_are_looked_up_once() {
    let (registry, active) = setup();
    for _ in 0..5 {
        let error = active.get("nobody").await.err().unwrap();
        assert_eq!(error.status, axum::http::StatusCode::NOT_FOUND);
    }
    assert_eq!(registry.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn names_that_cannot_be_functions_are_never_looked_up() {
    let (registry, active) = setup();
    for name in ["", "UPPER", "a_b", "-x", &"x".repeat(64), "a.b"] {
        let error = active.get(name).await.err().unwrap();
        assert_eq!(error.status, axum::http::StatusCode::NOT_FOUND, "{name:?}");
    }
    assert_eq!(registry.lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_name_created_and_deployed_later_is_served() {
    let (registry, active) = setup();
    assert!(active.get("later").await.is_err());
    deploy(&registry, "later").await;
    // The deploy route refreshes the name, which forgets its absence.
    active.refresh("later").await.unwrap();
    let found = active.get("later").await.unwrap();
    assert_eq!(found.deployment.version, 1);
    registry.delete_function("later").await.unwrap();
    active.refresh("later").await.unwrap();
    assert!(active.get("later").await.is_err());
}

#[tokio::test]
async fn a_slow_miss_does_not_hold_up_other_names() {
    let (registry, active) = setup();
    deploy(&registry, "real").await;
    let slow = tokio::spawn({
        let active = active.clone();
        async move { active.get("slow-missing").await.is_err() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(active.get("real").await.unwrap().deployment.version, 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited {:?} behind another name",
        started.elapsed()
    );
    assert!(slow.await.unwrap());
    assert!(active.locks.lock().unwrap().is_empty(), "locks left behind");
}

#[tokio::test]
async fn changes_made_elsewhere_reach_the_cache() {
    let (registry, active) = setup();
    let following = active.follow();
    assert!(active.get("elsewhere").await.is_err());
    // Deployed without this cache being told (as by another node).
    deploy(&registry, "elsewhere").await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Ok(found) = active.get("elsewhere").await {
            assert_eq!(found.deployment.version, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deploy never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    registry.delete_function("elsewhere").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while active.get("elsewhere").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the delete never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    following.abort();
}
