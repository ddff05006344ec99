//! Functions cannot see each other or the host.

use crate::harness::*;
use serde_json::json;

crate::cases!(
    globals_do_not_leak_between_functions,
    prototypes_do_not_leak_between_functions,
    no_deno_namespace_or_host_internals,
);

fn globals_do_not_leak_between_functions() {
    let writer =
        function("export default () => { globalThis.secret = 'from a'; return typeof secret }");
    let reader = function("export default () => typeof globalThis.secret");
    assert_eq!(json(&invoke(&writer, json!(null))), json!("string"));
    assert_eq!(json(&invoke(&reader, json!(null))), json!("undefined"));
}

fn prototypes_do_not_leak_between_functions() {
    let writer = function("export default () => { Array.prototype.evil = 1; Object.prototype.polluted = true; JSON.stringify = () => 'x'; return [].evil }");
    let reader =
        function("export default () => ({ evil: typeof [].evil, polluted: typeof ({}).polluted })");
    assert_eq!(json(&invoke(&writer, json!(null))), json!(1));
    assert_eq!(
        json(&invoke(&reader, json!(null))),
        json!({ "evil": "undefined", "polluted": "undefined" })
    );
}

fn no_deno_namespace_or_host_internals() {
    let source = function(
        "export default () => [typeof Deno, typeof __bootstrap, typeof __isolaHost, typeof globalThis.Deno?.core, typeof require, typeof process]",
    );
    assert_eq!(
        json(&invoke(&source, json!(null))),
        json!([
            "undefined",
            "undefined",
            "undefined",
            "undefined",
            "undefined",
            "undefined"
        ])
    );
}
