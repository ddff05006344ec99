//! The first start of a node shows its new admin token once: only once it
//! holds its port (issue 18), with the real address in the login hint.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_busy_port_does_not_use_up_the_one_showing_of_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let refused = crate::isola(&["serve", "--addr", &busy_addr, "--data", data], "");
    assert!(!refused.status.success());
    let said = crate::stderr(&refused);
    assert!(said.contains("listening on"), "{said}");
    assert!(!said.contains("Admin token"), "{said}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data", data])
        .env_remove("ISOLA_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut shown = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let listening = line.starts_with("isola listening");
        shown.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let shown = shown.join("\n");
    assert!(shown.contains("Admin token"), "{shown}");
    assert!(shown.contains("--server http://127.0.0.1:"), "{shown}");
    assert!(!shown.contains("<addr>"), "{shown}");
}

#[test]
fn a_second_node_on_the_same_port_is_refused() {
    let first_dir = tempfile::tempdir().unwrap();
    let first = crate::server::Server::start(first_dir.path(), &[]);
    let address = first.url.trim_start_matches("http://").to_string();
    let second_dir = tempfile::tempdir().unwrap();
    let second = crate::isola(
        &[
            "serve",
            "--addr",
            &address,
            "--token",
            "x",
            "--data",
            second_dir.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(!second.status.success());
    assert!(
        crate::stderr(&second).contains("listening on"),
        "{}",
        crate::stderr(&second)
    );
}
