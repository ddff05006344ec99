//! The SQLite KV store against a real database file.

use isola_kv::{Check, KvError, KvLimits, KvStore, Mutation, SqliteKv};
use std::sync::Arc;

fn open(dir: &tempfile::TempDir) -> SqliteKv {
    SqliteKv::open(&dir.path().join("kv.db"), KvLimits::default()).unwrap()
}

#[tokio::test]
async fn put_get_delete_and_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(&dir);
    let v1 = kv
        .put("fn-a", "greeting", b"hello".to_vec(), None)
        .await
        .unwrap();
    let entry = kv.get("fn-a", "greeting").await.unwrap().unwrap();
    assert_eq!(
        (entry.value.as_slice(), entry.version),
        (b"hello".as_slice(), v1)
    );
    assert!(
        kv.get("fn-b", "greeting").await.unwrap().is_none(),
        "namespaces leak"
    );
    let v2 = kv
        .put("fn-a", "greeting", b"bye".to_vec(), None)
        .await
        .unwrap();
    assert!(v2 > v1);
    kv.delete("fn-a", "greeting").await.unwrap();
    assert!(kv.get("fn-a", "greeting").await.unwrap().is_none());
}

#[tokio::test]
async fn list_pages_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(&dir);
    for key in ["user:1", "user:2", "user:3", "order:1"] {
        kv.put("ns", key, key.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    let page = kv.list("ns", "user:", 2, None).await.unwrap();
    assert_eq!(
        page.keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["user:1", "user:2"]
    );
    let rest = kv.list("ns", "user:", 2, page.cursor).await.unwrap();
    assert_eq!(
        rest.keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["user:3"]
    );
    assert!(rest.cursor.is_none());
}

#[tokio::test]
async fn expired_keys_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(&dir);
    kv.put("ns", "short", b"x".to_vec(), Some(0)).await.unwrap();
    kv.put("ns", "long", b"x".to_vec(), Some(3600))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(kv.get("ns", "short").await.unwrap().is_none());
    assert!(kv.get("ns", "long").await.unwrap().is_some());
}

#[tokio::test]
async fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SqliteKv::open(
        &dir.path().join("kv.db"),
        KvLimits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_list: 10,
        },
    )
    .unwrap();
    assert!(matches!(
        kv.put("ns", "much-too-long-key", vec![], None).await,
        Err(KvError::Invalid(_))
    ));
    assert!(matches!(
        kv.put("ns", "k", vec![0; 17], None).await,
        Err(KvError::Invalid(_))
    ));
    assert!(matches!(
        kv.put("ns", "", vec![], None).await,
        Err(KvError::Invalid(_))
    ));
    kv.put("ns", "k", vec![0; 16], None).await.unwrap();
}

#[tokio::test]
async fn atomic_check_and_set_has_no_lost_updates() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(open(&dir));
    kv.put("ns", "counter", b"0".to_vec(), None).await.unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 10 {
                    let entry = kv.get("ns", "counter").await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(entry.value).unwrap().parse().unwrap();
                    let check = Check {
                        key: "counter".into(),
                        version: Some(entry.version),
                    };
                    let set = Mutation::Put {
                        key: "counter".into(),
                        value: (n + 1).to_string().into_bytes(),
                        ttl_seconds: None,
                    };
                    if kv
                        .atomic("ns", vec![check], vec![set])
                        .await
                        .unwrap()
                        .is_some()
                    {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let entry = kv.get("ns", "counter").await.unwrap().unwrap();
    assert_eq!(String::from_utf8(entry.value).unwrap(), "80");
    // A check that the key does not exist fails once it does.
    let create = Mutation::Put {
        key: "counter".into(),
        value: b"x".to_vec(),
        ttl_seconds: None,
    };
    let absent = Check {
        key: "counter".into(),
        version: None,
    };
    assert_eq!(
        kv.atomic("ns", vec![absent], vec![create]).await.unwrap(),
        None
    );
}
