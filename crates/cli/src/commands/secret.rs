//! `isola secret put|list|delete <function> …`: a function's secrets,
//! managed without a redeploy of its code. Values are read from stdin and
//! never shown.

use crate::client::{Client, ServerArgs};
use crate::output::{print_json, table};
use crate::ExitStatus;
use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use std::io::{IsTerminal, Read};

/// `isola secret`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Set a secret; its value is typed without echo at a terminal, else
    /// read from stdin (one trailing newline is dropped). The function's active deployment is deployed again with it.
    Put {
        /// The function.
        function: String,
        /// The secret's name (as in `env.NAME`).
        name: String,
    },
    /// List the names of a function's secrets.
    List {
        /// The function.
        function: String,
    },
    /// Remove a secret (the active deployment is deployed again without it).
    Delete {
        /// The function.
        function: String,
        /// The secret's name (as in `env.NAME`).
        name: String,
    },
}

/// Reads a secret's value: typed at a terminal without echo, else stdin.
fn read_value(name: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Value of {name} (not shown): "))
            .context("reading the secret's value");
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the secret's value from stdin")?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Runs `isola secret …`.
pub async fn execute(args: SecretArgs) -> anyhow::Result<ExitStatus> {
    let client = Client::new(&args.server)?;
    let (verb, function, name, deployed) = match args.command {
        SecretCommand::List { function } => {
            let path = format!("/v1/functions/{function}/secrets");
            let listed = client.json(client.request(Method::GET, &path)).await?;
            if args.server.json {
                print_json(&listed);
            } else {
                let rows: Vec<Vec<String>> = listed["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| vec![n.as_str().unwrap_or_default().to_string()])
                    .collect();
                print!("{}", table(&["NAME"], &rows));
            }
            return Ok(ExitStatus::Success);
        }
        SecretCommand::Put { function, name } => {
            let value = read_value(&name)?;
            let path = format!("/v1/functions/{function}/secrets/{name}");
            let request = client.request(Method::PUT, &path).body(value);
            ("Set", function, name, client.json(request).await?)
        }
        SecretCommand::Delete { function, name } => {
            let path = format!("/v1/functions/{function}/secrets/{name}");
            let request = client.request(Method::DELETE, &path);
            ("Deleted", function, name, client.json(request).await?)
        }
    };
    if args.server.json {
        print_json(&deployed);
    } else {
        println!(
            "{verb} secret {name} of {function} (now version {})",
            deployed["version"]
        );
    }
    Ok(ExitStatus::Success)
}
