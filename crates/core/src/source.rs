//! A function's files and which runtime runs them.
//!
//! A file is bytes: a module's source text (UTF-8) or a WebAssembly
//! binary. In JSON (uploads, stored deployments) a text file is a string,
//! a binary one `{"base64": "…"}`; the runtime is told by the entry file's
//! first bytes (`\0asm`) and, for Wasm, its version field (a core module
//! or a component).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which runtime runs a function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// JavaScript or TypeScript modules in V8.
    #[default]
    Js,
    /// A WebAssembly core module (a WASI preview 1 command).
    WasmModule,
    /// A WebAssembly component.
    WasmComponent,
}

impl RuntimeKind {
    /// The runtime for an entry file with these first bytes.
    pub fn detect(entry: &[u8]) -> Self {
        match entry {
            [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => Self::WasmModule,
            [0, b'a', b's', b'm', _, _, 1, 0, ..] => Self::WasmComponent,
            _ => Self::Js,
        }
    }

    /// Whether this is WebAssembly (a module or a component).
    pub fn is_wasm(self) -> bool {
        self != Self::Js
    }

    /// The kind as it appears on the wire, e.g. `wasm_module`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Js => "js",
            Self::WasmModule => "wasm_module",
            Self::WasmComponent => "wasm_component",
        }
    }
}

/// Serde for a file's bytes: a string when they are UTF-8, else
/// `{"base64": "…"}`; either is read.
pub mod content {
    use super::*;
    use base64::Engine;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Binary { base64: String },
    }

    /// Writes `bytes` as text or base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => Wire::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            }
            .serialize(serializer),
        }
    }

    /// Reads text or base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        match Wire::deserialize(deserializer)? {
            Wire::Text(text) => Ok(text.into_bytes()),
            Wire::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| serde::de::Error::custom(format!("invalid base64 file content: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_told_by_the_first_bytes() {
        assert_eq!(RuntimeKind::detect(b"export default 1"), RuntimeKind::Js);
        assert_eq!(
            RuntimeKind::detect(b"\0asm\x01\0\0\0rest"),
            RuntimeKind::WasmModule
        );
        assert_eq!(
            RuntimeKind::detect(b"\0asm\x0d\0\x01\0rest"),
            RuntimeKind::WasmComponent
        );
        assert_eq!(RuntimeKind::detect(b"\0as"), RuntimeKind::Js);
    }

    #[test]
    fn text_stays_text_and_binary_goes_base64() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct File {
            #[serde(with = "content")]
            code: Vec<u8>,
        }
        let text = File {
            code: b"let a = 1".to_vec(),
        };
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#"{"code":"let a = 1"}"#);
        let binary = File {
            code: vec![0, 0x61, 0xff],
        };
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"code":{"base64":"AGH/"}}"#);
        assert_eq!(serde_json::from_str::<File>(&json).unwrap(), binary);
        assert!(serde_json::from_str::<File>(r#"{"code":{"base64":"!"}}"#).is_err());
    }
}
