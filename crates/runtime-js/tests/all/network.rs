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

fn fetch_to_loopback_is_refused() {
    // A real server on loopback that must never see the request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
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
