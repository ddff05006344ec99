//! `isola kv get|put|delete|list <function> …`: a function's KV namespace.

use crate::client::{Client, ServerArgs};
use crate::output::{print_json, table};
use crate::ExitStatus;
use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use std::io::{IsTerminal, Read, Write};

/// `isola kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Print a key's value: `kv get [FUNCTION] KEY`.
    Get {
        /// [FUNCTION] KEY: the function (default: the project around the
        /// current folder) and the key.
        #[arg(num_args = 1..=2, required = true, value_name = "FUNCTION_KEY")]
        args: Vec<String>,
    },
    /// Set a key: `kv put [FUNCTION] KEY VALUE`; a VALUE of `-` is read
    /// from stdin.
    Put {
        /// [FUNCTION] KEY VALUE.
        #[arg(num_args = 2..=3, required = true, value_name = "FUNCTION_KEY_VALUE")]
        args: Vec<String>,
        /// Seconds until the key expires.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Remove a key: `kv delete [FUNCTION] KEY`.
    Delete {
        /// [FUNCTION] KEY.
        #[arg(num_args = 1..=2, required = true, value_name = "FUNCTION_KEY")]
        args: Vec<String>,
    },
    /// List keys: `kv list [FUNCTION]`.
    List {
        /// The function (default: the project around the current folder).
        function: Option<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

/// The function and the rest of `args`, which name it first only when
/// there are `full` of them (else it is the project's).
fn with_function(mut args: Vec<String>, full: usize) -> anyhow::Result<(String, Vec<String>)> {
    if args.len() == full {
        let function = args.remove(0);
        return Ok((function, args));
    }
    Ok((crate::commands::functions::function_name(None)?, args))
}

fn key_path(function: &str, key: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/v1/functions/{function}/kv/{encoded}")
}

/// Runs `isola kv …`.
pub async fn execute(args: KvArgs) -> anyhow::Result<ExitStatus> {
    let client = Client::new(&args.server)?;
    let json_output = args.server.json;
    match args.command {
        KvCommand::Get { args } => {
            let (function, rest) = with_function(args, 2)?;
            let key = &rest[0];
            let response = client
                .send(client.request(Method::GET, &key_path(&function, key)))
                .await?;
            let value = response.bytes().await?;
            let mut stdout = std::io::stdout();
            stdout.write_all(&value)?;
            // On a terminal, the prompt starts on a line of its own.
            if stdout.is_terminal() && !value.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
        }
        KvCommand::Put { args, ttl } => {
            let (function, mut rest) = with_function(args, 3)?;
            let value = rest.pop().unwrap_or_default();
            let key = rest.pop().unwrap_or_default();
            let body = if value == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading the value from stdin")?;
                bytes
            } else {
                value.into_bytes()
            };
            let mut path = key_path(&function, &key);
            if let Some(ttl) = ttl {
                path.push_str(&format!("?ttl={ttl}"));
            }
            let stored = client
                .json(client.request(Method::PUT, &path).body(body))
                .await?;
            if json_output {
                print_json(&stored);
            } else {
                println!("Stored {key} (version {})", stored["version"]);
            }
        }
        KvCommand::Delete { args } => {
            let (function, rest) = with_function(args, 2)?;
            let key = &rest[0];
            client
                .json(client.request(Method::DELETE, &key_path(&function, key)))
                .await?;
            if !json_output {
                println!("Deleted {key}");
            }
        }
        KvCommand::List { function, prefix } => {
            let function = crate::commands::functions::function_name(function)?;
            let request = client
                .request(Method::GET, &format!("/v1/functions/{function}/kv"))
                .query(&[("prefix", prefix)]);
            let mut page = client.json(request).await?;
            if json_output {
                // Keys as objects, not [key, version] pairs.
                if let Some(keys) = page["keys"].as_array_mut() {
                    for entry in keys.iter_mut() {
                        *entry = serde_json::json!({ "key": entry[0], "version": entry[1] });
                    }
                }
                print_json(&page);
            } else {
                let rows: Vec<Vec<String>> = page["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            k[0].as_str().unwrap_or_default().to_string(),
                            k[1].to_string(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["KEY", "VERSION"], &rows));
            }
        }
    }
    Ok(ExitStatus::Success)
}
