//! Makes isola's V8 startup snapshot: deno_core, Deno's web extensions and
//! isola's bootstrap, evaluated once at build time. Scripts the bootstrap did
//! not evaluate are written to a table the runtime loads them from, so the
//! binary never reads JavaScript from cargo's registry at run time.

#[path = "src/extension.rs"]
#[allow(dead_code)]
mod extension;
#[path = "src/outbound.rs"]
#[allow(dead_code)]
mod outbound;
#[path = "src/websocket/mod.rs"]
#[allow(dead_code)]
mod websocket;

use deno_core::snapshot::{create_snapshot, CreateSnapshotOptions};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

fn build_permissions() -> deno_permissions::PermissionsContainer {
    deno_permissions::PermissionsContainer::new(
        Arc::new(deno_permissions::RuntimePermissionDescriptorParser::new(
            sys_traits::impls::RealSys,
        )),
        deno_permissions::Permissions::none_without_prompt(),
    )
}

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let output = create_snapshot(
        CreateSnapshotOptions {
            cargo_manifest_dir: env!("CARGO_MANIFEST_DIR"),
            startup_snapshot: None,
            skip_op_registration: false,
            extensions: extension::extensions(
                build_permissions(),
                deno_web::BlobStore::default_arc(),
            ),
            extension_transpiler: None,
            with_runtime_cb: None,
        },
        None,
    )
    .expect("creating the startup snapshot");
    std::fs::write(out_dir.join("ISOLA_SNAPSHOT.bin"), &output.output)
        .expect("writing the snapshot");

    // Lazy scripts the bootstrap did not evaluate: embed their sources.
    let consumed: std::collections::HashSet<_> =
        output.consumed_lazy_specifiers.iter().cloned().collect();
    let mut residual = Vec::new();
    for ext in extension::extensions(build_permissions(), deno_web::BlobStore::default_arc()) {
        for file in ext.lazy_loaded_js_files.iter() {
            if !consumed.contains(file.specifier) {
                let code = file.load().expect("reading a lazy script");
                residual.push((file.specifier.to_string(), code.as_str().to_string()));
            }
        }
    }
    residual.sort();
    let mut table = String::from("&[\n");
    for (specifier, code) in &residual {
        writeln!(table, "    ({specifier:?}, {code:?}),").unwrap();
    }
    table.push(']');
    std::fs::write(out_dir.join("residual_lazy_js.rs"), table).expect("writing the residual table");

    for path in output.files_loaded_during_snapshot {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=src/extension.rs");
    println!("cargo:rerun-if-changed=src/websocket");
    println!("cargo:rerun-if-changed=js");
}
