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

/// Prints the function's logs; with `follow`, keeps printing new lines.
pub async fn run(
    client: &Client,
    name: &str,
    follow: bool,
    json_output: bool,
) -> anyhow::Result<ExitStatus> {
    if !follow {
        let lines = client
            .json(client.request(Method::GET, &format!("/v1/functions/{name}/logs")))
            .await?;
        for line in lines.as_array().into_iter().flatten() {
            print_line(line, json_output);
        }
        return Ok(ExitStatus::Success);
    }
    let response = client
        .send(client.request(
            Method::GET,
            &format!("/v1/functions/{name}/logs?follow=true"),
        ))
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
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
    Ok(ExitStatus::Success)
}
