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
    /// Print a key's value.
    Get {
        /// The function whose namespace it is.
        function: String,
        /// The key.
        key: String,
    },
    /// Set a key; the value is the argument, or stdin when it is `-`.
    Put {
        /// The function whose namespace it is.
        function: String,
        /// The key.
        key: String,
        /// The value; `-` reads it from stdin.
        value: String,
        /// Seconds until the key expires.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Remove a key.
    Delete {
        /// The function whose namespace it is.
        function: String,
        /// The key.
        key: String,
    },
    /// List keys.
    List {
        /// The function whose namespace it is.
        function: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
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
    match args.command {
        KvCommand::Get { function, key } => {
            let response = client
                .send(client.request(Method::GET, &key_path(&function, &key)))
                .await?;
            let value = response.bytes().await?;
            let mut stdout = std::io::stdout();
            stdout.write_all(&value)?;
            // On a terminal, the prompt starts on a line of its own.
            if stdout.is_terminal() && !value.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
        }
        KvCommand::Put {
            function,
            key,
            value,
            ttl,
        } => {
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
            if args.server.json {
                print_json(&stored);
            } else {
                println!("Stored {key} (version {})", stored["version"]);
            }
        }
        KvCommand::Delete { function, key } => {
            client
                .json(client.request(Method::DELETE, &key_path(&function, &key)))
                .await?;
            if !args.server.json {
                println!("Deleted {key}");
            }
        }
        KvCommand::List { function, prefix } => {
            let request = client
                .request(Method::GET, &format!("/v1/functions/{function}/kv"))
                .query(&[("prefix", prefix)]);
            let mut page = client.json(request).await?;
            if args.server.json {
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
