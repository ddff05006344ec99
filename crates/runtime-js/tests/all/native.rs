//! Resources spent outside the isolate's own heap and thread (issue 11):
//! native buffers, blobs, decompression, WebCrypto's worker threads and
//! outbound fetch are charged to the function, which fails alone.

use crate::harness::*;
use isola_core::{ErrorCode, FunctionSource, Limits};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::Arc;

crate::cases!(
    native_buffers_count_against_the_memory_limit,
    blobs_count_against_the_memory_limit,
    a_decompression_bomb_stops_at_the_memory_limit,
    webcrypto_work_is_bounded_and_charged_as_cpu,
    fetch_counts_decoded_bytes,
    fetch_counts_every_redirect,
);

fn small_memory() -> Limits {
    Limits {
        memory_mb: 32,
        cpu_ms: 10_000,
        ..Limits::default()
    }
}

fn native_buffers_count_against_the_memory_limit() {
    let source = function_with(
        "export default () => { const s = 'x'.repeat(4 << 20); const keep = []; for (let i = 0; i < 100; i++) keep.push(new TextEncoder().encode(s)); return keep.length }",
        small_memory(),
    );
    assert_fails(&source, ErrorCode::MemoryLimit);
    // Buffers that become garbage are not held against the function.
    let churn = function_with(
        "export default () => { const s = 'x'.repeat(4 << 20); let n = 0; for (let i = 0; i < 30; i++) n += new TextEncoder().encode(s).length; return n }",
        small_memory(),
    );
    assert_eq!(json(&invoke(&churn, json!(null))), json!(30 * (4 << 20)));
    assert_node_healthy();
}

fn blobs_count_against_the_memory_limit() {
    let source = function_with(
        "export default () => { const s = 'x'.repeat(4 << 20); const keep = []; for (let i = 0; i < 100; i++) keep.push(new Blob([s])); return keep.length }",
        small_memory(),
    );
    assert_fails(&source, ErrorCode::MemoryLimit);
    assert_node_healthy();
}

/// 64 MiB of zeros, gzipped (about 64 KB).
fn gzip_bomb() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn a_decompression_bomb_stops_at_the_memory_limit() {
    let bomb = base64(&gzip_bomb());
    let keep = function_with(
        "export default async (b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)); const chunks = []; for await (const c of new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))) chunks.push(c); return chunks.length }",
        small_memory(),
    );
    assert_fails_with(&keep, json!(bomb), ErrorCode::MemoryLimit);
    // Streaming through it without keeping it is fine.
    let count = function_with(
        "export default async (b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)); let n = 0; for await (const c of new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))) n += c.length; return n }",
        small_memory(),
    );
    assert_eq!(json(&invoke(&count, json!(bomb))), json!(64 << 20));
    assert_node_healthy();
}

fn assert_fails_with(source: &Arc<FunctionSource>, payload: serde_json::Value, code: ErrorCode) {
    let outcome = invoke(source, payload);
    assert_eq!(error(&outcome).code, code, "{:?}", outcome.result);
}

fn webcrypto_work_is_bounded_and_charged_as_cpu() {
    let derive = |iterations: u32, parallel: u32| {
        format!(
            "export default async () => {{ const key = await crypto.subtle.importKey('raw', new Uint8Array(16), 'PBKDF2', false, ['deriveBits']); const one = () => crypto.subtle.deriveBits({{ name: 'PBKDF2', hash: 'SHA-256', salt: new Uint8Array(16), iterations: {iterations} }}, key, 256); try {{ await Promise.all(Array.from({{ length: {parallel} }}, one)); return 'derived' }} catch (e) {{ return e.name + ': ' + e.message }} }}"
        )
    };
    let too_many = function(&derive(3_000_000, 1));
    let message = json(&invoke(&too_many, json!(null)));
    assert!(
        message.as_str().unwrap().starts_with("NotSupportedError"),
        "{message}"
    );
    let limits = Limits {
        cpu_ms: 50,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let parallel = function_with(&derive(100_000, 8), limits);
    let outcome = invoke(&parallel, json!(null));
    assert_eq!(
        error(&outcome).code,
        ErrorCode::CpuLimit,
        "{:?}",
        outcome.result
    );
    assert!(outcome.metrics.cpu_us > 50_000, "{:?}", outcome.metrics);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let one = function(&derive(1000, 1));
    assert_eq!(json(&invoke(&one, json!(null))), json!("derived"));
    assert_node_healthy();
}

/// A loopback server answering up to `count` connections with `reply(n)`.
fn server(count: usize, reply: impl Fn(usize) -> Vec<u8> + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for n in 0..count {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&reply(n));
        }
    });
    port
}

fn loopback(code: &str, limits: Limits) -> Arc<FunctionSource> {
    let mut source = (*function_with(code, limits)).clone();
    source.allowed_hosts = vec!["127.0.0.1".into()];
    Arc::new(source)
}

fn fetch_counts_decoded_bytes() {
    let body = gzip_bomb();
    let port = server(1, move |_| {
        let mut reply = format!("HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        reply
    });
    let code = format!("export default async () => {{ const r = await fetch('http://127.0.0.1:{port}/'); try {{ let n = 0; for await (const c of r.body) n += c.byteLength; return 'read ' + n }} catch (e) {{ return e.constructor.name + ': ' + e.message }} }}");
    let limits = Limits {
        max_subrequest_mb: 1,
        cpu_ms: 10_000,
        ..Limits::default()
    };
    let message = json(&invoke(&loopback(&code, limits), json!(null)));
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("TypeError: fetch response too large"),
        "{message}"
    );
}

fn fetch_counts_every_redirect() {
    let port = server(10, |n| {
        format!("HTTP/1.1 302 Found\r\nlocation: /hop{}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", n + 1).into_bytes()
    });
    let code = format!("export default async () => {{ try {{ await fetch('http://127.0.0.1:{port}/'); return 'followed' }} catch (e) {{ return e.constructor.name + ': ' + e.message }} }}");
    let limits = Limits {
        max_subrequests: 3,
        ..Limits::default()
    };
    let message = json(&invoke(&loopback(&code, limits), json!(null)));
    assert!(
        message.as_str().unwrap().contains("at most 3 subrequests"),
        "{message}"
    );
}
