//! `console`: the operations console and the customer page. See `console --help` for its
//! settings.

use anyhow::Context;
use clap::Parser;
use console::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    config
        .read_secret_files()
        .context("secret settings given as files")?;
    service_kit::telemetry::init(&config.log.log_filter, config.log.log_format, "console")?;
    let shutdown = service_kit::shutdown::on_signal();
    let app = Application::build(config, shutdown)
        .await
        .context("console failed to start")?;
    let stopped = app.run_until_stopped().await;
    service_kit::telemetry::shutdown();
    stopped.context("console stopped with an error")
}
