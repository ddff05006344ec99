//! Project files: `isola.toml` next to the code names the function, its
//! entry module, limits, variables and KV binding; `isola functions deploy`
//! and `isola dev` read it.
//!
//! ```toml
//! name = "hello-world"
//! main = "src/index.ts"
//! kv_binding = "KV"
//!
//! [limits]
//! cpu_ms = 100
//!
//! [vars]
//! GREETING = "hi"
//! ```

use anyhow::{bail, Context};
use isola_core::{Limits, SourceFile};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file name of a project file.
pub const PROJECT_FILE: &str = "isola.toml";

/// An `isola.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The function's name.
    pub name: String,
    /// Entry module, relative to the project folder.
    pub main: String,
    /// Name of the function's KV namespace in `env`.
    pub kv_binding: Option<String>,
    /// Private addresses or CIDR ranges the function may fetch.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Limits; any may be left out (the defaults fill in).
    #[serde(default)]
    pub limits: Limits,
    /// Environment variables.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The folder holding the project file (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Project {
    /// Finds the project for `path`: `path` itself when it is an
    /// `isola.toml`, or the `isola.toml` inside the folder `path`.
    pub fn find(path: &Path) -> Option<PathBuf> {
        if path.is_file() && path.file_name().is_some_and(|n| n == PROJECT_FILE) {
            return Some(path.to_path_buf());
        }
        let inside = path.join(PROJECT_FILE);
        (path.is_dir() && inside.is_file()).then_some(inside)
    }

    /// The `isola.toml` of the current folder or the nearest folder above.
    pub fn nearest() -> Option<PathBuf> {
        let here = std::env::current_dir().ok()?;
        here.ancestors().find_map(Self::find)
    }

    /// Reads and checks a project file.
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut project: Project =
            toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
        project.dir = file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        project.main = project.main.trim_start_matches("./").to_string();
        if !project.dir.join(&project.main).is_file() {
            bail!(
                "{}: the main module {:?} does not exist",
                file.display(),
                project.main
            );
        }
        Ok(project)
    }

    /// The limits, defaults filled in.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every module under the project folder.
    pub fn files(&self) -> anyhow::Result<Vec<SourceFile>> {
        Ok(collect_files(&self.dir, Some(self.main.clone()))?.0)
    }
}

const MODULE_EXTENSIONS: &[&str] = &["js", "mjs", "ts", "mts", "json", "wasm"];

/// A module's bytes: WebAssembly as it is, anything else UTF-8 text.
fn read_module(file: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if !isola_core::RuntimeKind::detect(&bytes).is_wasm() {
        std::str::from_utf8(&bytes)
            .with_context(|| format!("{} is not valid UTF-8", file.display()))?;
    }
    Ok(bytes)
}

/// The files of a deployment and its entry: one file, or every module under
/// a folder (skipping hidden files and `node_modules`).
pub fn collect_files(
    path: &Path,
    entry: Option<String>,
) -> anyhow::Result<(Vec<SourceFile>, String)> {
    if path.is_file() {
        let name = path
            .file_name()
            .map_or("main.js".into(), |n| n.to_string_lossy().into_owned());
        return Ok((
            vec![SourceFile {
                path: name.clone(),
                code: read_module(path)?,
            }],
            name,
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let item = item?.path();
            let skipped = item
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.') || n == "node_modules");
            if skipped {
                continue;
            }
            if item.is_dir() {
                stack.push(item);
            } else if item
                .extension()
                .is_some_and(|e| MODULE_EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
            {
                let relative = item
                    .strip_prefix(path)?
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push(SourceFile {
                    path: relative,
                    code: read_module(&item)?,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let entry = entry
        .or_else(|| {
            [
                "main.js",
                "index.js",
                "main.ts",
                "index.ts",
                "main.mjs",
                "index.mjs",
                "main.wasm",
            ]
            .iter()
            .find(|e| files.iter().any(|f| f.path == **e))
            .map(|e| e.to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no entry module in {}: pass --entry", path.display()))?;
    if !files.iter().any(|f| f.path == entry) {
        bail!(
            "the entry module {entry:?} is not among the files of {}",
            path.display()
        );
    }
    Ok((files, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_file_names_everything_a_deploy_needs() {
        let dir = std::env::temp_dir().join(format!("isola-project-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/index.ts"), "export default () => 1").unwrap();
        std::fs::write(dir.join("src/util.js"), "export const x = 1").unwrap();
        std::fs::write(
            dir.join(PROJECT_FILE),
            "name = \"hello\"\nmain = \"./src/index.ts\"\nkv_binding = \"KV\"\n[limits]\ncpu_ms = 7\n[vars]\nA = \"b\"\n",
        )
        .unwrap();
        let project = Project::load(&Project::find(&dir).unwrap()).unwrap();
        assert_eq!(project.name, "hello");
        assert_eq!(project.main, "src/index.ts");
        assert_eq!(project.limits().cpu_ms, 7);
        assert_eq!(project.limits().memory_mb, Limits::default().memory_mb);
        assert_eq!(project.vars["A"], "b");
        let paths: Vec<_> = project
            .files()
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, ["src/index.ts", "src/util.js"]);
        std::fs::write(
            dir.join(PROJECT_FILE),
            "name = \"x\"\nmain = \"missing.js\"\n",
        )
        .unwrap();
        assert!(Project::load(&dir.join(PROJECT_FILE)).is_err());
        std::fs::write(
            dir.join(PROJECT_FILE),
            "name = \"x\"\nmain = \"src/index.ts\"\nunknown = 1\n",
        )
        .unwrap();
        assert!(Project::load(&dir.join(PROJECT_FILE)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
