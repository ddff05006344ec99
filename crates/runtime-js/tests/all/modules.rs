//! Loading modules: syntax and link errors, imports, default exports.

use crate::harness::*;
use isola_core::{ErrorCode, FunctionSource, SourceFile};
use serde_json::json;
use std::sync::Arc;

crate::cases!(
    syntax_error_is_reported_with_its_location,
    missing_default_export_is_invalid_function,
    default_export_of_wrong_type_is_invalid_function,
    relative_imports_resolve_inside_the_function,
    missing_import_is_a_link_error,
    remote_imports_are_refused,
    top_level_throw_is_an_uncaught_exception,
    compiled_modules_are_cached,
    prepare_validates_and_warms_a_function,
    typescript_modules_run_with_typescript_line_numbers,
);

fn typescript_modules_run_with_typescript_line_numbers() {
    let source = multi_file(&[
        ("main.ts", "import { greet } from './lib/greet.ts';\ninterface Payload { name: string }\nexport default (p: Payload): string => greet(p.name);\n"),
        ("lib/greet.ts", "type Name = string;\nenum Mood { Happy = 'happy' }\nexport function greet(name: Name): string {\n  if (name === 'boom') {\n    throw new Error(`bad name ${Mood.Happy}`);\n  }\n  return `hello ${name}`;\n}\n"),
    ]);
    let mut source = (*source).clone();
    source.entry = "main.ts".into();
    let source = Arc::new(source);
    assert_eq!(
        json(&invoke(&source, json!({ "name": "ts" }))),
        json!("hello ts")
    );
    let outcome = invoke(&source, json!({ "name": "boom" }));
    let error = error(&outcome);
    let stack = error.stack.unwrap_or_default();
    assert!(
        stack.contains("isola:///lib/greet.ts:5:"),
        "stack not mapped to TypeScript lines: {stack}"
    );

    let mut broken = (*multi_file(&[(
        "main.ts",
        "const a: number = 1;\nlet = ;\nexport default () => a;\n",
    )]))
    .clone();
    broken.entry = "main.ts".into();
    let error = assert_fails(&Arc::new(broken), ErrorCode::SyntaxError);
    assert!(error.message.contains("main.ts:2"), "{error:?}");
}

fn prepare_validates_and_warms_a_function() {
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    let broken = function("export default () => {\n  return (;\n}");
    let error = block_on(executor.prepare_function(broken)).unwrap_err();
    assert_eq!(error.code, ErrorCode::SyntaxError);
    assert!(error.message.contains("main.js:2"), "{error:?}");
    let good = function("export default () => 'ready'");
    block_on(executor.prepare_function(good.clone())).unwrap();
    let outcome = invoke_on(&executor, &good, json!(null));
    assert!(
        !outcome.metrics.cold_start,
        "prepared function started cold"
    );
    assert_eq!(json(&outcome), json!("ready"));
}

fn compiled_modules_are_cached() {
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    assert_eq!(executor.cached_modules(), 0);
    let source = function("export default () => 'cached'");
    assert_eq!(
        json(&invoke_on(&executor, &source, json!(null))),
        json!("cached")
    );
    assert_eq!(executor.cached_modules(), 1);
    // A cold start from the cache gives the same answer.
    isola_core::Invoker::evict(&executor, &source.id);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let outcome = invoke_on(&executor, &source, json!(null));
    assert!(outcome.metrics.cold_start);
    assert_eq!(json(&outcome), json!("cached"));
}

fn syntax_error_is_reported_with_its_location() {
    let error = assert_fails(
        &function("export default () => {\n  return 1 +;\n}"),
        ErrorCode::SyntaxError,
    );
    assert!(error.message.contains("Unexpected token"), "{error:?}");
    let location = format!(
        "{} {}",
        error.message,
        error.stack.clone().unwrap_or_default()
    );
    assert!(location.contains("main.js:2"), "no line number: {error:?}");
    assert_node_healthy();
}

fn missing_default_export_is_invalid_function() {
    let error = assert_fails(&function("export const x = 1"), ErrorCode::InvalidFunction);
    assert!(error.message.contains("default export"), "{error:?}");
}

fn default_export_of_wrong_type_is_invalid_function() {
    assert_fails(&function("export default 42"), ErrorCode::InvalidFunction);
    assert_fails(
        &function("export default { get() {} }"),
        ErrorCode::InvalidFunction,
    );
}

fn multi_file(files: &[(&str, &str)]) -> Arc<FunctionSource> {
    let base = function("");
    let mut source = (*base).clone();
    source.files = files
        .iter()
        .map(|(path, code)| SourceFile {
            path: path.to_string(),
            code: code.as_bytes().to_vec(),
        })
        .collect();
    Arc::new(source)
}

fn relative_imports_resolve_inside_the_function() {
    let source = multi_file(&[
        ("main.js", "import { twice } from './lib/math.js'; import data from './data.json' with { type: 'json' }; export default () => twice(data.n)"),
        ("lib/math.js", "export const twice = (n) => n * 2"),
        ("data.json", "{ \"n\": 21 }"),
    ]);
    assert_eq!(json(&invoke(&source, json!(null))), json!(42));
}

fn missing_import_is_a_link_error() {
    let source = multi_file(&[("main.js", "import './nope.js'; export default () => 1")]);
    let error = assert_fails(&source, ErrorCode::LinkError);
    assert!(error.message.contains("nope.js"), "{error:?}");
}

fn remote_imports_are_refused() {
    for import in [
        "https://deno.land/x/mod.ts",
        "node:fs",
        "ext:core/ops",
        "file:///etc/passwd",
    ] {
        let source = multi_file(&[(
            "main.js",
            &format!("import '{import}'; export default () => 1"),
        )]);
        let error = assert_fails(&source, ErrorCode::LinkError);
        assert!(error.message.contains("not allowed"), "{import}: {error:?}");
    }
    let dynamic =
        function("export default async () => { await import('https://example.com/x.js') }");
    let error = assert_fails(&dynamic, ErrorCode::UncaughtException);
    assert!(error.message.contains("not allowed"), "{error:?}");
}

fn top_level_throw_is_an_uncaught_exception() {
    let error = assert_fails(
        &function("throw new Error('at load'); export default () => 1"),
        ErrorCode::UncaughtException,
    );
    assert!(error.message.contains("at load"), "{error:?}");
}
