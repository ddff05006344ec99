//! A small client of the management API, configured from flags, the
//! environment (`ISOLA_SERVER`, `ISOLA_TOKEN`) or the file `isola login`
//! writes.

use crate::config::Config;
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Server URL (default: from `isola login`, else http://127.0.0.1:8787).
    #[arg(long, global = true, env = "ISOLA_SERVER")]
    pub server: Option<String>,
    /// Admin token (default: from `isola login`).
    #[arg(long, global = true, env = "ISOLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An error the server answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ServerError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable error code.
    pub code: String,
    /// Message.
    pub message: String,
    /// The whole error body.
    pub body: Value,
}

/// The server could not be reached at all.
#[derive(Debug, thiserror::Error)]
#[error("the isola server at {base} is not reachable ({reason}): start one with `isola serve`, or point --server (or ISOLA_SERVER, or `isola login`) at yours")]
pub struct Unreachable {
    /// The server's URL.
    pub base: String,
    /// Why, in a few words.
    pub reason: String,
}

/// The API client.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client from flags, environment and config file.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let config = Config::load().unwrap_or_default();
        let base = args
            .server
            .clone()
            .or(config.server)
            .unwrap_or_else(|| "http://127.0.0.1:8787".into());
        // `127.0.0.1:8787` means `http://127.0.0.1:8787`.
        let base = if base.contains("://") {
            base
        } else {
            format!("http://{base}")
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: args.token.clone().or(config.token),
            http: reqwest::Client::builder().build()?,
        })
    }

    /// The server's URL, fit to print (no credentials).
    pub fn base(&self) -> String {
        shown(&self.base)
    }

    /// A request to `path` (starting with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and returns the response, or the server's error.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|error| {
            let reason = if error.is_connect() {
                "nothing answers there"
            } else if error.is_timeout() {
                "it did not answer in time"
            } else if error.is_builder() {
                "the address is not a URL"
            } else {
                "the connection failed"
            };
            Unreachable {
                base: shown(&self.base),
                reason: reason.into(),
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let mut message = body["error"]["message"]
            .as_str()
            .unwrap_or("the server refused the request")
            .to_string();
        if status == StatusCode::UNAUTHORIZED {
            // The server's words are for HTTP clients; a CLI user logs in.
            let said = message.split(':').next().unwrap_or_default().to_string();
            message = format!(
                "{said}: log in with `isola login --server {} --token <token>` (or set ISOLA_TOKEN)",
                shown(&self.base)
            );
        }
        Err(ServerError {
            status,
            code,
            message,
            body,
        }
        .into())
    }

    /// Sends a request and decodes its JSON body.
    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = self.send(request).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(response.json().await?)
    }
}

/// A server URL fit to print: without credentials in it (`user:pass@`).
fn shown(base: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(super::shown("http://u:p@host:1/x"), "http://host:1/x");
        assert_eq!(super::shown("http://host:1"), "http://host:1");
    }
}
