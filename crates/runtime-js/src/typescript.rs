//! TypeScript: `.ts` and `.mts` modules are transpiled to JavaScript with
//! deno_ast (types stripped, nothing type-checked) and an inline source map,
//! so errors and stack traces point at TypeScript lines. Results are cached
//! by source hash; a deploy transpiles once, when it is validated.

use deno_ast::{
    EmitOptions, MediaType, ParseParams, SourceMapOption, TranspileModuleOptions, TranspileOptions,
};
use isola_core::{ErrorCode, FunctionError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whether `path` is a TypeScript module.
pub fn is_typescript(path: &str) -> bool {
    path.ends_with(".ts") || path.ends_with(".mts")
}

/// Transpiled modules by source hash, bounded in entries.
#[derive(Default)]
pub struct TranspileCache {
    entries: Mutex<HashMap<u64, Arc<str>>>,
}

impl TranspileCache {
    const MAX_ENTRIES: usize = 4096;

    /// The JavaScript for `code` at `specifier`, transpiled on first use.
    pub fn get_or_transpile(
        &self,
        specifier: &str,
        code: &str,
        hash: u64,
    ) -> Result<Arc<str>, FunctionError> {
        if let Some(js) = self.entries.lock().unwrap().get(&hash) {
            return Ok(js.clone());
        }
        let js: Arc<str> = transpile(specifier, code)?.into();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, js.clone());
        Ok(js)
    }
}

/// Transpiles one TypeScript module to JavaScript with an inline source map.
pub fn transpile(specifier: &str, code: &str) -> Result<String, FunctionError> {
    let url = deno_ast::ModuleSpecifier::parse(specifier).map_err(|e| {
        FunctionError::new(
            ErrorCode::Internal,
            format!("bad specifier {specifier}: {e}"),
        )
    })?;
    let parsed = deno_ast::parse_module(ParseParams {
        specifier: url,
        text: code.into(),
        media_type: MediaType::TypeScript,
        capture_tokens: false,
        scope_analysis: false,
        maybe_syntax: None,
    })
    .map_err(|e| FunctionError::new(ErrorCode::SyntaxError, e.to_string()))?;
    let emitted = parsed
        .transpile(
            &TranspileOptions::default(),
            &TranspileModuleOptions::default(),
            &EmitOptions {
                source_map: SourceMapOption::Inline,
                ..Default::default()
            },
        )
        .map_err(|e| FunctionError::new(ErrorCode::SyntaxError, e.to_string()))?
        .into_source();
    Ok(emitted.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_stripped_and_a_source_map_kept() {
        let js = transpile("isola:///main.ts", "const n: number = 1;\nexport default (p: { name: string }): string => `hi ${p.name}`;\n").unwrap();
        assert!(!js.contains(": number"), "{js}");
        assert!(
            js.contains("sourceMappingURL=data:application/json;base64,"),
            "{js}"
        );
    }

    #[test]
    fn syntax_errors_name_the_typescript_line() {
        let error = transpile("isola:///main.ts", "const a: number = 1;\nlet = ;\n").unwrap_err();
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert!(error.message.contains("main.ts:2"), "{error:?}");
    }
}
