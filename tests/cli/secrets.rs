//! Variables and secrets belong to the function: a redeploy keeps them,
//! and `isola secret` manages secrets without redeploying the code (issue
//! 18). Each change is a deployment, so a rollback brings back the
//! secrets of its time.

use crate::server::Server;
use crate::{stderr, stdout};

const SHOWS: &str =
    "export default { fetch(req, env) { return new Response(`${env.GREETING} ${env.API_KEY}`) } }";

#[test]
fn redeploys_keep_variables_and_secrets_and_secrets_change_without_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let module = dir.path().join("worker.js");
    std::fs::write(&module, SHOWS).unwrap();
    let module = module.to_str().unwrap();
    let ok = |out: &std::process::Output| {
        assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    };
    let seen = || {
        server
            .http()
            .get(format!("{}/fn/keeper/", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    ok(&server.cli(&["functions", "create", "--name", "keeper"], ""));
    // Secrets go with deployments: none to change before the first.
    let early = server.cli(&["secret", "put", "keeper", "API_KEY"], "x");
    assert!(!early.status.success());
    assert!(
        stderr(&early).contains("deploy it first"),
        "{}",
        stderr(&early)
    );

    let deploy = |extra: &[&str]| {
        let mut args = vec!["functions", "deploy", module, "--function", "keeper"];
        args.extend_from_slice(extra);
        ok(&server.cli(&args, ""));
    };
    deploy(&["--env", "GREETING=hi", "--secret", "API_KEY=first"]);
    assert_eq!(seen(), "hi first");
    // A plain redeploy keeps both.
    deploy(&[]);
    assert_eq!(seen(), "hi first");

    let listed = server.cli(&["secret", "list", "keeper"], "");
    ok(&listed);
    assert!(stdout(&listed).contains("API_KEY"), "{}", stdout(&listed));
    assert!(!stdout(&listed).contains("first"), "{}", stdout(&listed));

    ok(&server.cli(&["secret", "put", "keeper", "API_KEY"], "second\n"));
    assert_eq!(seen(), "hi second");
    // The deployment before holds the secret of its time.
    ok(&server.cli(&["functions", "rollback", "keeper"], ""));
    assert_eq!(seen(), "hi first");
    ok(&server.cli(&["secret", "put", "keeper", "API_KEY"], "third"));
    ok(&server.cli(&["secret", "delete", "keeper", "API_KEY"], ""));
    assert_eq!(seen(), "hi undefined");
    let missing = server.cli(&["secret", "delete", "keeper", "API_KEY"], "");
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no secret"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_projects_vars_are_all_its_variables_and_secrets_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let project = dir.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("main.js"),
        "export default { fetch(req, env) { return new Response(`${env.A} ${env.B} ${env.S}`) } }",
    )
    .unwrap();
    let toml = |vars: &str| {
        std::fs::write(
            project.join("isola.toml"),
            format!("name = \"proj\"\nmain = \"main.js\"\n\n[vars]\n{vars}"),
        )
        .unwrap();
    };
    let seen = || {
        let url = format!("{}/fn/proj/", server.url);
        server.http().get(url).send().unwrap().text().unwrap()
    };
    let project = project.to_str().unwrap();
    toml("A = \"1\"\nB = \"2\"\n");
    let out = server.cli(&["deploy", project, "--secret", "S=kept"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(seen(), "1 2 kept");
    // B taken out of the file goes; the secret stays.
    toml("A = \"1\"\n");
    let out = server.cli(&["deploy", project], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(seen(), "1 undefined kept");
}

#[test]
fn secret_changes_made_at_once_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("busy", SHOWS);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let server = &server;
            scope.spawn(move || {
                let response = server
                    .api(
                        reqwest::Method::PUT,
                        &format!("/v1/functions/busy/secrets/S{i}"),
                    )
                    .body(format!("v{i}"))
                    .send()
                    .unwrap();
                assert!(response.status().is_success());
            });
        }
    });
    let listed: serde_json::Value = server
        .api(reqwest::Method::GET, "/v1/functions/busy/secrets")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let names = listed["names"].as_array().unwrap();
    assert_eq!(names.len(), 8, "{listed}");
}
