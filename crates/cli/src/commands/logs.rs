//! `isola functions logs`: print console output, optionally following the
//! server's event stream.

use crate::client::Client;
use crate::ExitStatus;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

fn print_line(line: &Value, json_output: bool) {
    if json_output {
        println!("{line}");
    } else {
        println!(
            "{} {:5} {} {}",
            crate::output::human_time(&line["created_at"]),
            line["level"].as_str().unwrap_or("info"),
            line["invocation_id"].as_str().unwrap_or("-"),
            line["message"].as_str().unwrap_or("")
        );
    }
}

/// One line for an invocation record: what was asked and how it ended,
/// as `wrangler tail` shows a request's outcome.
fn print_record(record: &Value, json_output: bool) {
    if json_output {
        println!("{}", serde_json::json!({ "invocation": record }));
        return;
    }
    let asked = match record.get("request").filter(|r| !r.is_null()) {
        Some(request) => crate::output::printable(&format!(
            "{} {}",
            request["method"].as_str().unwrap_or("?"),
            request["path"].as_str().unwrap_or("/")
        )),
        None => "invoke".to_string(),
    };
    let answer = match (
        record["error_code"].as_str(),
        record["request"]["status"].as_u64(),
    ) {
        (Some(code), _) => code.to_string(),
        (None, Some(status)) => status.to_string(),
        (None, None) => "ok".to_string(),
    };
    println!(
        "{} {:5} {} {asked} → {answer} in {:.1} ms (CPU {:.1} ms, {})",
        crate::output::human_time(&record["created_at"]),
        if record["error_code"].is_string() {
            "error"
        } else {
            "info"
        },
        record["id"].as_str().unwrap_or("-"),
        record["duration_us"].as_f64().unwrap_or(0.0) / 1000.0,
        record["cpu_us"].as_f64().unwrap_or(0.0) / 1000.0,
        if record["cold_start"] == true {
            "cold"
        } else {
            "warm"
        },
    );
}

/// Console lines and invocation records, oldest first, as one list.
fn merged(lines: &Value, records: &Value) -> Vec<(bool, Value)> {
    let mut all: Vec<(bool, Value)> = lines
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (false, l.clone()))
        .chain(
            records
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (true, r.clone())),
        )
        .collect();
    // Records after the lines of the same millisecond: an invocation ends
    // after what it printed.
    all.sort_by_key(|(record, v)| (v["created_at"].as_i64().unwrap_or(0), *record));
    all
}

/// How many records `logs` shows with the lines, and how often `--follow`
/// looks for new ones.
const RECORDS: u32 = 100;
const RECORD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The function's latest invocation records.
async fn records(client: &Client, name: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/functions/{name}/invocations?limit={RECORDS}");
    client.json(client.request(Method::GET, &path)).await
}

/// Prints the function's logs with each invocation's outcome; with
/// `follow`, keeps printing new lines and outcomes.
pub async fn run(
    client: &Client,
    name: &str,
    follow: bool,
    json_output: bool,
) -> anyhow::Result<ExitStatus> {
    let print = |(record, value): &(bool, Value)| {
        if *record {
            print_record(value, json_output)
        } else {
            print_line(value, json_output)
        }
    };
    if !follow {
        let lines = client
            .json(client.request(Method::GET, &format!("/v1/functions/{name}/logs")))
            .await?;
        merged(&lines, &records(client, name).await?)
            .iter()
            .for_each(print);
        return Ok(ExitStatus::Success);
    }
    let response = client
        .send(client.request(
            Method::GET,
            &format!("/v1/functions/{name}/logs?follow=true"),
        ))
        .await?;
    // Records already there are history: only new ones are printed.
    let mut seen: std::collections::HashSet<String> = ids(&records(client, name).await?);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut poll = tokio::time::interval(RECORD_POLL);
    loop {
        tokio::select! {
            chunk = stream.next() => {
                let Some(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                        if let Ok(line) = serde_json::from_str::<Value>(data.trim()) {
                            print_line(&line, json_output);
                        }
                    }
                }
            }
            _ = poll.tick() => {
                let latest = records(client, name).await?;
                let mut fresh: Vec<Value> = latest
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["id"].as_str().is_some_and(|id| !seen.contains(id)))
                    .cloned()
                    .collect();
                fresh.reverse();
                if fresh.len() == RECORDS as usize {
                    // The whole window is new: older new ones fell out of it.
                    eprintln!("(more outcomes than shown: --follow prints at most {RECORDS} a second)");
                }
                for record in &fresh {
                    print_record(record, json_output);
                }
                // What the server still lists is all that can come back.
                seen = ids(&latest);
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// The ids of a list of records.
fn ids(records: &Value) -> std::collections::HashSet<String> {
    records
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}
