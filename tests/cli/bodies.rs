//! Request bodies a function never reads end with its invocation: memory
//! does not pile up, and a stalled upload cannot keep the node from
//! stopping (issue 11).

use crate::server::Server;
use std::io::Write;
use std::time::Duration;

#[test]
fn unread_bodies_do_not_pile_up() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    server.deploy_function(
        "ignores",
        "export default { fetch() { return new Response('ignored') } }",
    );
    let url = format!("{}/fn/ignores/", server.url);
    let client = server.http();
    let body = vec![7u8; 1 << 20];
    let send = |n: usize| {
        for _ in 0..n {
            let _ = client.post(&url).body(body.clone()).send();
        }
    };
    send(20);
    std::thread::sleep(Duration::from_millis(500));
    let before = server.rss();
    send(200);
    std::thread::sleep(Duration::from_millis(500));
    let grown = server.rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB over 200 unread 1 MiB bodies",
        grown >> 20
    );
    let answer = client.get(&url).send().unwrap();
    assert_eq!(answer.text().unwrap(), "ignored");
}

#[test]
fn a_stalled_upload_does_not_keep_the_node_from_stopping() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[]);
    server.deploy_function(
        "ignores",
        "export default { fetch() { return new Response('ignored') } }",
    );
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled
        .write_all(b"POST /fn/ignores/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n")
        .unwrap();
    stalled.write_all(&[1u8; 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.terminate_within(Duration::from_secs(20)),
        "isola serve did not stop after SIGTERM"
    );
}
