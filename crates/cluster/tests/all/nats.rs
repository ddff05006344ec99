//! A nats-server for tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server on a free loopback port, stopped when dropped.
pub struct NatsServer {
    child: Child,
    pub url: String,
    /// JetStream's storage, when it has JetStream.
    _store: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// A server without JetStream.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// A server with JetStream, storing in a directory of its own.
    pub async fn with_jetstream() -> Self {
        Self::launch(true).await
    }

    async fn launch(jetstream: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = jetstream.then(|| tempfile::tempdir().unwrap());
        let mut command = Command::new("nats-server");
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(store) = &store {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server (apt-get install nats-server)");
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            url,
            _store: store,
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
