//! `delivery-service`: owns delivery agents; reserves, assigns and releases agents for the order
//! transaction. See `delivery-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use delivery_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::telemetry::init(&config.log.log_filter, config.log.log_format);
    service_kit::fault::arm(&config.fault.fault_points)?;
    service_kit::metrics::install()?;
    let shutdown = service_kit::shutdown::on_signal();
    let app = Application::build(config, shutdown)
        .await
        .context("delivery-service failed to start")?;
    app.run_until_stopped()
        .await
        .context("delivery-service stopped with an error")
}
