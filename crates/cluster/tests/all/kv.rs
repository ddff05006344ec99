//! Function KV across nodes on a real JetStream: what one node commits,
//! another reads; racing check-and-set commits from several nodes lose no
//! update; a compacted log still gives a new node the right data.

use crate::nats::NatsServer;
use isola_cluster::JetStreamKv;
use isola_kv::{Check, KvError, KvLimits, KvStore, Mutation, Replica};
use std::sync::Arc;

/// A node's view of the cluster's KV, with its own copies.
async fn node(server: &NatsServer, limits: KvLimits) -> (JetStreamKv, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(&dir.path().join("kv.db"), limits).unwrap();
    let kv = JetStreamKv::open(server.client().await, replica, limits)
        .await
        .unwrap();
    (kv, dir)
}

fn put(key: &str, value: &[u8]) -> Mutation {
    Mutation::Put {
        key: key.into(),
        value: value.to_vec(),
        ttl_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_commits_another_reads_and_checks_against() {
    let server = NatsServer::with_jetstream().await;
    let (one, _d1) = node(&server, KvLimits::default()).await;
    let (other, _d2) = node(&server, KvLimits::default()).await;

    assert_eq!(other.get("fn", "a").await.unwrap(), None);
    // Versions count a namespace's own commits: another namespace's
    // traffic shows in none of them.
    one.put("noise", "x", b"1".to_vec(), None).await.unwrap();
    let v1 = one.put("fn", "a", b"1".to_vec(), None).await.unwrap();
    assert_eq!(v1, 1);
    let seen = other.get("fn", "a").await.unwrap().unwrap();
    assert_eq!((seen.value, seen.version), (b"1".to_vec(), v1));
    // A namespace is its own: another one does not see the key.
    assert_eq!(other.get("other", "a").await.unwrap(), None);

    // `other` read version v1; `one` writes again; `other`'s check fails.
    let v2 = one.put("fn", "a", b"2".to_vec(), None).await.unwrap();
    assert_eq!(v2, 2);
    let stale = vec![Check {
        key: "a".into(),
        version: Some(v1),
    }];
    let refused = other
        .atomic("fn", stale, vec![put("a", b"lost")])
        .await
        .unwrap();
    assert_eq!(refused, None);
    assert_eq!(one.get("fn", "a").await.unwrap().unwrap().value, b"2");

    // Several keys at once, seen together.
    let fresh = vec![Check {
        key: "a".into(),
        version: Some(v2),
    }];
    let v3 = other
        .atomic("fn", fresh, vec![put("a", b"3"), put("b", b"x")])
        .await
        .unwrap()
        .unwrap();
    // Checks alone write nothing: the version stays.
    let holds = vec![Check {
        key: "a".into(),
        version: Some(v3),
    }];
    assert_eq!(one.atomic("fn", holds, Vec::new()).await.unwrap(), Some(v3));
    let page = one.list("fn", "", 10, None).await.unwrap();
    assert_eq!(page.keys, vec![("a".into(), v3), ("b".into(), v3)]);
    one.delete("fn", "b").await.unwrap();
    assert_eq!(other.get("fn", "b").await.unwrap(), None);

    // Keys that expire, expire everywhere.
    let ttl = Mutation::Put {
        key: "t".into(),
        value: b"soon".to_vec(),
        ttl_seconds: Some(1),
    };
    one.atomic("fn", Vec::new(), vec![ttl]).await.unwrap();
    assert!(other.get("fn", "t").await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(other.get("fn", "t").await.unwrap(), None);
    assert_eq!(one.get("fn", "t").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_increments_from_three_nodes_lose_nothing() {
    let server = NatsServer::with_jetstream().await;
    let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (kv, dir) = node(&server, KvLimits::default()).await;
        nodes.push(Arc::new(kv));
        dirs.push(dir);
    }
    let mut tasks = Vec::new();
    for task in 0..6 {
        let kv = nodes[task % 3].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                loop {
                    let current = kv.get("counter", "n").await.unwrap();
                    let (n, version) = match &current {
                        Some(entry) => (
                            String::from_utf8_lossy(&entry.value)
                                .parse::<u64>()
                                .unwrap(),
                            Some(entry.version),
                        ),
                        None => (0, None),
                    };
                    let check = vec![Check {
                        key: "n".into(),
                        version,
                    }];
                    let next = put("n", (n + 1).to_string().as_bytes());
                    if kv
                        .atomic("counter", check, vec![next])
                        .await
                        .unwrap()
                        .is_some()
                    {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for kv in &nodes {
        let entry = kv.get("counter", "n").await.unwrap().unwrap();
        assert_eq!(entry.value, b"90");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_log_still_gives_a_new_node_the_data() {
    let server = NatsServer::with_jetstream().await;
    let (one, _d1) = node(&server, KvLimits::default()).await;
    let (other, _d2) = node(&server, KvLimits::default()).await;
    let big = vec![7u8; 600 << 10];
    one.put("fn", "keep", b"kept".to_vec(), None).await.unwrap();
    assert_eq!(
        other.get("fn", "keep").await.unwrap().unwrap().value,
        b"kept"
    );
    // ~36 MiB of log for 600 KiB of data: compacted, beside the
    // commits, about 8 times.
    let mut last = 0;
    for i in 0..60u8 {
        let mut value = big.clone();
        value[0] = i;
        last = one.put("fn", "big", value, None).await.unwrap();
    }
    assert_eq!(last, 61);
    let client = server.client().await;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("ISOLA_KV").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let messages = stream.info().await.unwrap().state.messages;
        if messages < 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not compacted: {messages} messages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Two snapshots at most are kept, once compaction settles: the
    // current one and the one before (600 KiB each; a deleted one's chunks
    // are purged).
    let mut objects = js.get_stream("OBJ_isola_kv_snapshots").await.unwrap();
    loop {
        let bytes = objects.info().await.unwrap().state.bytes;
        if bytes < 2 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{bytes} bytes of snapshots kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A node that never saw the namespace, and one that saw its start.
    let (new, _d3) = node(&server, KvLimits::default()).await;
    for kv in [&new, &other] {
        let big = kv.get("fn", "big").await.unwrap().unwrap();
        assert_eq!((big.value[0], big.version), (59, last));
        assert_eq!(kv.get("fn", "keep").await.unwrap().unwrap().value, b"kept");
    }
    // And they commit after it.
    let check = vec![Check {
        key: "big".into(),
        version: Some(last),
    }];
    assert!(new
        .atomic("fn", check, vec![put("after", b"1")])
        .await
        .unwrap()
        .is_some());
    assert!(one.get("fn", "after").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_message_sized_limits_hold() {
    let server = NatsServer::with_jetstream().await;
    let limits = KvLimits {
        max_namespace_bytes: 1000,
        ..KvLimits::default()
    };
    let (one, _d1) = node(&server, limits).await;
    let (other, _d2) = node(&server, limits).await;
    one.put("fn", "a", vec![0; 600], None).await.unwrap();
    let over = other.put("fn", "b", vec![0; 600], None).await;
    assert!(matches!(over, Err(KvError::QuotaExceeded(_))), "{over:?}");
    // A value is at most what one NATS message carries (1 MiB by default).
    let limits = one.limits();
    assert!(limits.max_value_bytes < 1 << 20);
    let too_big = one.put("fn", "c", vec![0; (1 << 20) + 1], None).await;
    assert!(matches!(too_big, Err(KvError::Invalid(_))), "{too_big:?}");
    one.put("fn", "a", vec![0; 10], None).await.unwrap();
    other.put("fn", "b", vec![0; 600], None).await.unwrap();
}
