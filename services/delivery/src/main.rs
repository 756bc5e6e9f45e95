//! `delivery-service`: owns delivery agents; reserves, assigns and releases agents for the order
//! transaction. See `delivery-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use delivery_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let shutdown = service_kit::app::init(&config.service.common)?;
    let app = Application::build(config, shutdown)
        .await
        .context("delivery-service failed to start")?;
    app.run_until_stopped()
        .await
        .context("delivery-service stopped with an error")
}
