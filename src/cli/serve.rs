//! `cerebros-bridge serve`: the HTTP API, the run queue and the live page (DESIGN §11)
//! until Ctrl-C or SIGTERM.

use super::output::{self, EXIT_OK};
use super::runtime::{runtime, Threads};
use cerebros_bridge::core::config::Config;
use cerebros_bridge::core::error::Result;
use cerebros_bridge::serve::Server;
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;

/// Threads answering HTTP and driving runs (Python runs on the bridge's own workers).
const SERVER_THREADS: usize = 2;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (default `serve.listen`, 127.0.0.1:8765; port 0 picks a
    /// free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// Print the address as one JSON line on stdout once the server answers:
    /// {"listening": "http://HOST:PORT"}.
    #[arg(long)]
    json: bool,
}

/// Runs `serve` and returns the exit code.
pub fn run(config_path: Option<&Path>, args: &ServeArgs) -> i32 {
    match serve(config_path, args) {
        Ok(()) => EXIT_OK,
        Err(err) => output::report_error(&err, args.json),
    }
}

fn serve(config_path: Option<&Path>, args: &ServeArgs) -> Result<()> {
    let mut config = Config::load(config_path)?;
    if let Some(listen) = &args.listen {
        config.serve.listen = listen.clone();
        config
            .env_overrides
            .insert("serve.listen".to_owned(), "--listen".to_owned());
    }
    let runtime = runtime(Threads::Workers(SERVER_THREADS))?;
    let server = Server::bind(&config)?;
    let json = args.json;
    runtime.block_on(server.run(move |addr| announce(addr, json), stop_signal()))
}

/// Tells where the server listens, once it answers.
fn announce(addr: SocketAddr, json: bool) {
    let url = format!("http://{addr}");
    if json {
        output::print_json(&json!({"listening": url}), true);
    } else {
        output::stdout_line(&format!(
            "serving on {url} (the page at {url}/, the API under {url}/api); Ctrl-C stops"
        ));
    }
    output::flush();
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    output::stderr_line(
        "stopping: runs being driven stop where they are and resume at the next start",
    );
}
