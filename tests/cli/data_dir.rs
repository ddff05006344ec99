//! The data directory is private (0700, files 0600), deployment secrets
//! never reach its files as plaintext, and a database copied without its
//! node key refuses to start instead of revealing or losing anything.

use crate::server::{Server, TOKEN};
use crate::{stderr, stdout};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "sekrit-value-123";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Files directly under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// Deploys a function answering with its `API_KEY`, and checks it.
fn deploy_with_secret(server: &Server, dir: &Path) {
    let module = dir.join("secret.js");
    std::fs::write(
        &module,
        "export default (p, ctx) => ({ key: ctx.env.API_KEY })",
    )
    .unwrap();
    let out = server.cli(&["functions", "create", "--name", "keeper"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = format!("API_KEY={SECRET}");
    let module = module.to_string_lossy();
    let args = [
        "functions",
        "deploy",
        &module,
        "-f",
        "keeper",
        "--secret",
        &secret,
    ];
    let out = server.cli(&args, "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_function_sees_the_secret(server);
}

fn assert_function_sees_the_secret(server: &Server) {
    let out = server.cli(&["functions", "invoke", "keeper"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(SECRET), "{}", stdout(&out));
}

/// Runs `isola serve` on `data` expecting it to refuse to start; its stderr.
fn refused_start(data: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
        .args(["serve", "--addr", "127.0.0.1:0", "--token", TOKEN, "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("isola serve started on a database without its key");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(!text.contains("panicked"), "{text}");
    text
}

fn copy_database(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["isola.db", "isola.db-wal", "isola.db-shm"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

#[test]
fn secrets_are_sealed_and_the_data_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    deploy_with_secret(&server, dir.path());

    assert_eq!(mode(&data), 0o700);
    for name in [
        "isola.db",
        "isola.db-wal",
        "isola.db-shm",
        "kv.db",
        "node.key",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert_eq!(files_containing(&data, SECRET), Vec::<String>::new());
    server.kill();
    assert_eq!(files_containing(&data, SECRET), Vec::<String>::new());

    // Copied without its key: refused, whether the key is missing or another.
    let copy = dir.path().join("copy");
    copy_database(&data, &copy);
    let missing = refused_start(&copy, &[]);
    assert!(
        missing.contains("node key") && missing.contains("missing"),
        "{missing}"
    );
    assert!(!copy.join("node.key").exists());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let other = other_key.to_string_lossy().into_owned();
    let wrong = refused_start(&copy, &["--node-key-file", &other]);
    assert!(wrong.contains("another node key"), "{wrong}");
    assert!(!wrong.contains(SECRET));

    // With its own key, the copy still has everything.
    let own_key = data.join("node.key").to_string_lossy().into_owned();
    let server = Server::start(&copy, &["--node-key-file", &own_key]);
    assert_function_sees_the_secret(&server);
}

#[test]
fn an_existing_data_directory_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("kv.db"), b"").unwrap();
    std::fs::set_permissions(data.join("kv.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&data, &[]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("kv.db")), 0o600);
    assert_eq!(mode(&data.join("isola.db")), 0o600);
    server.kill();
}
