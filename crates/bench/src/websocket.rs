//! `isola-bench ws-echo`: a WebSocket load generator for any server that
//! echoes (isola, `deno serve`, workerd), and `isola-bench ws-idle`: many
//! idle connections held open, for the server's memory per connection.
//! Loopback only; bounded in time and in messages.

use crate::stats::Samples;
use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Options of `ws-echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// A `ws://127.0.0.1:…` URL of an echo endpoint.
    #[arg(long)]
    url: String,
    /// Connections, each sending its next message when the last came back.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Bytes per message (text).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `ws-idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// A `ws://127.0.0.1:…` URL.
    #[arg(long)]
    url: String,
    /// Connections opened and held.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Seconds they are held once all are open.
    #[arg(long, default_value_t = 5)]
    hold: u64,
}

/// Most messages one run sends, whatever the duration.
const MAX_MESSAGES: usize = 50_000_000;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(url: &str) -> anyhow::Result<Socket> {
    let request = url.into_client_request()?;
    let host = request
        .uri()
        .host()
        .context("the URL has no host")?
        .to_string();
    if host != "127.0.0.1" && host != "[::1]" && host != "localhost" {
        bail!("loopback addresses only");
    }
    let port = request.uri().port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(socket)
}

/// Round trips on one connection until `until`: their latencies.
async fn echo_loop(mut socket: Socket, payload: String, until: Instant) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    while Instant::now() < until && samples.len() < MAX_MESSAGES {
        let sent = Instant::now();
        socket.send(Message::text(payload.clone())).await?;
        loop {
            match socket.next().await.context("the server closed")?? {
                Message::Text(_) | Message::Binary(_) => break,
                _ => continue,
            }
        }
        samples.push(sent.elapsed());
    }
    let _ = socket.close(None).await;
    Ok(samples)
}

/// Runs `ws-echo`.
pub async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    let payload = "x".repeat(args.size);
    let mut sockets = Vec::new();
    for _ in 0..args.connections {
        sockets.push(open(&args.url).await?);
    }
    // Warm-up: one round trip each.
    let warm_until = Instant::now() + Duration::from_millis(500);
    let mut warmed = Vec::new();
    for mut socket in sockets {
        socket.send(Message::text(payload.clone())).await?;
        socket.next().await.context("no echo")??;
        warmed.push(socket);
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration);
    let tasks: Vec<_> = warmed
        .into_iter()
        .map(|socket| tokio::spawn(echo_loop(socket, payload.clone(), until)))
        .collect();
    let mut all = Samples::default();
    for task in tasks {
        for sample in task.await??.into_inner() {
            all.push(sample);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = all.len() as f64 / seconds;
    let summary = all.summary_us();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "messages_per_s": rate, "latency": summary })
        );
    } else {
        println!(
            "{:.0} messages/s over {} connections ({} B), round trip p50 {} µs, p99 {} µs",
            rate, args.connections, args.size, summary["p50_us"], summary["p99_us"]
        );
    }
    Ok(())
}

/// Runs `ws-idle`: opens the connections, says so, holds them.
pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let socket = open(&args.url)
            .await
            .with_context(|| format!("opening connection {index}"))?;
        sockets.push(socket);
    }
    println!("open {}", sockets.len());
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    Ok(())
}
