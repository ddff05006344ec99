//! WebSockets into functions: a real client (tungstenite) against
//! `isola serve`, with Workers' `WebSocketPair` API in the function.

use crate::server::Server;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A chat room: echo, broadcast to every connection, binary frames,
/// closing with a code, and a listener that never ends.
const ROOM: &str = r#"
const clients = new Set();
export default {
  fetch(request) {
    if (new URL(request.url).pathname === "/heavy") for (;;) {}
    if (request.headers.get("upgrade") !== "websocket") {
      return new Response("WebSockets only", { status: 426 });
    }
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    clients.add(server);
    server.addEventListener("message", (event) => {
      const data = event.data;
      if (typeof data !== "string") {
        server.send(new Uint8Array(data).reverse());
      } else if (data === "close") {
        server.close(4000, "asked");
      } else if (data.startsWith("all:")) {
        for (const other of clients) other.send(data.slice(4));
      } else if (data === "flood") {
        // A client that does not read: the node drops it, not buffers on.
        const chunk = "x".repeat(512 * 1024);
        let sent = 0;
        while (server.readyState === WebSocket.OPEN && sent < 1000) {
          server.send(chunk);
          sent++;
        }
        console.log("flood stopped after", sent);
      } else if (data === "spin") {
        for (;;) {}
      } else if (data === "throw") {
        throw new Error("listener failed");
      } else {
        server.send("echo:" + data);
      }
    });
    server.addEventListener("close", (event) => {
      clients.delete(server);
      console.log("closed", event.code);
    });
    return new Response(null, { status: 101, webSocket: client });
  },
};
"#;

type Client = WebSocket<TcpStream>;

/// Opens a WebSocket to `/fn/<name>/`.
fn connect(server: &Server, name: &str) -> Result<Client, tungstenite::Error> {
    let address = server.url.trim_start_matches("http://");
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{address}/fn/{name}/");
    tungstenite::client(url, stream)
        .map(|(socket, _)| socket)
        .map_err(|error| match error {
            tungstenite::HandshakeError::Failure(error) => error,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

/// Opens a WebSocket once the function has room for one (2 s at most).
fn connect_when_room(server: &Server, name: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match connect(server, name) {
            Ok(socket) => return socket,
            Err(tungstenite::Error::Http(response))
                if response.status() == 503 && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// The next text message.
fn text(socket: &mut Client) -> String {
    match socket.read().unwrap() {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close; its code and reason.
fn closed(socket: &mut Client) -> (CloseCode, String) {
    loop {
        match socket.read() {
            Ok(Message::Close(frame)) => {
                // Answer the close, as a browser does.
                let _ = socket.flush();
                return frame.map_or((CloseCode::Status, String::new()), |f| {
                    (f.code, f.reason.to_string())
                });
            }
            Ok(_) => continue,
            Err(error) => panic!("the connection ended without a close frame: {error}"),
        }
    }
}

/// Deploys `code` with `limits` (JSON) as function `name`.
fn deploy(server: &Server, name: &str, code: &str, limits: serde_json::Value) {
    let deployment = serde_json::json!({
        "files": [{ "path": "main.js", "code": code }],
        "entry": "main.js",
        "limits": limits,
    });
    let response = server
        .api(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/deployments"),
        )
        .json(&deployment)
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "{}",
        response.text().unwrap()
    );
}

#[test]
fn echo_broadcast_binary_and_close_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("room", ROOM);
    let mut a = connect(&server, "room").unwrap();
    let mut b = connect(&server, "room").unwrap();
    a.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut a), "echo:hi");
    a.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(a.read().unwrap(), Message::binary(vec![3u8, 2, 1]));
    // Both connections live in one isolate: a broadcast reaches both.
    a.send(Message::text("all:news")).unwrap();
    assert_eq!(text(&mut a), "news");
    assert_eq!(text(&mut b), "news");
    // The function closes b with its own code.
    b.send(Message::text("close")).unwrap();
    assert_eq!(closed(&mut b), (CloseCode::from(4000), "asked".into()));
    a.close(None).unwrap();
    let _ = a.read();
    // A plain request reaches the same function, which answers it.
    let plain = server
        .http()
        .get(format!("{}/fn/room/", server.url))
        .send()
        .unwrap();
    assert_eq!(plain.status(), 426);
    // Each connection's record: written at its end, with its totals.
    let records = server.list_of("/v1/functions/room/invocations", 3);
    let sockets: Vec<_> = records.iter().filter_map(|r| r.get("websocket")).collect();
    assert_eq!(sockets.len(), 2, "{records:?}");
    let busiest = sockets
        .iter()
        .find(|s| s["messages_in"] == 3)
        .expect("a's record");
    assert_eq!(busiest["messages_out"], 3, "{busiest}");
    assert_eq!(busiest["bytes_in"], 2 + 3 + 8, "{busiest}");
    assert!(
        sockets.iter().any(|s| s["close_code"] == 4000),
        "{sockets:?}"
    );
    // Each close reached the function's close listener.
    let logs = server.list_of("/v1/functions/room/logs", 2);
    let lines: Vec<_> = logs
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(lines.contains(&"closed 4000"), "{lines:?}");
    assert!(lines.contains(&"closed 1005"), "{lines:?}");
}

#[test]
fn limits_close_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("tight");
    let limits = serde_json::json!({
        "websocket_message_kb": 1,
        "websocket_idle_s": 1,
        "websocket_connections": 1,
    });
    deploy(&server, "tight", ROOM, limits);
    // A message over the limit: 1009.
    let mut big = connect(&server, "tight").unwrap();
    big.send(Message::text("x".repeat(2048))).unwrap();
    assert_eq!(closed(&mut big).0, CloseCode::Size);
    drop(big);
    // Silence past the idle limit: 1001. (A closing connection counts
    // until its closing handshake is over: the next may wait a moment.)
    let mut quiet = connect_when_room(&server, "tight");
    let started = Instant::now();
    assert_eq!(closed(&mut quiet), (CloseCode::Away, "idle timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    // One connection at a time: the second is refused while one is open.
    let mut first = connect_when_room(&server, "tight");
    first.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut first), "echo:hi");
    match connect(&server, "tight") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "a second connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn a_redeploy_closes_connections_with_1012_and_a_failing_function_with_1011() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("room", ROOM);
    let mut open = connect(&server, "room").unwrap();
    open.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut open), "echo:hi");
    let redeployed = server.deploy_module("room", format!("{ROOM}\n// v2"));
    assert_eq!(redeployed.status(), reqwest::StatusCode::CREATED);
    assert_eq!(closed(&mut open).0, CloseCode::Restart);

    // A listener that throws is logged; the connection goes on.
    let mut a = connect(&server, "room").unwrap();
    let mut b = connect(&server, "room").unwrap();
    a.send(Message::text("throw")).unwrap();
    a.send(Message::text("still")).unwrap();
    assert_eq!(text(&mut a), "echo:still");
    // A listener past its CPU limit: every connection of the isolate closes.
    a.send(Message::text("spin")).unwrap();
    assert_eq!(closed(&mut a).0, CloseCode::Error);
    assert_eq!(closed(&mut b).0, CloseCode::Error);
    // The node, and the function, go on serving.
    let mut again = connect(&server, "room").unwrap();
    again.send(Message::text("back")).unwrap();
    assert_eq!(text(&mut again), "echo:back");
    // Records of the connections closed so far: `open`, `a` and `b`.
    let records = server.list_of("/v1/functions/room/invocations", 3);
    assert!(
        records.iter().any(|r| r["error_code"] == "cpu_limit"),
        "{records:?}"
    );
    let logs = server.list_of("/v1/functions/room/logs", 1);
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("listener failed"))),
        "{logs:?}"
    );
}

