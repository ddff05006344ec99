//! `env.KV`: per-function storage with versions and atomic check-and-set.

use crate::harness::*;
use isola_core::{FunctionSource, Invocation, InvocationInput, InvocationOutput};
use isola_runtime_js::{Executor, ExecutorConfig};
use serde_json::json;
use std::sync::{Arc, OnceLock};

crate::cases!(
    kv_get_put_delete_list,
    kv_atomic_conflict_under_concurrent_invocations_loses_no_update,
    kv_namespaces_are_per_function,
    kv_limits_are_clear_errors,
    kv_writes_have_a_byte_budget_per_invocation,
    kv_commits_are_bounded,
    no_binding_no_kv,
);

fn kv_executor() -> &'static Executor {
    static EXECUTOR: OnceLock<(tempfile::TempDir, Executor)> = OnceLock::new();
    &EXECUTOR
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store =
                isola_kv::SqliteKv::open(&dir.path().join("kv.db"), isola_kv::KvLimits::default())
                    .unwrap();
            let executor = Executor::new(ExecutorConfig {
                workers: 2,
                kv: Some(Arc::new(store)),
                ..Default::default()
            });
            (dir, executor)
        })
        .1
}

fn kv_function(name: &str, code: &str) -> Arc<FunctionSource> {
    let mut source = (*function(code)).clone();
    source.name = name.to_string();
    source.kv_binding = Some("KV".into());
    Arc::new(source)
}

fn run(source: &Arc<FunctionSource>, payload: serde_json::Value) -> serde_json::Value {
    json(&invoke_on(kv_executor(), source, payload))
}

fn kv_get_put_delete_list() {
    let source = kv_function(
        "kv-basics",
        r#"export default async (p, { env }) => {
            await env.KV.put("user:1", "ada");
            await env.KV.put("user:2", JSON.stringify({ n: 2 }));
            await env.KV.put("bytes", new Uint8Array([1, 2, 3]));
            await env.KV.put("temp", "x", { expirationTtl: 3600 });
            const text = await env.KV.get("user:1");
            const obj = await env.KV.get("user:2", { type: "json" });
            const buf = new Uint8Array(await env.KV.get("bytes", "arrayBuffer"));
            const missing = await env.KV.get("nope");
            const page = await env.KV.list({ prefix: "user:", limit: 1 });
            const next = await env.KV.list({ prefix: "user:", cursor: page.cursor });
            await env.KV.delete("user:1");
            return { text, obj, buf: [...buf], missing, first: page.keys.map(k => k.name), complete: page.list_complete,
                     rest: next.keys.map(k => k.name), restComplete: next.list_complete, gone: await env.KV.get("user:1") };
        }"#,
    );
    assert_eq!(
        run(&source, json!(null)),
        json!({ "text": "ada", "obj": { "n": 2 }, "buf": [1, 2, 3], "missing": null, "first": ["user:1"], "complete": false,
                "rest": ["user:2"], "restComplete": true, "gone": null })
    );
}

fn kv_atomic_conflict_under_concurrent_invocations_loses_no_update() {
    let source = kv_function(
        "kv-counter",
        r#"export default async (p, { env }) => {
            for (let attempt = 0; attempt < 200; attempt++) {
                const { value, version } = await env.KV.getWithVersion("count");
                const n = value === null ? 0 : Number(value);
                const result = await env.KV.atomic().check("count", version).set("count", String(n + 1)).commit();
                if (result.ok) return { attempts: attempt + 1 };
                await new Promise(r => setTimeout(r, Math.random() * 3));
            }
            throw new Error("gave up");
        }"#,
    );
    let outcomes = block_on(futures::future::join_all((0..20).map(|i| {
        kv_executor().run(Invocation {
            id: format!("c{i}"),
            function: source.clone(),
            input: InvocationInput::Json(json!(null)),
        })
    })));
    for outcome in &outcomes {
        assert!(
            matches!(outcome.result, Ok(InvocationOutput::Json(_))),
            "{:?}",
            outcome.result
        );
    }
    let read = kv_function(
        "kv-counter",
        "export default async (p, { env }) => env.KV.get('count')",
    );
    assert_eq!(run(&read, json!(null)), json!("20"));
}

