//! `isola functions …`: manage functions on a server.

use crate::client::{Client, ServerArgs};
use crate::output::{human_time, print_json, table};
use crate::project::{collect_files, Project};
use crate::ExitStatus;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use isola_core::Limits;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `isola functions`.
#[derive(Debug, Args)]
pub struct FunctionsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: FunctionsCommand,
}

#[derive(Debug, Subcommand)]
enum FunctionsCommand {
    /// Create a function.
    Create {
        /// Its name (a-z, 0-9, '-').
        #[arg(required_unless_present = "name_flag")]
        name: Option<String>,
        /// Its name, as a flag.
        #[arg(long = "name", conflicts_with = "name", value_name = "NAME")]
        name_flag: Option<String>,
    },
    /// List functions.
    List,
    /// Delete a function with its deployments, records and logs (asks
    /// first; `--yes` when not run from a terminal).
    Delete {
        /// The function.
        name: String,
        /// Delete without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Upload a deployment (a file, or a folder of modules) and activate it.
    Deploy(DeployArgs),
    /// List a function's deployments.
    Deployments {
        /// The function (default: the project around the current folder).
        name: Option<String>,
    },
    /// Activate an earlier deployment (default: the one before the active one).
    Rollback {
        /// The function.
        name: String,
        /// The version to activate (default: the one before the active one).
        version: Option<u32>,
    },
    /// Invoke a function with a JSON payload and print its result.
    Invoke {
        /// The function (default: the project around the current folder).
        name: Option<String>,
        /// The JSON payload (default: read from stdin when it is not a terminal, else null).
        #[arg(long, short = 'p')]
        payload: Option<String>,
    },
    /// Show a function's console output.
    Logs {
        /// The function (default: the project around the current folder).
        name: Option<String>,
        /// Keep following new lines.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Show a function's latest invocation records.
    Invocations {
        /// The function (default: the project around the current folder).
        name: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// `isola deploy`: deploys a project or module, creating its function when
/// it does not exist yet (as `wrangler deploy` does).
#[derive(Debug, Args)]
pub struct TopDeployArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    deploy: DeployArgs,
}

/// Runs `isola deploy`.
pub async fn deploy(args: TopDeployArgs) -> anyhow::Result<ExitStatus> {
    let client = Client::new(&args.server)?;
    let mut deploy = args.deploy;
    deploy.create = true;
    run_deploy(&client, deploy, args.server.json).await
}

/// Arguments of `isola functions deploy`.
#[derive(Debug, Args)]
struct DeployArgs {
    /// A module file, a folder of modules, or a project (a folder with an
    /// isola.toml, or the file itself); default: the current folder.
    path: Option<PathBuf>,
    /// The function to deploy to (default: the project's name).
    #[arg(long, short = 'f')]
    function: Option<String>,
    /// Entry module inside a folder (default: main.js, index.js, main.ts or index.ts).
    #[arg(long)]
    entry: Option<String>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory_mb: Option<u32>,
    /// CPU time limit in milliseconds.
    #[arg(long)]
    cpu_ms: Option<u32>,
    /// Wall-clock limit in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Secret KEY=VALUE (repeatable; never shown again).
    #[arg(long = "secret", short = 's')]
    secrets: Vec<String>,
    /// Store the deployment without activating it.
    #[arg(long)]
    no_activate: bool,
    /// Create the function first when it does not exist (what `isola
    /// deploy` does).
    #[arg(long)]
    create: bool,
    /// Let the function fetch a private address or CIDR range (repeatable).
    #[arg(long = "allow-host", value_name = "IP_OR_CIDR")]
    allowed_hosts: Vec<String>,
    /// Give the function a KV namespace, as `env.<BINDING>` (default binding: KV).
    #[arg(long, num_args = 0..=1, default_missing_value = "KV", value_name = "BINDING")]
    kv: Option<String>,
}

/// Runs `isola functions …`.
pub async fn execute(args: FunctionsArgs) -> anyhow::Result<ExitStatus> {
    let client = Client::new(&args.server)?;
    let json_output = args.server.json;
    match args.command {
        FunctionsCommand::Create { name, name_flag } => {
            let name = name.or(name_flag).unwrap_or_default();
            let created = client
                .json(
                    client
                        .request(Method::POST, "/v1/functions")
                        .json(&json!({ "name": name })),
                )
                .await?;
            show(json_output, &created, || format!("Created function {name}"));
        }
        FunctionsCommand::List => {
            let list = client
                .json(client.request(Method::GET, "/v1/functions"))
                .await?;
            if json_output {
                print_json(&list);
            } else {
                let rows = rows(&list, |f| {
                    vec![text(&f["name"]), version(&f["active_version"])]
                });
                print!("{}", table(&["NAME", "ACTIVE"], &rows));
            }
        }
        FunctionsCommand::Delete { name, yes } => {
            if !yes
                && !confirmed(&format!(
                    "Delete function {name} with its deployments, records and logs?"
                ))?
            {
                anyhow::bail!("not deleted: confirm, or pass --yes");
            }
            client
                .json(client.request(Method::DELETE, &format!("/v1/functions/{name}")))
                .await?;
            show(json_output, &Value::Null, || {
                format!("Deleted function {name}")
            });
        }
        FunctionsCommand::Deploy(deploy) => return run_deploy(&client, deploy, json_output).await,
        FunctionsCommand::Deployments { name } => {
            let name = function_name(name)?;
            let list = client
                .json(client.request(Method::GET, &format!("/v1/functions/{name}/deployments")))
                .await?;
            if json_output {
                print_json(&list);
            } else {
                let rows = rows(&list, |d| {
                    vec![
                        version(&d["version"]),
                        if d["active"] == true {
                            "*".into()
                        } else {
                            String::new()
                        },
                        text(&d["hash"]).chars().take(12).collect(),
                        d["files"].as_array().map_or(0, Vec::len).to_string(),
                        human_time(&d["created_at"]),
                    ]
                });
                print!(
                    "{}",
                    table(
                        &["VERSION", "ACTIVE", "HASH", "FILES", "CREATED (UTC)"],
                        &rows
                    )
                );
            }
        }
        FunctionsCommand::Rollback { name, version } => {
            let body = json!({ "version": version });
            let active = client
                .json(
                    client
                        .request(Method::POST, &format!("/v1/functions/{name}/rollback"))
                        .json(&body),
                )
                .await?;
            show(json_output, &active, || {
                format!("Function {name} now runs version {}", active["version"])
            });
        }
        FunctionsCommand::Invoke { name, payload } => {
            return run_invoke(&client, &function_name(name)?, payload).await
        }
        FunctionsCommand::Logs { name, follow } => {
            let name = function_name(name)?;
            return crate::commands::logs::run(&client, &name, follow, json_output).await;
        }
        FunctionsCommand::Invocations { name, limit } => {
            let name = function_name(name)?;
            let list = client
                .json(client.request(
                    Method::GET,
                    &format!("/v1/functions/{name}/invocations?limit={limit}"),
                ))
                .await?;
            if json_output {
                print_json(&list);
            } else {
                let rows = rows(&list, |r| {
                    vec![
                        human_time(&r["created_at"]),
                        text(&r["id"]),
                        version(&r["version"]),
                        match r.get("request").filter(|q| !q.is_null()) {
                            Some(q) => crate::output::printable(&format!(
                                "{} {} {}",
                                q["method"].as_str().unwrap_or("?"),
                                q["path"].as_str().unwrap_or("/"),
                                q["status"].as_u64().map_or("-".into(), |s| s.to_string())
                            )),
                            None => "invoke".into(),
                        },
                        r["error_code"].as_str().unwrap_or("ok").to_string(),
                        format!("{:.2}ms", r["duration_us"].as_f64().unwrap_or(0.0) / 1000.0),
                        format!("{:.2}ms", r["cpu_us"].as_f64().unwrap_or(0.0) / 1000.0),
                        if r["cold_start"] == true {
                            "cold"
                        } else {
                            "warm"
                        }
                        .into(),
                        first_line(r["error_message"].as_str().unwrap_or(""), 72),
                    ]
                });
                print!(
                    "{}",
                    table(
                        &[
                            "TIME (UTC)",
                            "ID",
                            "VERSION",
                            "REQUEST",
                            "OUTCOME",
                            "DURATION",
                            "CPU",
                            "START",
                            "ERROR"
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn show(json_output: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_output {
        print_json(value);
    } else {
        println!("{}", human());
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn version(value: &Value) -> String {
    value.as_u64().map_or("-".into(), |v| v.to_string())
}

fn rows(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

/// Parses repeated `KEY=VALUE` flags.
pub(crate) fn parse_pairs(
    pairs: &[String],
    flag: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!("{flag} expects KEY=VALUE, got {pair:?}"),
        })
        .collect()
}

async fn run_deploy(
    client: &Client,
    args: DeployArgs,
    json_output: bool,
) -> anyhow::Result<ExitStatus> {
    // Without a path: the project around the current folder, else the folder.
    let path = args
        .path
        .clone()
        .or_else(|| {
            Project::nearest().map(|file| file.parent().map(PathBuf::from).unwrap_or_default())
        })
        .unwrap_or_else(|| PathBuf::from("."));
    let project = Project::find(&path)
        .map(|file| Project::load(&file))
        .transpose()?;
    let function = match (&args.function, &project) {
        (Some(name), _) => name.clone(),
        (None, Some(project)) => project.name.clone(),
        (None, None) => {
            bail!("name the function with --function (or deploy a folder with an isola.toml)")
        }
    };
    if args.create {
        create_if_missing(client, &function, json_output).await?;
    }
    let (files, entry) = match &project {
        Some(project) => (
            project.files()?,
            args.entry.clone().unwrap_or_else(|| project.main.clone()),
        ),
        None => collect_files(&path, args.entry.clone())?,
    };
    let base = project
        .as_ref()
        .map_or_else(Limits::default, Project::limits);
    let limits = Limits {
        memory_mb: args.memory_mb.unwrap_or(base.memory_mb),
        cpu_ms: args.cpu_ms.unwrap_or(base.cpu_ms),
        timeout_ms: args.timeout_ms.unwrap_or(base.timeout_ms),
        ..base
    };
    let mut env = project.as_ref().map(|p| p.vars.clone()).unwrap_or_default();
    env.extend(parse_pairs(&args.env, "--env")?);
    let mut allowed_hosts = project
        .as_ref()
        .map(|p| p.allowed_hosts.clone())
        .unwrap_or_default();
    allowed_hosts.extend(args.allowed_hosts.iter().cloned());
    let kv_binding = args
        .kv
        .clone()
        .or_else(|| project.as_ref().and_then(|p| p.kv_binding.clone()));
    let body = json!({
        "files": files,
        "entry": entry,
        "limits": limits,
        "env": env,
        "secrets": parse_pairs(&args.secrets, "--secret")?,
        "kv_binding": kv_binding,
        "allowed_hosts": allowed_hosts,
    });
    let bytes = serde_json::to_vec(&body)?;
    if !json_output {
        eprint!(
            "Uploading {} file(s), {:.1} KiB to {} ... ",
            files.len(),
            bytes.len() as f64 / 1024.0,
            function
        );
    }
    // A project's [vars] are all its variables: a var taken out of the
    // file goes; otherwise the function keeps those it had.
    let env_mode = if project.is_some() { "replace" } else { "keep" };
    let path = format!(
        "/v1/functions/{}/deployments?activate={}&env={env_mode}",
        function, !args.no_activate
    );
    let request = client
        .request(Method::POST, &path)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes);
    let deployed = match client.json(request).await {
        Ok(deployed) => deployed,
        Err(error) => {
            if !json_output {
                eprintln!("failed");
            }
            return Err(error);
        }
    };
    if json_output {
        print_json(&deployed);
    } else {
        eprintln!("done");
        let state = if deployed["active"] == true {
            "active"
        } else {
            "stored, not active"
        };
        println!(
            "Deployed {} version {} ({state})",
            function, deployed["version"]
        );
    }
    Ok(ExitStatus::Success)
}

/// Creates `function` unless it exists.
async fn create_if_missing(
    client: &Client,
    function: &str,
    json_output: bool,
) -> anyhow::Result<()> {
    let path = format!("/v1/functions/{function}");
    match client.send(client.request(Method::GET, &path)).await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .downcast_ref::<crate::client::ServerError>()
                .is_some_and(|e| e.status == reqwest::StatusCode::NOT_FOUND) =>
        {
            let create = client
                .request(Method::POST, "/v1/functions")
                .json(&json!({ "name": function }));
            client.json(create).await?;
            if !json_output {
                eprintln!("Created function {function}");
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

async fn run_invoke(
    client: &Client,
    name: &str,
    payload: Option<String>,
) -> anyhow::Result<ExitStatus> {
    use std::io::{IsTerminal, Read, Write};
    let payload = match payload {
        Some(payload) => payload,
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the payload from stdin")?;
            text
        }
        None => String::new(),
    };
    if !payload.trim().is_empty() {
        serde_json::from_str::<Value>(&payload).context("the payload is not valid JSON")?;
    }
    let request = client
        .request(Method::POST, &format!("/v1/functions/{name}/invoke"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload);
    match client.send(request).await {
        Ok(response) => {
            let body = response.bytes().await?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&body)?;
            if !body.ends_with(b"\n") {
                writeln!(stdout)?;
            }
            Ok(ExitStatus::Success)
        }
        Err(error) => match error.downcast::<crate::client::ServerError>() {
            // The function ran and failed: its error object, exit code 1.
            Ok(server)
                if server.body["error"]["code"].is_string() && is_function_error(&server.code) =>
            {
                eprintln!("{}", server.body["error"]);
                Ok(ExitStatus::FunctionFailed)
            }
            Ok(server) => Err(server.into()),
            Err(other) => Err(other),
        },
    }
}

fn is_function_error(code: &str) -> bool {
    matches!(
        code,
        "syntax_error"
            | "link_error"
            | "invalid_function"
            | "uncaught_exception"
            | "invalid_output"
            | "cpu_limit"
            | "memory_limit"
            | "wall_timeout"
    )
}

/// Asks `question` on the terminal; without one, the answer is no.
fn confirmed(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// The function named, or else that of the project around the current
/// folder (its `isola.toml`, here or in a folder above).
pub fn function_name(name: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = name {
        return Ok(name);
    }
    let file = Project::nearest().ok_or_else(|| {
        anyhow::anyhow!(
            "name the function, or run this inside a project (a folder with an isola.toml, or below one)"
        )
    })?;
    Ok(Project::load(&file)?.name)
}

/// The first line of `text`, at most `width` characters.
fn first_line(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= width {
        line.to_string()
    } else {
        let cut: String = line.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
