//! `store-service`: owns foods and their packets; reserves, assigns and releases packets for the
//! order transaction. See `store-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use store_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let shutdown = service_kit::app::init(&config.service.common)?;
    let app = Application::build(config, shutdown)
        .await
        .context("store-service failed to start")?;
    app.run_until_stopped()
        .await
        .context("store-service stopped with an error")
}
