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
            ..KvLimits::default()
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

#[tokio::test]
async fn commits_are_bounded_in_mutations_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(&dir);
    let value = vec![7u8; 1 << 20];
    let many: Vec<Mutation> = (0..300)
        .map(|i| Mutation::Put {
            key: format!("k{i}"),
            value: value.clone(),
            ttl_seconds: None,
        })
        .collect();
    let error = kv.atomic("ns", vec![], many).await.unwrap_err();
    assert!(
        matches!(error, KvError::Invalid(ref m) if m.contains("mutations")),
        "{error}"
    );
    let five: Vec<Mutation> = many_puts(5, &value);
    let error = kv.atomic("ns", vec![], five).await.unwrap_err();
    assert!(
        matches!(error, KvError::Invalid(ref m) if m.contains("bytes")),
        "{error}"
    );
    assert!(
        kv.get("ns", "k0").await.unwrap().is_none(),
        "a refused commit wrote"
    );
}

fn many_puts(n: usize, value: &[u8]) -> Vec<Mutation> {
    (0..n)
        .map(|i| Mutation::Put {
            key: format!("k{i}"),
            value: value.to_vec(),
            ttl_seconds: None,
        })
        .collect()
}

#[tokio::test]
async fn a_namespace_is_bounded_by_its_quota_and_overwrites_do_not_count_twice() {
    let dir = tempfile::tempdir().unwrap();
    let limits = KvLimits {
        max_namespace_bytes: 3 << 20,
        ..KvLimits::default()
    };
    let kv = SqliteKv::open(&dir.path().join("kv.db"), limits).unwrap();
    let value = vec![1u8; 1 << 20];
    for _ in 0..10 {
        kv.put("ns", "same", value.clone(), None).await.unwrap();
    }
    kv.put("ns", "two", value.clone(), None).await.unwrap();
    let error = kv
        .atomic("ns", vec![], many_puts(2, &value))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "kv_quota_exceeded", "{error}");
    // Another namespace has its own quota; deleting frees space.
    kv.put("other", "k", value.clone(), None).await.unwrap();
    kv.delete("ns", "two").await.unwrap();
    kv.put("ns", "three", value.clone(), None).await.unwrap();
}

#[tokio::test]
async fn a_namespace_over_its_quota_can_delete_its_way_back_and_wide_keys_count_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let value = vec![1u8; 1 << 20];
    {
        let kv = SqliteKv::open(&path, KvLimits::default()).unwrap();
        for key in ["a", "b", "c"] {
            kv.put("ns", key, value.clone(), None).await.unwrap();
        }
    }
    // The quota is lowered under what the namespace holds.
    let limits = KvLimits {
        max_namespace_bytes: 1 << 20,
        ..KvLimits::default()
    };
    let kv = SqliteKv::open(&path, limits).unwrap();
    assert!(kv.put("ns", "d", value.clone(), None).await.is_err());
    kv.delete("ns", "a").await.unwrap();
    kv.delete("ns", "b").await.unwrap();
    kv.delete("ns", "c").await.unwrap();
    kv.put("ns", "d", vec![1u8; 1000], None).await.unwrap();
    // A key of many-byte characters, overwritten again and again, is
    // counted in bytes both ways, so its usage does not creep up.
    let small = SqliteKv::open(
        &dir.path().join("small.db"),
        KvLimits {
            max_namespace_bytes: 8 << 10,
            ..KvLimits::default()
        },
    )
    .unwrap();
    let wide = "é".repeat(256);
    for _ in 0..100 {
        small.put("ns", &wide, vec![2u8; 10], None).await.unwrap();
    }
}

#[tokio::test]
async fn expired_keys_are_purged_and_free_their_quota() {
    let dir = tempfile::tempdir().unwrap();
    let limits = KvLimits {
        max_namespace_bytes: 2 << 20,
        ..KvLimits::default()
    };
    let kv = SqliteKv::open(&dir.path().join("kv.db"), limits).unwrap();
    let value = vec![1u8; 900 << 10];
    kv.put("ns", "short", value.clone(), Some(0)).await.unwrap();
    kv.put("ns", "kept", value.clone(), None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(kv.purge_expired().await.unwrap(), 1);
    assert!(kv.get("ns", "kept").await.unwrap().is_some());
    // The purged key's bytes are free again.
    kv.put("ns", "again", vec![1u8; 900 << 10], None)
        .await
        .unwrap();
}