#[test]
fn a_socket_for_a_plain_request_is_the_functions_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(
        "eager",
        r#"export default { fetch() {
            const [client, server] = Object.values(new WebSocketPair());
            server.accept();
            return new Response(null, { status: 101, webSocket: client });
        } };"#,
    );
    let answer = server
        .http()
        .get(format!("{}/fn/eager/", server.url))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 500);
    let records = server.list_of("/v1/functions/eager/invocations", 1);
    assert_eq!(records[0]["error_code"], "invalid_output", "{records:?}");
}

/// Asks the server at `?to=` for an echo of "ping" over a WebSocket.
const CALLER: &str = r#"
export default {
  async fetch(request) {
    const ws = new WebSocket(new URL(request.url).searchParams.get("to"));
    const answer = await new Promise((resolve) => {
      ws.addEventListener("open", () => ws.send("ping"));
      ws.onmessage = (event) => {
        resolve("got " + event.data);
        ws.close();
      };
      ws.addEventListener("error", (event) => resolve("error: " + event.message));
    });
    return new Response(answer);
  },
};
"#;

/// A loopback WebSocket echo server for `connections` connections.
fn echo_server(connections: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let Ok(mut socket) = tungstenite::accept(stream) else {
                continue;
            };
            while let Ok(message) = socket.read() {
                if message.is_text() || message.is_binary() {
                    let _ = socket.send(message);
                }
            }
        }
    });
    (url, thread)
}

