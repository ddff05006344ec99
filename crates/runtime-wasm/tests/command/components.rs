//! `wasi:http` handler components, `isola:kv` and outbound requests, from
//! the WAT fixtures of `isola_runtime_wasm::fixtures`.

use super::*;

/// An HTTP request to `path` of the function.
fn get(path: &str) -> InvocationInput {
    InvocationInput::Http(isola_core::HttpRequest {
        method: "GET".into(),
        url: format!("http://fn.example{path}"),
        headers: vec![("host".into(), "fn.example".into())],
        body: Vec::new(),
        rest: Default::default(),
    })
}

/// The status and whole body of an HTTP outcome.
async fn response_of(outcome: Outcome) -> (u16, Result<String, String>) {
    match outcome.result {
        Ok(InvocationOutput::Http(response)) => {
            let body = response.read_body(1 << 20).await;
            (
                response.status,
                body.map(|b| String::from_utf8_lossy(&b).into_owned()),
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_http_handler_component_answers_requests() {
    let runtime = WasmRuntime::new().unwrap();
    let hello = function(
        isola_runtime_wasm::fixtures::hello("hello from wasm"),
        Limits::default(),
    );
    runtime.prepare(hello.clone()).await.unwrap();
    for _ in 0..3 {
        let outcome = runtime
            .invoke(Invocation {
                id: "i".into(),
                function: hello.clone(),
                input: get("/"),
            })
            .await;
        assert_eq!(
            response_of(outcome).await,
            (200, Ok("hello from wasm".into()))
        );
    }
    // A JSON invocation arrives as a POST.
    let outcome = invoke(&runtime, hello, serde_json::json!({ "a": 1 })).await;
    assert_eq!(response_of(outcome).await.0, 200);
}

#[tokio::test]
async fn hostile_http_handlers_fail_alone_with_the_usual_codes() {
    use isola_runtime_wasm::fixtures::handler;
    let runtime = WasmRuntime::new().unwrap();
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    let request = |bytes: Vec<u8>| Invocation {
        id: "i".into(),
        function: function(bytes, limits),
        input: get("/"),
    };
    // An endless loop before the response: cpu_limit.
    let outcome = runtime
        .invoke(request(handler("", "(loop $l (br $l))")))
        .await;
    assert_eq!(code(&outcome), ErrorCode::CpuLimit, "{:?}", outcome.result);
    assert!(outcome.metrics.cpu_us >= 15_000, "{:?}", outcome.metrics);
    // A trap, and a handler that never answers.
    let outcome = runtime.invoke(request(handler("", "unreachable"))).await;
    assert_eq!(code(&outcome), ErrorCode::UncaughtException);
    let outcome = runtime.invoke(request(handler("", ""))).await;
    let error = outcome.result.unwrap_err();
    assert!(
        error.message.contains("without setting a response"),
        "{error:?}"
    );
    // An endless loop after the head: the streamed body ends in an error.
    let spins = handler(
        r#"(data (i32.const 1024) "partial")"#,
        "(call $answer (local.get 1) (i32.const 200))
         (call $send (i32.const 1024) (i32.const 7))
         (loop $l (br $l))",
    );
    let (status, body) = response_of(runtime.invoke(request(spins)).await).await;
    assert_eq!(status, 200);
    let error = body.unwrap_err();
    assert!(error.contains("CPU time limit"), "{error}");
    // Memory past the limit.
    let grows = handler("", "(drop (memory.grow (i32.const 4096)))");
    let outcome = runtime.invoke(request(grows)).await;
    assert_eq!(
        code(&outcome),
        ErrorCode::MemoryLimit,
        "{:?}",
        outcome.result
    );
    // The runtime still serves.
    let hello = runtime
        .invoke(request(isola_runtime_wasm::fixtures::hello("ok")))
        .await;
    assert_eq!(response_of(hello).await, (200, Ok("ok".into())));
}

#[tokio::test]
async fn components_reach_their_namespace_with_isola_kv_only_when_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn isola_kv::KvStore> =
        Arc::new(isola_kv::SqliteKv::open(&dir.path().join("kv.db"), Default::default()).unwrap());
    let runtime = WasmRuntime::new().unwrap().with_kv(store.clone());
    let bytes = isola_runtime_wasm::fixtures::kv_roundtrip();
    // No KV binding: unavailable, and nothing written.
    let unbound = function(bytes.clone(), Limits::default());
    let outcome = runtime
        .invoke(Invocation {
            id: "i".into(),
            function: unbound.clone(),
            input: get("/"),
        })
        .await;
    let (status, body) = response_of(outcome).await;
    assert_eq!(status, 503);
    assert!(body.unwrap().contains("no KV"));
    assert!(store.get(&unbound.name, "counter").await.unwrap().is_none());
    // Bound: the function's own namespace.
    let mut bound = (*function(bytes, Limits::default())).clone();
    bound.id = "kv-bound".into();
    bound.kv_binding = Some("KV".into());
    let outcome = runtime
        .invoke(Invocation {
            id: "i".into(),
            function: Arc::new(bound.clone()),
            input: get("/"),
        })
        .await;
    assert_eq!(response_of(outcome).await, (200, Ok("stored value".into())));
    let entry = store.get(&bound.name, "counter").await.unwrap().unwrap();
    assert_eq!(entry.value, b"stored value");
    assert!(store.get("other", "counter").await.unwrap().is_none());
}

#[tokio::test]
async fn a_component_cannot_reach_a_private_address_unless_allowed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    });
    let runtime = WasmRuntime::new().unwrap();
    let bytes = isola_runtime_wasm::fixtures::fetcher(&format!("127.0.0.1:{port}"));
    let request = |allowed: &[&str]| {
        let mut source = (*function(bytes.clone(), Limits::default())).clone();
        source.id = format!("fetcher-{}", allowed.len());
        source.allowed_hosts = allowed.iter().map(|h| h.to_string()).collect();
        Invocation {
            id: "i".into(),
            function: Arc::new(source),
            input: get("/"),
        }
    };
    // Loopback: destination-IP-prohibited (case 4), nothing connected.
    let (status, _) = response_of(runtime.invoke(request(&[])).await).await;
    assert_eq!(status, 504);
    // Allowed explicitly, it goes through.
    let (status, _) = response_of(runtime.invoke(request(&["127.0.0.1"])).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_cut_off_by_the_wall_clock_limit_fails_rather_than_ends() {
    let runtime = WasmRuntime::new().unwrap();
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let outcome = runtime
        .invoke(Invocation {
            id: "i".into(),
            function: function(isola_runtime_wasm::fixtures::slow_body(10), limits),
            input: get("/"),
        })
        .await;
    let (status, body) = response_of(outcome).await;
    assert_eq!(status, 200);
    let error = body.unwrap_err();
    assert!(error.contains("wall-clock limit"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
