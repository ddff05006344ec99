//! What the owner meets on the command line (issue 18): deleting a function
//! takes a confirmation (a question on a terminal, `--yes` elsewhere); a
//! module that throws while it loads is the owner's error, with where.

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

#[test]
fn a_module_that_throws_while_loading_is_the_owners_error_with_where() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("thrower");
    let module = dir.path().join("toplevel.js");
    std::fs::write(
        &module,
        "const x = 1;\nthrow new Error('boom at top')\nexport default () => x\n",
    )
    .unwrap();
    let module = module.to_str().unwrap();
    let refused = server.cli(
        &["functions", "deploy", module, "--function", "thrower"],
        "",
    );
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(
        said.contains("boom at top") && said.contains("toplevel.js:2:7"),
        "{said}"
    );
    // Run locally, its stack names the file too.
    let local = crate::isola(&["invoke", module], "");
    assert_eq!(local.status.code(), Some(1));
    assert!(
        stderr(&local).contains("toplevel.js:2:7"),
        "{}",
        stderr(&local)
    );
}
