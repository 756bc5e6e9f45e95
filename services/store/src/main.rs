//! `store-service`: owns foods and their packets; reserves, assigns and releases packets for the
//! order transaction. See `store-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use store_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    config
        .read_secret_files()
        .context("secret settings given as files")?;
    let shutdown = service_kit::app::init(&config.service.common, "store-service")?;
    let app = Application::build(config, shutdown)
        .await
        .context("store-service failed to start")?;
    let stopped = app.run_until_stopped().await;
    // The last spans, including those of the shutdown.
    service_kit::telemetry::shutdown();
    stopped.context("store-service stopped with an error")
}
