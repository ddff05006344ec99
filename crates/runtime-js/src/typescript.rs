//! TypeScript: `.ts` and `.mts` modules are transpiled to JavaScript with
//! deno_ast (types stripped, nothing type-checked) and an inline source map,
//! so errors and stack traces point at TypeScript lines. Results are cached
//! by source hash; a deploy transpiles once, when it is validated.
//!
//! swc parses and transforms recursively, and a stack overflow aborts the
//! whole process. So untrusted TypeScript never reaches it in the node's
//! process: [`transpile`] first bounds how deeply the source nests
//! ([`check_nesting`], for a clear message in the common case), then runs
//! swc in a forked child (`contained.rs`) on a thread with a large stack;
//! should the scan be fooled, the child crashes, not the node.

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

/// Deepest nesting accepted in a TypeScript module (brackets, and chains
/// such as `!!!x` or `else if` that nest without them).
pub const MAX_NESTING: usize = 1000;

/// Stack of the thread swc runs on: far more than [`MAX_NESTING`] needs,
/// reserved but only touched as deep as a module really nests.
const TRANSPILE_STACK: usize = 512 << 20;

/// Time a transpile may take.
const TRANSPILE_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Transpiles one TypeScript module to JavaScript with an inline source map,
/// in a forked child on a large stack (see the module docs).
pub fn transpile(specifier: &str, code: &str) -> Result<String, FunctionError> {
    check_nesting(specifier, code)?;
    // One at a time: the child must not inherit a lock that another thread
    // held inside swc at the moment of the fork.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("isola-transpile".into())
            .stack_size(TRANSPILE_STACK)
            .spawn_scoped(scope, || transpile_in_child(specifier, code))
            .map_err(|e| FunctionError::new(ErrorCode::Internal, format!("transpiling: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(compiler_failed(specifier)))
    })
}

fn compiler_failed(specifier: &str) -> FunctionError {
    FunctionError::new(
        ErrorCode::SyntaxError,
        format!("{specifier}: the TypeScript compiler could not handle this module (does it nest too deeply?)"),
    )
}

/// Runs [`transpile_here`] in a forked child: its answer is a tag byte
/// (`J` JavaScript, `E` error code and message) and the text.
fn transpile_in_child(specifier: &str, code: &str) -> Result<String, FunctionError> {
    let answer =
        crate::contained::in_child(TRANSPILE_TIME, || match transpile_here(specifier, code) {
            Ok(js) => [b"J".as_slice(), js.as_bytes()].concat(),
            Err(error) => [
                b"E",
                error.code.as_str().as_bytes(),
                b"\n",
                error.message.as_bytes(),
            ]
            .concat(),
        });
    let answer = match answer {
        Ok(answer) => answer,
        Err(crate::contained::ChildFailed::TimedOut(_)) => {
            return Err(FunctionError::new(
                ErrorCode::SyntaxError,
                format!("{specifier}: transpiling took longer than {TRANSPILE_TIME:?}"),
            ))
        }
        Err(crate::contained::ChildFailed::Crashed) => return Err(compiler_failed(specifier)),
        Err(error) => {
            return Err(FunctionError::new(
                ErrorCode::Internal,
                format!("transpiling: {error}"),
            ))
        }
    };
    let text = String::from_utf8_lossy(answer.get(1..).unwrap_or_default()).into_owned();
    match answer.first() {
        Some(b'J') => Ok(text),
        Some(b'E') => {
            let (code, message) = text.split_once('\n').unwrap_or(("syntax_error", &text));
            let code = if code == ErrorCode::Internal.as_str() {
                ErrorCode::Internal
            } else {
                ErrorCode::SyntaxError
            };
            Err(FunctionError::new(code, message))
        }
        _ => Err(compiler_failed(specifier)),
    }
}

fn transpile_here(specifier: &str, code: &str) -> Result<String, FunctionError> {
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

/// Largest TypeScript module accepted, in bytes (larger code is bundled to
/// JavaScript first): nesting that [`check_nesting`] cannot see, such as a
/// binary chain spread over lines, costs at least three bytes per level, so
/// this bounds it too.
pub const MAX_MODULE_BYTES: usize = 1 << 20;

/// Refuses a module that nests deeper than [`MAX_NESTING`] or is larger than
/// [`MAX_MODULE_BYTES`], before any parser sees it.
///
/// The depth is estimated from a light scan (strings, template literals,
/// comments and most regular expressions skipped): open brackets, plus
/// operators and `else`/`?`/`=>` chained on one line, which nest the syntax
/// tree without brackets.
pub fn check_nesting(specifier: &str, code: &str) -> Result<(), FunctionError> {
    let refuse = |what: String| {
        Err(FunctionError::new(
            ErrorCode::SyntaxError,
            format!("{specifier}: {what}"),
        ))
    };
    if code.len() > MAX_MODULE_BYTES {
        return refuse(format!(
            "TypeScript modules may be at most {} KiB: bundle larger code to JavaScript",
            MAX_MODULE_BYTES >> 10
        ));
    }
    let (depth, line) = nesting_depth(code.as_bytes());
    if depth > MAX_NESTING {
        return refuse(format!(
            "line {line}: the code nests more than {MAX_NESTING} levels deep"
        ));
    }
    Ok(())
}

/// What the scanner is inside of.
#[derive(Clone, Copy, PartialEq)]
enum Frame {
    /// Code within a bracket (or the top level).
    Code,
    /// The `${ ... }` of a template literal.
    TemplateExpression,
}

/// The deepest nesting found and the line it was found on (see
/// [`check_nesting`]).
fn nesting_depth(code: &[u8]) -> (usize, usize) {
    let mut frames = vec![Frame::Code];
    let (mut chain, mut deepest, mut at_line, mut line) = (0usize, 0usize, 1usize, 1usize);
    let mut previous = b';'; // last significant byte, for regex detection
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        i += 1;
        match c {
            b'\n' => {
                line += 1;
                chain = 0;
                continue;
            }
            b' ' | b'\t' | b'\r' => continue,
            b'/' if code.get(i) == Some(&b'/') => {
                while i < code.len() && code[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if code.get(i) == Some(&b'*') => {
                i = skip_block_comment(code, i + 1, &mut line);
                continue;
            }
            b'/' if starts_expression(previous) => i = skip_quoted(code, i, b'/', &mut line),
            b'"' | b'\'' => i = skip_quoted(code, i, c, &mut line),
            b'`' => {
                i = skip_template(code, i, &mut line);
                if code.get(i.wrapping_sub(1)) == Some(&b'{') {
                    frames.push(Frame::TemplateExpression);
                }
            }
            b'(' | b'[' | b'{' => frames.push(Frame::Code),
            b')' | b']' => {
                frames.pop();
                chain = 0;
            }
            b'}' => {
                if frames.pop() == Some(Frame::TemplateExpression) {
                    // Back in the template's text, until its end or next `${`.
                    i = skip_template(code, i, &mut line);
                    if code.get(i.wrapping_sub(1)) == Some(&b'{') {
                        frames.push(Frame::TemplateExpression);
                    }
                }
                chain = 0;
            }
            b';' | b',' => chain = 0,
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i - 1;
                while i < code.len()
                    && (code[i].is_ascii_alphanumeric()
                        || matches!(code[i], b'_' | b'$')
                        || code[i] >= 0x80)
                {
                    i += 1;
                }
                if matches!(
                    &code[start..i],
                    b"else"
                        | b"if"
                        | b"new"
                        | b"typeof"
                        | b"void"
                        | b"await"
                        | b"delete"
                        | b"yield"
                        | b"return"
                        | b"in"
                        | b"instanceof"
                        | b"keyof"
                ) {
                    chain += 1;
                }
            }
            _ => chain += 1, // an operator character
        }
        frames.is_empty().then(|| frames.push(Frame::Code));
        let depth = frames.len() + chain;
        if depth > deepest {
            (deepest, at_line) = (depth, line);
        }
        previous = code[i - 1];
    }
    (deepest, at_line)
}

/// Whether a `/` after `previous` starts a regular expression.
fn starts_expression(previous: u8) -> bool {
    matches!(
        previous,
        b'(' | b','
            | b'='
            | b':'
            | b'['
            | b'!'
            | b'&'
            | b'|'
            | b'?'
            | b'{'
            | b'}'
            | b';'
            | b'+'
            | b'-'
            | b'*'
            | b'%'
            | b'<'
            | b'>'
            | b'~'
            | b'^'
    )
}

/// Skips a string or regular expression from after its opening `quote`.
fn skip_quoted(code: &[u8], mut i: usize, quote: u8, line: &mut usize) -> usize {
    let mut class = false; // inside a regex character class
    while i < code.len() {
        match code[i] {
            b'\\' => i += 1,
            b'\n' => {
                *line += 1;
                return i + 1; // unterminated: the parser will say so
            }
            b'[' if quote == b'/' => class = true,
            b']' if quote == b'/' => class = false,
            c if c == quote && !class => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Skips template text from `i` to just after its closing backtick or the
/// `{` of a `${`.
fn skip_template(code: &[u8], mut i: usize, line: &mut usize) -> usize {
    while i < code.len() {
        match code[i] {
            b'\\' => i += 1,
            b'\n' => *line += 1,
            b'`' => return i + 1,
            b'$' if code.get(i + 1) == Some(&b'{') => return i + 2,
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_block_comment(code: &[u8], mut i: usize, line: &mut usize) -> usize {
    while i < code.len() {
        if code[i] == b'\n' {
            *line += 1;
        }
        if code[i] == b'*' && code.get(i + 1) == Some(&b'/') {
            return i + 2;
        }
        i += 1;
    }
    i
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
    fn ordinary_code_nests_shallowly() {
        let code = "// a (comment [\nconst re = /[(]+/g; const s = \"((((\";\nconst t = `a ${ `b ${ (1 + 2) }` } (`;\nif (a) { b(c[d]) } else if (e) { f() }\nexport default (p: { name: string }): string => `hi ${p.name}`;\n";
        let (depth, _) = nesting_depth(code.as_bytes());
        assert!(depth < 20, "{depth}");
        assert!(transpile("isola:///main.ts", code).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let cases = [
            format!(
                "export default () => {}1{};",
                "(".repeat(5000),
                ")".repeat(5000)
            ),
            format!("export default () => {}1;", "!".repeat(5000)),
            format!("export default () => {}1;", "1+".repeat(5000)),
            format!("export default () => {}1;", "a?b:".repeat(5000)),
            format!(
                "export default () => {}1{};",
                "[".repeat(3000),
                "]".repeat(3000)
            ),
            format!("const x = {}1{};", "`${".repeat(3000), "}`".repeat(3000)),
        ];
        for code in cases {
            let error = transpile("isola:///main.ts", &code).unwrap_err();
            assert_eq!(error.code, ErrorCode::SyntaxError);
            assert!(error.message.contains("nests more than"), "{error:?}");
        }
    }

    #[test]
    fn nesting_that_fools_the_scan_crashes_a_child_not_the_node() {
        // `{} / (` reads to the scan as a regular expression, to swc as a
        // division: the scan sees no nesting, swc overflows its stack.
        let code = format!(
            "const a: any = {{}} / {}1{} / 1;\nexport default () => 1;\n",
            "(".repeat(300_000),
            ")".repeat(300_000)
        );
        let error = transpile("isola:///main.ts", &code).unwrap_err();
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert!(error.message.contains("could not handle"), "{error:?}");
    }

    #[test]
    fn huge_modules_are_refused() {
        let code = "let a = 1;\n".repeat(MAX_MODULE_BYTES / 10);
        let error = transpile("isola:///main.ts", &code).unwrap_err();
        assert!(error.message.contains("bundle"), "{error:?}");
    }

    #[test]
    fn syntax_errors_name_the_typescript_line() {
        let error = transpile("isola:///main.ts", "const a: number = 1;\nlet = ;\n").unwrap_err();
        assert_eq!(error.code, ErrorCode::SyntaxError);
        assert!(error.message.contains("main.ts:2"), "{error:?}");
    }
}
