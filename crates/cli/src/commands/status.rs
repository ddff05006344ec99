//! `isola status`: whether the server answers, and the node at a glance
//! (version, functions, warm isolates).

use crate::client::{Client, ServerArgs};
use crate::output::print_json;
use crate::ExitStatus;
use clap::Args;
use reqwest::Method;

/// `isola status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `isola status`.
pub async fn execute(args: StatusArgs) -> anyhow::Result<ExitStatus> {
    let client = Client::new(&args.server)?;
    let status = client
        .json(client.request(Method::GET, "/v1/status"))
        .await?;
    if args.server.json {
        print_json(&status);
        return Ok(ExitStatus::Success);
    }
    let runtime = &status["runtime"];
    println!(
        "server      {} (isola {})",
        client.base(),
        status["version"].as_str().unwrap_or("?")
    );
    println!(
        "functions   {} ({} deployed)",
        status["functions"], status["deployed"]
    );
    println!(
        "isolates    {} warm, {:.1} MiB; {} cold starts so far",
        runtime["warm_instances"],
        runtime["warm_memory_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
        runtime["cold_starts"]
    );
    if let Some(nodes) = status["nodes"].as_array() {
        let role = |node: &serde_json::Value| match (
            node["serves_http"].as_bool() == Some(true),
            node["runs_invocations"].as_bool() == Some(true),
        ) {
            (true, true) => "gateway and worker",
            (true, false) => "gateway",
            _ => "worker",
        };
        println!("cluster     {} nodes alive", nodes.len());
        for node in nodes {
            let mut line = format!(
                "  {:<22} {:<18} {} in flight",
                node["id"].as_str().unwrap_or("?"),
                role(node),
                node["in_flight"]
            );
            if node["runs_invocations"].as_bool() == Some(true) {
                line += &format!(", {} slices", node["slices"]);
            }
            if node["assigner"].as_bool() == Some(true) {
                line += ", assigner";
            }
            println!("{line}");
        }
    }
    Ok(ExitStatus::Success)
}
