//! Bearer-token authentication of the management API and of `/metrics`. The
//! node keeps only SHA-256 hashes of its tokens. `/metrics` also accepts an
//! optional metrics token, which opens nothing else.

use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The settings key of the admin token's hash.
pub const TOKEN_HASH_KEY: &str = "admin_token_sha256";

/// A new random admin token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("isola_{}", hex::encode(bytes))
}

/// The stored form of a token: its SHA-256, in lowercase hex.
pub fn hash_token(token: &str) -> String {
    // Written in one go (hex::encode goes character by character, which
    // showed in a profile of the owner's invoke route).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = Vec::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.extend_from_slice(&[
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 15)],
        ]);
    }
    String::from_utf8(hex).expect("hex digits are ASCII")
}

/// Compares in constant time.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The bearer token of a request, if it sent one.
fn presented(request: &Request) -> Result<&str, ApiError> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token: send 'Authorization: Bearer <token>'",
            )
        })
}

fn invalid_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token")
}

/// Middleware: refuses requests without the admin token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !same(&hash_token(presented(&request)?), &state.config.token_hash) {
        return Err(invalid_token());
    }
    Ok(next.run(request).await)
}

/// Middleware of `/metrics`: the admin token or the metrics token.
pub async fn require_metrics_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let hash = hash_token(presented(&request)?);
    let metrics_token = state.config.metrics_token_hash.as_deref();
    let admitted =
        same(&hash, &state.config.token_hash) || metrics_token.is_some_and(|m| same(&hash, m));
    if !admitted {
        return Err(invalid_token());
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_in_lowercase_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("isola_") && a.len() == 6 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert!(same(&hash_token(&a), &hash_token(&a)));
        assert!(!same(&hash_token(&a), &hash_token(&b)));
    }
}
