//! Outbound fetch: private, loopback and metadata addresses are refused
//! after DNS, with a TypeError, never a hang.

use crate::harness::*;
use serde_json::json;

crate::cases!(
    fetch_to_loopback_is_refused,
    fetch_to_a_name_resolving_to_loopback_is_refused,
    fetch_to_private_and_metadata_addresses_is_refused,
    data_urls_are_fetched_in_process,
    file_urls_are_refused,
    fetch_limits_per_invocation,
    allowed_hosts_open_private_addresses,
    a_silent_server_times_out_without_charging_cpu,
    an_endless_stream_stops_at_the_byte_limit,
);

fn refused(url: &str) -> serde_json::Value {
    let code = format!(
        r#"export default async () => {{
            try {{ await fetch({url:?}); return {{ ok: true }}; }}
            catch (e) {{ return {{ ok: false, name: e?.constructor?.name, message: String(e?.message ?? e) }}; }}
        }}"#
    );
    json(&invoke(&function(&code), json!(null)))
}

fn assert_refused(url: &str) {
    let started = std::time::Instant::now();
    let result = refused(url);
    assert_eq!(result["ok"], false, "{url} was fetched: {result}");
    assert_eq!(result["name"], "TypeError", "{url}: {result}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{url} hung"
    );
}

/// A loopback listener that must never see a connection, and its port.
fn untouchable_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    (listener, port)
}

fn fetch_to_loopback_is_refused() {
    let (listener, port) = untouchable_listener();
    assert_refused(&format!("http://127.0.0.1:{port}/"));
    assert_refused(&format!("http://[::1]:{port}/"));
    assert_refused(&format!("http://[::ffff:127.0.0.1]:{port}/"));
    assert!(
        listener.accept().is_err(),
        "the loopback server received a connection"
    );
}

fn fetch_to_a_name_resolving_to_loopback_is_refused() {
    // `localhost` passes the URL check (it is a name, not an address) and
    // is refused once resolved to 127.0.0.1 / ::1.
    let (listener, port) = untouchable_listener();
    assert_refused(&format!("http://localhost:{port}/"));
    assert!(
        listener.accept().is_err(),
        "the loopback server received a connection"
    );
}

fn fetch_to_private_and_metadata_addresses_is_refused() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[fd00::1]/",
        // Ranges that embed or translate to IPv4 addresses, and site-local.
        "http://[::7f00:1]/",
        "http://[::a00:1]/",
        "http://[2002:7f00:1::1]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fec0::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    ] {
        assert_refused(url);
    }
}

fn data_urls_are_fetched_in_process() {
    let source =
        function("export default async () => (await fetch('data:text/plain,hello')).text()");
    assert_eq!(json(&invoke(&source, json!(null))), json!("hello"));
}

fn file_urls_are_refused() {
    assert_refused("file:///etc/passwd");
}

fn fetch_limits_per_invocation() {
    let limits = isola_core::Limits {
        max_subrequests: 3,
        max_subrequest_mb: 1,
        ..isola_core::Limits::default()
    };
    let source = function_with(
        r#"export default async () => {
            const results = [];
            for (let i = 0; i < 4; i++) {
                try { await (await fetch("data:text/plain,x")).text(); results.push("ok"); }
                catch (e) { results.push(e.constructor.name + ": " + e.message); }
            }
            return results;
        }"#,
        limits,
    );
    let first = json(&invoke(&source, json!(null)));
    assert_eq!(first[0], "ok");
    assert_eq!(first[2], "ok");
    assert!(
        first[3]
            .as_str()
            .unwrap()
            .starts_with("TypeError: fetch refused: an invocation may make at most 3"),
        "{first}"
    );
    // The budget is per invocation: the next one may fetch again.
    assert_eq!(json(&invoke(&source, json!(null)))[0], "ok");

    let big = function_with(
        r#"export default async () => {
            const payload = "a".repeat(700 * 1024);
            const url = "data:text/plain;base64," + btoa(payload);
            await (await fetch(url)).text();
            try { await (await fetch(url)).text(); return "read past the limit"; }
            catch (e) { return e.constructor.name + ": " + e.message; }
        }"#,
        one_mib_of_fetch(),
    );
    let message = json(&invoke(&big, json!(null)));
    assert_too_large(&message);
}

