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
    heap_and_native_memory_share_one_limit,
    blobs_count_against_the_memory_limit,
    a_decompression_bomb_stops_at_the_memory_limit,
    webcrypto_work_is_bounded_and_charged_as_cpu,
    fetch_counts_decoded_bytes,
    fetch_counts_every_redirect,
    webcrypto_takes_only_bounded_algorithms,
    webcrypto_arguments_are_read_once,
    a_last_crypto_call_past_the_limit_fails_the_invocation,
    brotli_and_message_channels_are_absent,
    compressor_state_counts_against_the_memory_limit,
    streamed_response_chunks_are_bounded_in_bytes,
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

fn heap_and_native_memory_share_one_limit() {
    // About 20 MiB of heap and 24 MiB of buffers, each under the 32 MiB
    // limit alone, then work long enough for the watchdog to look.
    let code = |buffers: usize| {
        format!(
            "export default () => {{ const heap = []; for (let i = 0; i < 20 * 1024; i++) heap.push('x'.repeat(1000) + i); \
             const native = []; for (let i = 0; i < {buffers}; i++) native.push(new Uint8Array(1 << 20).fill(1)); \
             const until = Date.now() + 100; while (Date.now() < until); return heap.length + native.length }}"
        )
    };
    assert_fails(
        &function_with(&code(24), small_memory()),
        ErrorCode::MemoryLimit,
    );
    let within = function_with(&code(4), small_memory());
    assert_eq!(json(&invoke(&within, json!(null))), json!(20 * 1024 + 4));
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

fn crypto_message(code: &str) -> String {
    let source = function(&format!(
        "export default async () => {{ const key = await crypto.subtle.importKey('raw', new Uint8Array(16), 'PBKDF2', false, ['deriveBits']); try {{ {code}; return 'ran' }} catch (e) {{ return e.name + ': ' + e.message }} }}"
    ));
    json(&invoke(&source, json!(null)))
        .as_str()
        .unwrap()
        .to_string()
}

fn webcrypto_takes_only_bounded_algorithms() {
    let argon = crypto_message("await crypto.subtle.deriveBits({ name: 'Argon2id', memory: 262144, passes: 1, parallelism: 1, nonce: new Uint8Array(16) }, key, 256)");
    assert!(argon.starts_with("NotSupportedError"), "{argon}");
    let long = crypto_message("await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: new Uint8Array(16), iterations: 1000 }, key, 1 << 20)");
    assert!(long.starts_with("NotSupportedError"), "{long}");
    let hmac = crypto_message("await crypto.subtle.deriveKey({ name: 'PBKDF2', hash: 'SHA-256', salt: new Uint8Array(16), iterations: 1000 }, key, { name: 'HMAC', hash: 'SHA-256', length: 1 << 20 }, false, ['sign'])");
    assert!(hmac.starts_with("NotSupportedError"), "{hmac}");
    let rsa = crypto_message("await crypto.subtle.generateKey({ name: 'RSA-PSS', modulusLength: 8192, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, false, ['sign'])");
    assert!(rsa.starts_with("NotSupportedError"), "{rsa}");
}

fn webcrypto_arguments_are_read_once() {
    // A number that is small when checked and large when used.
    let limits = Limits {
        cpu_ms: 2_000,
        ..Limits::default()
    };
    let source = function_with(
        "export default async () => { const key = await crypto.subtle.importKey('raw', new Uint8Array(16), 'PBKDF2', false, ['deriveBits']); let n = 0; const iterations = { valueOf() { return n++ === 0 ? 1 : 3_000_000 } }; await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: new Uint8Array(16), iterations }, key, 256); let m = 0; const name = { toString() { return m++ === 0 ? 'HKDF' : 'PBKDF2' } }; try { await crypto.subtle.deriveBits({ name, hash: 'SHA-256', salt: new Uint8Array(16), info: new Uint8Array(0), iterations: 3_000_000 }, key, 256) } catch (e) { return e.name } return 'ran' }",
        limits,
    );
    let outcome = invoke(&source, json!(null));
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(outcome.metrics.cpu_us < 1_000_000, "{:?}", outcome.metrics);
}

fn a_last_crypto_call_past_the_limit_fails_the_invocation() {
    let limits = Limits {
        cpu_ms: 5,
        ..Limits::default()
    };
    let source = function_with(
        "export default async () => { const key = await crypto.subtle.importKey('raw', new Uint8Array(16), 'PBKDF2', false, ['deriveBits']); await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-512', salt: new Uint8Array(16), iterations: 100000 }, key, 512); return 'derived' }",
        limits,
    );
    let outcome = invoke(&source, json!(null));
    assert_eq!(
        error(&outcome).code,
        ErrorCode::CpuLimit,
        "{:?}",
        outcome.metrics
    );
    assert_node_healthy();
}

fn brotli_and_message_channels_are_absent() {
    let source = function(
        "export default () => { let brotli; try { new DecompressionStream('brotli'); brotli = 'accepted' } catch (e) { brotli = e.name } return [brotli, typeof MessageChannel, typeof MessagePort] }",
    );
    assert_eq!(
        json(&invoke(&source, json!(null))),
        json!(["TypeError", "undefined", "undefined"])
    );
}

fn compressor_state_counts_against_the_memory_limit() {
    let source = function_with(
        "export default async () => { const keep = []; for (let i = 0; i < 2000; i++) { const c = new CompressionStream('gzip'); const w = c.writable.getWriter(); w.write(new Uint8Array(1)); keep.push(c, w); } return keep.length }",
        small_memory(),
    );
    assert_fails(&source, ErrorCode::MemoryLimit);
    assert_node_healthy();
}

fn streamed_response_chunks_are_bounded_in_bytes() {
    let source = function(
        "export default { fetch() { const big = new Uint8Array(1 << 20); return new Response(new ReadableStream({ start(c) { c.enqueue(big); c.close() } })) } }",
    );
    let outcome = invoke_http(&source, http_request("GET"));
    let Ok(isola_core::InvocationOutput::Http(response)) = outcome.result else {
        panic!("{:?}", outcome.result);
    };
    let mut rest = response.rest.take().expect("a streamed body");
    let (mut total, mut largest) = (response.body.len(), 0);
    while let Some(chunk) = block_on(rest.recv()) {
        let chunk = chunk.unwrap();
        total += chunk.len();
        largest = largest.max(chunk.len());
    }
    assert_eq!(total, 1 << 20);
    assert!(largest <= 64 * 1024, "a chunk of {largest} bytes");
}
