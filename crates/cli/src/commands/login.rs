//! `isola login`: remember a server and its token.

use crate::config::Config;
use crate::ExitStatus;
use clap::Args;

/// Arguments of `isola login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    pub server: String,
    /// Admin token.
    #[arg(long, env = "ISOLA_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// Checks the token against the server, then writes the config file.
pub async fn execute(args: LoginArgs) -> anyhow::Result<ExitStatus> {
    let server_args = crate::client::ServerArgs {
        server: Some(args.server.clone()),
        token: Some(args.token.clone()),
        json: false,
    };
    let client = crate::client::Client::new(&server_args)?;
    client
        .json(client.request(reqwest::Method::GET, "/v1/functions"))
        .await?;
    let path = Config {
        server: Some(args.server.clone()),
        token: Some(args.token),
    }
    .save()?;
    println!("Logged in to {} (saved to {})", args.server, path.display());
    Ok(ExitStatus::Success)
}
