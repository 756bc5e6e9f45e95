//! `order-service`: takes orders and coordinates their distributed transactions with the store and delivery.
//! See `order-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use order_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let shutdown = service_kit::app::init(&config.common)?;
    let app = Application::build(config, shutdown)
        .await
        .context("order-service failed to start")?;
    app.run_until_stopped()
        .await
        .context("order-service stopped with an error")
}