/// A loopback HTTP server for one connection: `respond` writes the reply.
fn one_shot_server(respond: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Read;
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            respond(stream);
        }
    });
    port
}

fn allowing_loopback(
    code: &str,
    limits: isola_core::Limits,
) -> std::sync::Arc<isola_core::FunctionSource> {
    let mut source = (*function_with(code, limits)).clone();
    source.allowed_hosts = vec!["127.0.0.1".into()];
    std::sync::Arc::new(source)
}

fn allowed_hosts_open_private_addresses() {
    use std::io::Write;
    let port = one_shot_server(|mut stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nlocal");
    });
    let code =
        format!("export default async () => (await fetch('http://127.0.0.1:{port}/')).text()");
    let source = allowing_loopback(&code, isola_core::Limits::default());
    assert_eq!(json(&invoke(&source, json!(null))), json!("local"));
    // A host name opens the addresses it resolves to.
    let by_name_port = one_shot_server(|mut stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nname");
    });
    let mut by_name = (*function(&format!(
        "export default async () => (await fetch('http://127.0.0.1:{by_name_port}/')).text()"
    )))
    .clone();
    by_name.allowed_hosts = vec!["localhost".into()];
    assert_eq!(
        json(&invoke(&std::sync::Arc::new(by_name), json!(null))),
        json!("name")
    );
    // Only the allowed address: the rest of loopback stays closed.
    let other = allowing_loopback("export default async () => { try { await fetch('http://127.0.0.2:9/'); return 'open' } catch (e) { return e.constructor.name } }", isola_core::Limits::default());
    assert_eq!(json(&invoke(&other, json!(null))), json!("TypeError"));
}

fn a_silent_server_times_out_without_charging_cpu() {
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let port = one_shot_server(move |_stream| {
        let _ = stop.recv_timeout(std::time::Duration::from_secs(10));
    });
    let code = format!("export default async () => {{ try {{ await fetch('http://127.0.0.1:{port}/'); return 'answered' }} catch (e) {{ return e.constructor.name + ': ' + e.message }} }}");
    let limits = isola_core::Limits {
        subrequest_timeout_ms: 300,
        cpu_ms: 20,
        ..isola_core::Limits::default()
    };
    let outcome = invoke(&allowing_loopback(&code, limits), json!(null));
    drop(done);
    let message = json(&outcome);
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("TypeError: fetch timed out"),
        "{message}"
    );
    assert!(
        outcome.metrics.duration_us >= 300_000,
        "{:?}",
        outcome.metrics
    );
    assert!(
        outcome.metrics.cpu_us < 20_000,
        "waiting was charged: {:?}",
        outcome.metrics
    );
}

fn an_endless_stream_stops_at_the_byte_limit() {
    use std::io::Write;
    let port = one_shot_server(|mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let chunk = [b'z'; 64 * 1024];
        // Bounded: at most 64 MiB or 20 s, stops when the client hangs up.
        let started = std::time::Instant::now();
        for _ in 0..1024 {
            let header = format!("{:x}\r\n", chunk.len());
            let sent = stream
                .write_all(header.as_bytes())
                .and_then(|_| stream.write_all(&chunk))
                .and_then(|_| stream.write_all(b"\r\n"));
            if sent.is_err() || started.elapsed() > std::time::Duration::from_secs(20) {
                break;
            }
        }
    });
    let code = format!(
        "export default async () => {{ const r = await fetch('http://127.0.0.1:{port}/'); try {{ let n = 0; for await (const c of r.body) n += c.byteLength; return 'read ' + n }} catch (e) {{ return e.constructor.name + ': ' + e.message }} }}"
    );
    let limits = one_mib_of_fetch();
    let message = json(&invoke(&allowing_loopback(&code, limits), json!(null)));
    assert_too_large(&message);
}

/// Asserts that a function reported the fetch byte limit as a TypeError.
fn assert_too_large(message: &serde_json::Value) {
    let text = message.as_str().unwrap_or_default();
    assert!(
        text.starts_with("TypeError: fetch response too large"),
        "{message}"
    );
}

/// Limits that allow 1 MiB of fetched bytes and enough CPU to read them.
fn one_mib_of_fetch() -> isola_core::Limits {
    isola_core::Limits {
        max_subrequest_mb: 1,
        cpu_ms: 5_000,
        ..isola_core::Limits::default()
    }
}
