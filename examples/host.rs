//! A minimal Rust host: start the bridge from `cerebros.toml`/env/defaults, call
//! `health` and `echo`. Run it from the repository root: `cargo run --example host`.
use cerebros_bridge::{Client, Config, Result};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let client = Client::start(&Config::load(None)?)?;

    let health = client.health().await?;
    println!(
        "python {} · cerebros_service {}",
        health["python_version"], health["service_version"]
    );

    let reply = client
        .call("echo", json!({"run_id": "demo", "greeting": "héllo"}))
        .await?;
    println!("echo: {reply}");

    println!("stats: {}", serde_json::to_string(&client.stats()).unwrap());
    client.shutdown(std::time::Duration::from_millis(200));
    Ok(())
}