fn kv_namespaces_are_per_function() {
    let writer = kv_function("kv-tenant-a", "export default async (p, { env }) => { await env.KV.put('secret', 'a-only'); return true }");
    let reader = kv_function("kv-tenant-b", "export default async (p, { env }) => [await env.KV.get('secret'), (await env.KV.list()).keys.length]");
    assert_eq!(run(&writer, json!(null)), json!(true));
    assert_eq!(run(&reader, json!(null)), json!([null, 0]));
}

fn kv_limits_are_clear_errors() {
    let source = kv_function(
        "kv-limits",
        r#"export default async (p, { env }) => {
            const errors = [];
            try { await env.KV.put("big", "x".repeat(2 * 1024 * 1024)); } catch (e) { errors.push(e.constructor.name + ": " + e.message); }
            try { await env.KV.put("k".repeat(600), "v"); } catch (e) { errors.push(e.constructor.name + ": " + e.message); }
            try { await env.KV.put("obj", { a: 1 }); } catch (e) { errors.push(e.constructor.name + ": " + e.message); }
            let ops = 0;
            try { for (;;) { await env.KV.get("x"); ops++; } } catch (e) { errors.push(e.message); }
            return { errors, ops };
        }"#,
    );
    let mut source = (*source).clone();
    source.limits.cpu_ms = 10_000;
    let value = run(&Arc::new(source), json!(null));
    let errors: Vec<String> = serde_json::from_value(value["errors"].clone()).unwrap();
    assert!(
        errors[0].starts_with("TypeError") && errors[0].contains("larger than the limit"),
        "{errors:?}"
    );
    assert!(errors[1].contains("longer than the limit"), "{errors:?}");
    assert!(
        errors[2].contains("KV values must be strings"),
        "{errors:?}"
    );
    assert!(errors[3].contains("KV operation limit"), "{errors:?}");
    assert!(value["ops"].as_u64().unwrap() < 1000, "{value}");
}

fn kv_writes_have_a_byte_budget_per_invocation() {
    let source = kv_function(
        "kv-write-budget",
        r#"export default async (p, { env }) => {
            const value = "x".repeat(1000 * 1000);
            let written = 0;
            try { for (;;) { await env.KV.put("big", value); written++; } }
            catch (e) { return { written, error: e.message }; }
        }"#,
    );
    let mut source = (*source).clone();
    source.limits.cpu_ms = 10_000;
    let source = Arc::new(source);
    let value = run(&source, json!(null));
    // 16 MiB of keys and values: 16 puts of a million bytes, not 17.
    assert_eq!(value["written"], 16, "{value}");
    assert!(
        value["error"].as_str().unwrap().contains("KV write limit"),
        "{value}"
    );
    // The next invocation has a fresh budget.
    assert_eq!(run(&source, json!(null))["written"], 16);
}

fn kv_commits_are_bounded() {
    let source = kv_function(
        "kv-bounded",
        r#"export default async (p, { env }) => {
            const errors = [];
            const big = "k".repeat(60_000);
            try { const op = env.KV.atomic(); for (let i = 0; i < 8000; i++) op.check(big, null); await op.commit(); } catch (e) { errors.push(e.message); }
            try { const op = env.KV.atomic(); for (let i = 0; i < 200; i++) op.check("k" + i, null); await op.commit(); } catch (e) { errors.push(e.message); }
            try { const op = env.KV.atomic(); const v = new Uint8Array(1 << 10); for (let i = 0; i < 300; i++) op.set("k" + i, v); await op.commit(); } catch (e) { errors.push(e.message); }
            try { const op = env.KV.atomic(); const v = new Uint8Array(1 << 20); for (let i = 0; i < 10; i++) op.set("k" + i, v); await op.commit(); } catch (e) { errors.push(e.message); }
            return errors;
        }"#,
    );
    let mut source = (*source).clone();
    source.limits.cpu_ms = 10_000;
    let errors: Vec<String> = serde_json::from_value(run(&Arc::new(source), json!(null))).unwrap();
    assert!(errors[0].contains("at most 512"), "{errors:?}");
    assert!(errors[1].contains("at most 128 checks"), "{errors:?}");
    assert!(errors[2].contains("at most 128 mutations"), "{errors:?}");
    assert!(errors[3].contains("bytes"), "{errors:?}");
}

fn no_binding_no_kv() {
    let source = function("export default (p, { env }) => typeof env.KV");
    assert_eq!(
        json(&invoke_on(kv_executor(), &source, json!(null))),
        json!("undefined")
    );
}
