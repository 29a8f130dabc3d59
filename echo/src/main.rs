//! `echo-upstream`: the echo server as a command.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

/// HTTP/1.1 echo server: answers 200 with the body it received and shows the
/// request headers as `x-echo-<name>` response headers.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ECHO_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("echo-upstream: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("echo-upstream: listening on {}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    echo_upstream::serve(listener, None, stopped).await;
    Ok(())
}