#[test]
fn outbound_websockets_reach_allowed_hosts_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (echo, thread) = echo_server(1);
    server.create_function("allowed");
    let deployment = serde_json::json!({
        "files": [{ "path": "main.js", "code": CALLER }],
        "entry": "main.js",
        "allowed_hosts": ["127.0.0.1"],
    });
    let response = server
        .api(reqwest::Method::POST, "/v1/functions/allowed/deployments")
        .json(&deployment)
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    server.deploy_function("denied", CALLER);
    let ask = |name: &str| {
        server
            .http()
            .get(format!("{}/fn/{name}/?to={echo}", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert_eq!(ask("allowed"), "got ping");
    let refused = ask("denied");
    assert!(
        refused.starts_with("error: WebSocket refused") && refused.contains("allowed_hosts"),
        "{refused}"
    );
    thread.join().unwrap();
}

#[test]
fn a_client_that_does_not_read_is_dropped_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("room", ROOM);
    let mut slow = connect(&server, "room").unwrap();
    slow.send(Message::text("flood")).unwrap();
    // 1,000 half-MiB messages were asked for; the node held back at most
    // twice the message limit (2 MiB) beyond what the sockets took.
    let logs = server.list_of("/v1/functions/room/logs", 1);
    let line = logs
        .iter()
        .filter_map(|l| l["message"].as_str())
        .find(|m| m.starts_with("flood stopped after"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    let sent: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(sent < 100, "{line}");
    // What reached the client ends without a close: it was dropped.
    let mut read = 0usize;
    loop {
        match slow.read() {
            Ok(Message::Text(text)) => read += text.len(),
            Ok(Message::Close(_)) => panic!("a dropped client got a close frame"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(read < sent * 512 * 1024 + 1, "{read}");
}

#[test]
fn a_connection_ends_at_its_lifetime_however_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("brief");
    let limits = serde_json::json!({ "websocket_lifetime_s": 1, "websocket_idle_s": 60 });
    deploy(&server, "brief", ROOM, limits);
    let mut busy = connect(&server, "brief").unwrap();
    let started = Instant::now();
    // Never idle: a message every 100 ms, until the node closes it.
    let code = loop {
        assert!(started.elapsed() < Duration::from_secs(5), "still open");
        busy.send(Message::text("hi")).unwrap();
        match busy.read().unwrap() {
            Message::Text(_) => std::thread::sleep(Duration::from_millis(100)),
            Message::Close(frame) => break frame.map(|f| f.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Each connection gets a tick every 50 ms from a timer that is never
/// cleared; a spin every 30 ms when asked.
const TICKER: &str = r#"
export default {
  fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    setInterval(() => server.send("tick"), 50);
    server.addEventListener("message", (event) => {
      if (event.data === "burn") {
        setInterval(() => { const end = Date.now() + 20; while (Date.now() < end) {} }, 30);
      } else if (event.data === "spin") {
        setTimeout(() => { for (;;) {} }, 0);
      }
    });
    return new Response(null, { status: 101, webSocket: client });
  },
};
"#;

#[test]
fn timers_outliving_their_client_do_not_fail_the_others_and_background_cpu_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("ticker", TICKER);
    let mut a = connect(&server, "ticker").unwrap();
    let mut b = connect(&server, "ticker").unwrap();
    assert_eq!(text(&mut a), "tick");
    a.close(None).unwrap();
    while a.read().is_ok() {}
    // a's timer goes on sending into a closed socket: a no-op, not an
    // exception that would close b too.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(text(&mut b), "tick");
    }
    // Timers burning 20 ms of every 30 (660 ms a second): throttled to
    // about cpu_ms (50) a second, and billed to the connection.
    b.send(Message::text("burn")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    b.close(None).unwrap();
    while b.read().is_ok() {}
    let records = server.list_of("/v1/functions/ticker/invocations", 2);
    let cpu_us = records
        .iter()
        .find(|r| r["websocket"]["messages_in"] == 1)
        .map(|r| r["cpu_us"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("{records:?}"));
    assert!((40_000..400_000).contains(&cpu_us), "{cpu_us} µs in 2 s");
    // A single timer callback past cpu_ms stops the function.
    let mut c = connect(&server, "ticker").unwrap();
    c.send(Message::text("spin")).unwrap();
    assert_eq!(closed(&mut c).0, CloseCode::Error);
    let records = server.list_of("/v1/functions/ticker/invocations", 3);
    assert!(
        records.iter().any(|r| r["error_code"] == "cpu_limit"),
        "{records:?}"
    );
}

#[test]
fn the_node_reserves_each_connections_largest_message() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB for messages being received, a function at most a quarter:
    // one connection of 1 MiB messages (+16 KiB) per function.
    let server = Server::start(dir.path(), &["--websocket-buffer-mb", "8"]);
    server.deploy_function("room", ROOM);
    server.deploy_function("other", ROOM);
    let mut first = connect(&server, "room").unwrap();
    match connect(&server, "room") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "a second connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // Another function still has its share.
    let mut neighbour = connect(&server, "other").unwrap();
    neighbour.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut neighbour), "echo:hi");
    // The refused one never counted: the first still works, and once it
    // closes there is room again.
    first.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut first), "echo:hi");
    first.close(None).unwrap();
    while first.read().is_ok() {}
    connect_when_room(&server, "room");
}

#[test]
fn a_quarantined_function_keeps_its_room_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("room", ROOM);
    let mut a = connect(&server, "room").unwrap();
    a.send(Message::text("hi")).unwrap();
    assert_eq!(text(&mut a), "echo:hi");
    // A plain request breaks the CPU limit: the function is quarantined.
    let heavy = server
        .http()
        .get(format!("{}/fn/room/heavy", server.url))
        .send()
        .unwrap();
    assert_eq!(heavy.status(), 500);
    // A new member still joins the same room.
    let mut b = connect(&server, "room").unwrap();
    b.send(Message::text("all:together")).unwrap();
    assert_eq!(text(&mut b), "together");
    assert_eq!(text(&mut a), "together");
}
