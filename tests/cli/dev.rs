//! `isola dev`: one module served at `/`, reloaded on change; and the web
//! platform conformance scripts of `tests/conformance`, served through it.

use reqwest::blocking::Client;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `isola dev`, killed on drop.
struct Dev {
    child: Child,
    url: String,
    /// What it prints after its address, line by line.
    said: std::sync::mpsc::Receiver<String>,
    /// What it printed before its address.
    intro: Vec<String>,
}

impl Dev {
    fn start(file: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
            .args(["dev", "--addr", "127.0.0.1:0"])
            .args(extra)
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting isola dev");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut intro = Vec::new();
        let url = loop {
            let line = lines.next().expect("isola dev exited early").unwrap();
            if let Some((_, rest)) = line.split_once(" on http://") {
                break format!("http://{}", rest.split_whitespace().next().unwrap());
            }
            intro.push(line);
        };
        let said = crate::relay_lines(lines);
        Self {
            child,
            url,
            said,
            intro,
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn dev_serves_the_module_and_reloads_it_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.js");
    std::fs::write(
        &file,
        "export default { fetch: (r) => new Response('first ' + new URL(r.url).pathname) }",
    )
    .unwrap();
    let dev = Dev::start(&file, &[]);
    // It says what the function is given.
    let intro = dev.intro.join("\n");
    assert!(intro.contains("limits: CPU 50 ms"), "{intro}");
    let http = client();
    assert_eq!(
        http.get(format!("{}/a/b", dev.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "first /a/b"
    );
    // One line per request on the terminal.
    let line = dev
        .said
        .recv_timeout(Duration::from_secs(10))
        .expect("a line about the request");
    assert!(line.starts_with("GET /a/b 200 "), "{line}");
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    std::fs::write(
        &file,
        "export default { fetch: () => new Response('second') }",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http
            .get(format!("{}/", dev.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if body == "second" {
            break;
        }
        assert!(Instant::now() < deadline, "no reload: still {body:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn web_platform_conformance_scripts_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "js"))
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 6,
        "conformance scripts missing in {}",
        dir.display()
    );
    let mut failed = Vec::new();
    for script in &scripts {
        // Generous CPU: these check behaviour, and key generation in a
        // debug build is slow.
        let dev = Dev::start(script, &["--cpu-ms", "5000"]);
        let response = client()
            .get(format!("{}/", dev.url))
            .header("x-conformance", "yes")
            .send()
            .unwrap();
        let status = response.status();
        let body = response.text().unwrap();
        let passed = status.is_success()
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["ok"] == true);
        if !passed {
            failed.push(format!(
                "{}: HTTP {status} {body}",
                script.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}

#[test]
fn dev_serves_websockets_and_prints_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.js");
    std::fs::write(
        &file,
        r#"export default { fetch() {
            const [client, server] = Object.values(new WebSocketPair());
            server.accept();
            server.addEventListener("message", (e) => { console.log("heard", e.data); server.send(e.data); });
            return new Response(null, { status: 101, webSocket: client });
        } };"#,
    )
    .unwrap();
    let dev = Dev::start(&file, &[]);
    let address = dev.url.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut socket, _) = tungstenite::client(format!("ws://{address}/"), stream).unwrap();
    socket.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(socket.read().unwrap(), tungstenite::Message::text("hello"));
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l.contains("closed 1005")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match dev.said.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => panic!("isola dev did not print the close: {said:?}"),
        }
    }
    assert!(
        said.iter().any(|l| l.contains("101 WebSocket open")),
        "{said:?}"
    );
    assert!(said.iter().any(|l| l == "[info] heard hello"), "{said:?}");
    assert!(
        said.iter().any(|l| l.contains("1 messages in, 1 out")),
        "{said:?}"
    );
}

#[test]
fn dev_serves_a_wasi_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.wasm");
    let module = wat::parse_str(crate::WASI_ECHO).unwrap();
    std::fs::write(&file, module).unwrap();
    let dev = Dev::start(&file, &[]);
    let answer = client()
        .post(format!("{}/", dev.url))
        .body("from dev")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().unwrap(), "from dev");
}
