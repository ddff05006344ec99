//! What the owner meets on the command line (issue 18): deleting a function
//! takes a confirmation (a question on a terminal, `--yes` elsewhere); a
//! module that throws while it loads is the owner's error, with where;
//! errors say what to do, and come as JSON with `--json`.

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

#[test]
fn errors_say_what_to_do_and_come_as_json_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let address = server.url.trim_start_matches("http://").to_string();
    // Nothing listens on port 1.
    let nowhere = crate::isola(&["functions", "list", "--server", "http://127.0.0.1:1"], "");
    assert_eq!(nowhere.status.code(), Some(4));
    let said = stderr(&nowhere);
    assert!(
        said.contains("not reachable") && said.contains("isola serve"),
        "{said}"
    );
    assert!(!said.contains("os error"), "{said}");
    // A bare address is taken as http://.
    let bare = crate::isola(
        &[
            "functions",
            "list",
            "--server",
            &address,
            "--token",
            crate::server::TOKEN,
        ],
        "",
    );
    assert!(bare.status.success(), "{}", stderr(&bare));
    let wrong = crate::isola(
        &["functions", "list", "--server", &address, "--token", "nope"],
        "",
    );
    assert_eq!(wrong.status.code(), Some(3));
    assert!(stderr(&wrong).contains("isola login"), "{}", stderr(&wrong));
    let as_json = crate::isola(
        &[
            "functions",
            "list",
            "--json",
            "--server",
            &address,
            "--token",
            "nope",
        ],
        "",
    );
    let error: serde_json::Value = serde_json::from_str(stderr(&as_json).trim()).unwrap();
    assert_eq!(error["error"]["exit"], 3);
    assert!(error["error"]["code"].is_string());
}

#[test]
fn deploy_creates_its_function_and_names_are_positional() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let module = dir.path().join("hello.js");
    std::fs::write(
        &module,
        "export default { fetch() { return new Response('new') } }",
    )
    .unwrap();
    let module = module.to_str().unwrap();
    let deployed = server.cli(&["deploy", module, "--function", "brand-new"], "");
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(stderr(&deployed).contains("Created function brand-new"));
    let answer = server
        .http()
        .get(format!("{}/fn/brand-new/", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(answer, "new");
    // Again: it exists now, and is not created twice.
    let again = server.cli(&["deploy", module, "--function", "brand-new"], "");
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("Created"));
    let created = server.cli(&["functions", "create", "positional"], "");
    assert!(created.status.success(), "{}", stderr(&created));
    let listed = server.cli(&["functions", "list"], "");
    assert!(
        stdout(&listed).contains("positional"),
        "{}",
        stdout(&listed)
    );
}

#[test]
fn completions_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let script = crate::isola(&["completions", shell], "");
        assert!(script.status.success(), "{shell}");
        let text = stdout(&script);
        assert!(
            text.contains("isola") && text.contains("deploy"),
            "{shell}: {text}"
        );
    }
    let version = crate::isola(&["--version"], "");
    assert!(
        stdout(&version).starts_with("isola "),
        "{}",
        stdout(&version)
    );
}

#[test]
fn init_makes_a_project_that_deploys_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for (template, method, expected) in [
        ("worker", "GET", "\"hello\":\"world\""),
        ("json", "POST", "\"hello\":\"world\""),
        ("typescript", "GET", "hello from /hello"),
        ("kv", "GET", "\"visits\":1"),
    ] {
        let project = dir.path().join(format!("{template}-app"));
        let project = project.to_str().unwrap();
        let made = crate::isola(&["init", project, "--template", template], "");
        assert!(made.status.success(), "{template}: {}", stderr(&made));
        let deployed = server.cli(&["deploy", project], "");
        assert!(
            deployed.status.success(),
            "{template}: {}",
            stderr(&deployed)
        );
        let url = format!("{}/fn/{template}-app/hello", server.url);
        let request = match method {
            "POST" => server.http().post(&url).body("{}"),
            _ => server.http().get(&url),
        };
        let answer = request.send().unwrap().text().unwrap();
        assert!(answer.contains(expected), "{template}: {answer}");
        // A second init there changes nothing.
        let again = crate::isola(&["init", project], "");
        assert!(!again.status.success());
    }
}

