//! `isola invoke`: from stdin, from a file, with flags, and on errors.

use crate::{isola, stderr, stdout};
use serde_json::{json, Value};

fn write_module(code: &str) -> tempdir::Module {
    tempdir::Module::new(code)
}

/// A module file in a temporary directory, removed on drop.
mod tempdir {
    pub struct Module {
        dir: std::path::PathBuf,
        pub path: String,
    }

    impl Module {
        pub fn new(code: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "isola-cli-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("fn.js");
            std::fs::write(&path, code).unwrap();
            Self {
                path: path.to_string_lossy().into_owned(),
                dir,
            }
        }
    }

    impl Drop for Module {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn invoke_reads_the_module_from_stdin() {
    let output = isola(&["invoke"], r#"export default async ()=>({hello:"world"})"#);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "{\"hello\":\"world\"}\n");
}

#[test]
fn invoke_runs_a_file_with_a_payload_and_env() {
    let module = write_module("export default async (p, ctx) => { console.log('greeting', p.name); return { message: `hello ${p.name}`, region: ctx.env.REGION } }");
    let output = isola(
        &[
            "invoke",
            &module.path,
            "--payload",
            r#"{"name":"world"}"#,
            "--env",
            "REGION=eu",
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value, json!({ "message": "hello world", "region": "eu" }));
    assert!(
        stderr(&output).contains("greeting world"),
        "console output missing: {}",
        stderr(&output)
    );
}

#[test]
fn invoke_prints_a_workers_response() {
    let code = "export default { fetch: async (req) => new Response('got ' + (await req.json()).n, { status: 202, headers: { 'x-id': '7' } }) }";
    let output = isola(&["invoke", "--include", "--payload", r#"{"n":5}"#], code);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("HTTP 202\n"), "{text}");
    assert!(text.contains("x-id: 7\n"), "{text}");
    assert!(text.ends_with("\n\ngot 5"), "{text}");
}

fn error_of(output: &std::process::Output) -> Value {
    let text = stderr(output);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {text}"))
}

#[test]
fn function_errors_are_json_on_stderr_with_exit_code_1() {
    let output = isola(
        &["invoke"],
        "export default () => { throw new TypeError('bad input') }",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let error = error_of(&output);
    assert_eq!(error["code"], "uncaught_exception");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("TypeError: bad input"));
    assert!(error["stack"]
        .as_str()
        .unwrap()
        .contains("isola:///main.js"));
}

#[test]
fn limit_flags_are_enforced() {
    let output = isola(
        &["invoke", "--cpu-ms", "20"],
        "export default () => { for (;;) {} }",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(error_of(&output)["code"], "cpu_limit");

    let output = isola(
        &["invoke", "--memory-mb", "16", "--cpu-ms", "10000"],
        "export default () => { const a = []; for (;;) a.push(new Array(1e5).fill(0)) }",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(error_of(&output)["code"], "memory_limit");

    let output = isola(
        &["invoke", "--timeout-ms", "100"],
        "export default () => new Promise(r => setTimeout(r, 10000))",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(error_of(&output)["code"], "wall_timeout");
}

#[test]
fn syntax_errors_name_the_line() {
    let output = isola(&["invoke"], "export default () => {\n  let = ;\n}");
    assert_eq!(output.status.code(), Some(1));
    let error = error_of(&output);
    assert_eq!(error["code"], "syntax_error");
    assert!(
        error["message"].as_str().unwrap().contains("main.js:2"),
        "{error}"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let output = isola(
        &["invoke", "--payload", "{not json"],
        "export default () => 1",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--payload is not valid JSON"));

    let output = isola(&["invoke"], "   ");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("empty"));

    let output = isola(&["invoke", "/nonexistent/fn.js"], "");
    assert_eq!(output.status.code(), Some(2));

    let output = isola(&["invoke", "--memory-mb", "1"], "export default () => 1");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("memory_mb"));
}

#[test]
fn invoke_prints_a_streamed_body() {
    let code = "export default { fetch: () => new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('a')); c.enqueue(new TextEncoder().encode('b')); c.close(); } })) }";
    let output = isola(&["invoke"], code);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ab");
}
