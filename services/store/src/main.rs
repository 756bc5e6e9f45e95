//! `store-service`: owns foods and their packets; reserves, assigns and releases packets for the
//! order transaction. See `store-service --help` for its settings.

use anyhow::Context;
use clap::Parser;
use store_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::telemetry::init(&config.log.log_filter, config.log.log_format);
    service_kit::fault::arm(&config.fault.fault_points)?;
    service_kit::metrics::install()?;
    let shutdown = service_kit::shutdown::on_signal();
    let app = Application::build(config, shutdown)
        .await
        .context("store-service failed to start")?;
    app.run_until_stopped()
        .await
        .context("store-service stopped with an error")
}