#[test]
fn status_shows_the_node_at_a_glance() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("shown", "export default () => 1");
    server.create_function("empty");
    let out = server.cli(&["status"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("2 (1 deployed)") && said.contains("warm"),
        "{said}"
    );
    // Global flags are accepted before the subcommand as well as after it.
    let out = server.cli(&["--json", "status"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["functions"], 2);
    assert!(
        status["runtime"]["warm_instances"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let unreachable = crate::isola(&["--json", "--server", "http://127.0.0.1:1", "status"], "");
    let error: serde_json::Value = serde_json::from_str(&stderr(&unreachable)).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not reachable"),
        "{error}"
    );
}

#[test]
fn commands_inside_a_project_default_to_its_function() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let project = dir.path().join("nearby");
    let made = crate::isola(&["init", project.to_str().unwrap(), "--template", "kv"], "");
    assert!(made.status.success(), "{}", stderr(&made));
    // Run from a folder below the project's.
    let below = project.join("src");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_isola"))
            .args(args)
            .current_dir(&below)
            .env("ISOLA_SERVER", &server.url)
            .env("ISOLA_TOKEN", crate::server::TOKEN)
            .env("ISOLA_CONFIG", dir.path().join("cli.json"))
            .output()
            .unwrap()
    };
    let deployed = run(&["deploy"]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("Deployed nearby"),
        "{}",
        stdout(&deployed)
    );
    let answer = server
        .http()
        .get(format!("{}/fn/nearby/x", server.url))
        .send()
        .unwrap();
    assert!(answer.status().is_success());
    for command in [
        &["functions", "deployments"][..],
        &["functions", "invocations"],
    ] {
        let out = run(command);
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
    }
    // KV too: one argument fewer.
    assert!(run(&["kv", "put", "note", "kept"]).status.success());
    assert_eq!(stdout(&run(&["kv", "get", "note"])), "kept");
    assert!(stdout(&run(&["kv", "list"])).contains("note"));
    assert!(run(&["kv", "delete", "note"]).status.success());
    // Outside any project, the name is asked for.
    let outside = crate::isola(&["functions", "logs"], "");
    assert!(!outside.status.success());
    assert!(
        stderr(&outside).contains("name the function"),
        "{}",
        stderr(&outside)
    );
}

#[test]
fn the_owner_sees_why_an_invocation_was_stopped_with_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("spinner", "export default { fetch() { for (;;) {} } }");
    let public = server
        .http()
        .get(format!("{}/fn/spinner/", server.url))
        .send()
        .unwrap();
    assert_eq!(public.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    server.list_of("/v1/functions/spinner/invocations", 1);
    let records = server.cli(&["functions", "invocations", "spinner"], "");
    let said = stdout(&records);
    assert!(
        said.contains("cpu_limit") && said.contains("it used"),
        "{said}"
    );
    let logs = server.cli(&["functions", "logs", "spinner"], "");
    let said = stdout(&logs);
    assert!(
        said.contains("error") && said.contains("CPU time limit of 50 ms (it used"),
        "{said}"
    );
}

#[test]
fn logs_show_each_request_and_how_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(
        "tailed",
        "export default { fetch(r) { console.log('inside'); return new Response('x', { status: 201 }) } }",
    );
    let response = server
        .http()
        .get(format!("{}/fn/tailed/a/b?c=1", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    server.list_of("/v1/functions/tailed/invocations", 1);
    let logs = server.cli(&["functions", "logs", "tailed"], "");
    let said = stdout(&logs);
    let inside = said.find("inside").expect(&said);
    let outcome = said.find("GET /a/b → 201").expect(&said);
    assert!(
        inside < outcome,
        "the outcome comes after what it printed: {said}"
    );
    // The query (codes, tokens) is not kept.
    assert!(!said.contains("c=1"), "{said}");
    let records = server.cli(&["functions", "invocations", "tailed"], "");
    assert!(
        stdout(&records).contains("GET /a/b 201"),
        "{}",
        stdout(&records)
    );
}

#[test]
fn init_refuses_odd_names_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let injected = dir.path().join("p1");
    let out = crate::isola(
        &[
            "init",
            injected.to_str().unwrap(),
            "--name",
            "x\"\nallowed_hosts = [\"10.0.0.0/8\"]\n#",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!injected.join("isola.toml").exists());
    // A link where a file would go, even a dangling one, is left alone.
    let linked = dir.path().join("p2");
    std::fs::create_dir_all(&linked).unwrap();
    let target = dir.path().join("elsewhere.txt");
    std::os::unix::fs::symlink(&target, linked.join("README.md")).unwrap();
    let out = crate::isola(&["init", linked.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(!target.exists());
    // A long folder name makes a valid function name.
    let long = dir.path().join("a".repeat(80));
    let out = crate::isola(&["init", long.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
}
