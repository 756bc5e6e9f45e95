//! `order-service`: takes orders and coordinates their distributed transactions with the store and delivery.
//! See `order-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use order_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    config
        .read_secret_files()
        .context("secret settings given as files")?;
    let shutdown = service_kit::app::init(&config.common, "order-service")?;
    let app = Application::build(config, shutdown)
        .await
        .context("order-service failed to start")?;
    let stopped = app.run_until_stopped().await;
    // The last spans, including those of the shutdown.
    service_kit::telemetry::shutdown();
    stopped.context("order-service stopped with an error")
}
