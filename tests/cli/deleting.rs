//! Deleting a function takes a confirmation (issue 18): a question on a
//! terminal, `--yes` elsewhere.

use crate::server::Server;
use crate::{stderr, stdout};

#[test]
fn deleting_a_function_asks_or_takes_yes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("kept");
    let refused = server.cli(&["functions", "delete", "kept"], "y\n");
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let listed = server.cli(&["functions", "list"], "");
    assert!(stdout(&listed).contains("kept"), "{}", stdout(&listed));
    let deleted = server.cli(&["functions", "delete", "kept", "--yes"], "");
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let listed = server.cli(&["functions", "list"], "");
    assert!(!stdout(&listed).contains("kept"), "{}", stdout(&listed));
}
