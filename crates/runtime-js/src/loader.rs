//! Loads a function's modules from its own files, with V8 code caching.
//!
//! Modules live at `isola:///<path>`; relative imports resolve among the
//! function's files only. Remote, `ext:`, `node:` and file-system imports
//! are refused. Compiled code is cached per source hash in a
//! [`CodeCache`] shared by all worker threads, so that the next cold start
//! of the same code skips parsing and compilation.

use crate::typescript::{is_typescript, TranspileCache};
use deno_core::error::ModuleLoaderError;
use deno_core::{
    ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, ResolutionKind, SourceCodeCacheInfo,
};
use deno_error::JsErrorBox;
use isola_core::FunctionSource;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The URL scheme of function modules.
pub const SCHEME: &str = "isola";

/// The URL of a file of a function.
pub fn module_url(path: &str) -> Result<ModuleSpecifier, String> {
    ModuleSpecifier::parse(&format!("{SCHEME}:///{}", path.trim_start_matches('/')))
        .map_err(|e| format!("invalid module path {path:?}: {e}"))
}

/// A stable 64-bit hash of a module's specifier and full source.
pub fn source_hash(specifier: &str, code: &str) -> u64 {
    // SipHash with fixed keys: stable within and across processes.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    specifier.hash(&mut hasher);
    code.hash(&mut hasher);
    hasher.finish()
}

/// V8 code caches by source hash, bounded in entries.
#[derive(Default)]
pub struct CodeCache {
    entries: Mutex<HashMap<u64, Arc<[u8]>>>,
}

impl CodeCache {
    const MAX_ENTRIES: usize = 4096;

    fn get(&self, hash: u64) -> Option<Arc<[u8]>> {
        self.entries.lock().unwrap().get(&hash).cloned()
    }

    fn put(&self, hash: u64, data: &[u8]) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, Arc::from(data));
    }

    /// Number of cached modules.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// The module loader of one function's isolate.
#[derive(Clone)]
pub struct FunctionLoader {
    source: Arc<FunctionSource>,
    cache: Arc<CodeCache>,
    transpiled: Arc<TranspileCache>,
}

impl FunctionLoader {
    /// A loader serving `source`'s files.
    pub fn new(
        source: Arc<FunctionSource>,
        cache: Arc<CodeCache>,
        transpiled: Arc<TranspileCache>,
    ) -> Self {
        Self {
            source,
            cache,
            transpiled,
        }
    }

    fn load_file(&self, specifier: &ModuleSpecifier) -> Result<ModuleSource, ModuleLoaderError> {
        if specifier.scheme() != SCHEME {
            return Err(JsErrorBox::type_error(format!(
                "Importing \"{specifier}\" is not allowed: functions may only import their own files"
            )));
        }
        // The URL's path is percent-encoded (`my%20lib.js`); files are named
        // as written (`my lib.js`).
        let encoded = specifier.path().trim_start_matches('/');
        let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
        let path = decoded.as_ref();
        let code = self.source.file(path).ok_or_else(|| {
            JsErrorBox::type_error(format!(
                "Module not found: \"{path}\" is not part of this function"
            ))
        })?;
        let hash = source_hash(specifier.as_str(), code);
        let code: Arc<str> = if is_typescript(path) {
            self.transpiled
                .get_or_transpile(specifier.as_str(), code, hash)
                .map_err(|e| JsErrorBox::new("SyntaxError", e.message))?
        } else {
            code.into()
        };
        let cached = self.cache.get(hash).map(|bytes| Cow::Owned(bytes.to_vec()));
        Ok(ModuleSource::new(
            module_type(path),
            ModuleSourceCode::String(code.to_string().into()),
            specifier,
            Some(SourceCodeCacheInfo { hash, data: cached }),
        ))
    }
}

fn module_type(path: &str) -> ModuleType {
    if path.ends_with(".json") {
        ModuleType::Json
    } else {
        ModuleType::JavaScript
    }
}

impl ModuleLoader for FunctionLoader {
    fn resolve(
        &self,
        specifier: &str,
        referrer: &str,
        _kind: ResolutionKind,
    ) -> Result<ModuleSpecifier, ModuleLoaderError> {
        let resolved =
            deno_core::resolve_import(specifier, referrer).map_err(JsErrorBox::from_err)?;
        if resolved.scheme() != SCHEME {
            return Err(JsErrorBox::type_error(format!(
                "Importing \"{specifier}\" is not allowed: functions may only import their own files"
            )));
        }
        Ok(resolved)
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        if !is_typescript(specifier.path()) {
            return ModuleLoadResponse::Sync(self.load_file(specifier));
        }
        // Transpiling forks and waits for a child: on a blocking thread, so
        // that the worker thread goes on serving meanwhile.
        let (loader, specifier) = (self.clone(), specifier.clone());
        ModuleLoadResponse::Async(Box::pin(async move {
            tokio::task::spawn_blocking(move || loader.load_file(&specifier))
                .await
                .map_err(|e| JsErrorBox::generic(format!("loading a module: {e}")))?
        }))
    }

    fn code_cache_ready(
        &self,
        _specifier: ModuleSpecifier,
        hash: u64,
        code_cache: &[u8],
    ) -> Pin<Box<dyn std::future::Future<Output = ()>>> {
        self.cache.put(hash, code_cache);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_imports_stay_inside_the_function() {
        let main = module_url("main.js").unwrap();
        assert_eq!(main.as_str(), "isola:///main.js");
        let lib = deno_core::resolve_import("./lib/util.js", main.as_str()).unwrap();
        assert_eq!(lib.as_str(), "isola:///lib/util.js");
        let up = deno_core::resolve_import("../../../etc/passwd", lib.as_str()).unwrap();
        assert_eq!(up.as_str(), "isola:///etc/passwd");
    }

    #[test]
    fn file_names_that_need_encoding_are_found() {
        let mut source = FunctionSource::single_module("id", "f", "");
        source.files = vec![isola_core::SourceFile {
            path: "my lib.js".into(),
            code: "export const x = 1;".into(),
        }];
        let loader = FunctionLoader::new(
            Arc::new(source),
            Arc::new(CodeCache::default()),
            Arc::new(TranspileCache::default()),
        );
        let main = module_url("main.js").unwrap();
        let lib = deno_core::resolve_import("./my lib.js", main.as_str()).unwrap();
        assert_eq!(lib.as_str(), "isola:///my%20lib.js");
        assert!(loader.load_file(&lib).is_ok());
    }

    #[test]
    fn hashes_depend_on_the_whole_source() {
        assert_ne!(source_hash("a", "let x = 1"), source_hash("a", "let x = 2"));
        assert_eq!(source_hash("a", "x"), source_hash("a", "x"));
    }
}
