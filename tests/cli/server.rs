//! A real `isola serve` process on a loopback port, for tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The token every test server accepts.
pub const TOKEN: &str = "test-token-0123456789";

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// What it logs on stderr after it started, line by line.
    pub log: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `isola serve` on a free port with `data` and extra flags.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--token",
                TOKEN,
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting isola serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines.next().expect("isola serve exited early").unwrap();
            if let Some(rest) = line.strip_prefix("isola listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let log = crate::relay_lines(lines);
        Self {
            child,
            url,
            data: data.to_path_buf(),
            log: std::sync::Mutex::new(log),
        }
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit;
    /// whether it did.
    pub fn terminate_within(&mut self, limit: Duration) -> bool {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A blocking HTTP client. No pooled connections: a server that answers
    /// 413 before reading a large body closes that connection, and reusing
    /// it would fail the next request with a broken pipe.
    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// `GET`/`POST`/… `path` with the admin token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    /// Creates a function through the API.
    pub fn create_function(&self, name: &str) {
        let response = self
            .api(reqwest::Method::POST, "/v1/functions")
            .json(&serde_json::json!({ "name": name }))
            .send()
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }

    /// Uploads `code` as a one-module deployment of `name` through the API.
    pub fn deploy_module(
        &self,
        name: &str,
        code: impl Into<reqwest::blocking::Body>,
    ) -> reqwest::blocking::Response {
        self.api(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/deployments"),
        )
        .header("content-type", "application/javascript")
        .body(code)
        .send()
        .unwrap()
    }

    /// Creates `name` and deploys `code` as its one module.
    pub fn deploy_function(&self, name: &str, code: &'static str) {
        self.create_function(name);
        let response = self.deploy_module(name, code);
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }

    /// The JSON list at `path` (admin token), once it has `count` items
    /// (10 s at most: records and logs are written in the background).
    pub fn list_of(&self, path: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let items: Vec<serde_json::Value> = self
                .api(reqwest::Method::GET, path)
                .send()
                .unwrap()
                .json()
                .unwrap();
            if items.len() >= count {
                return items;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {count} items at {path}: {items:?}",
                items.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let config = self.data.join("cli-config.json");
        let env: [(&str, &std::ffi::OsStr); 3] = [
            ("ISOLA_SERVER", self.url.as_ref()),
            ("ISOLA_TOKEN", TOKEN.as_ref()),
            ("ISOLA_CONFIG", config.as_os_str()),
        ];
        crate::isola_with_env(args, stdin, &env)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
