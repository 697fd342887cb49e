//! The `products-service` binary: load settings, start telemetry, build the
//! application, serve until SIGINT/SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use products_service::{
    config::Settings,
    server::{shutdown_on_signal, Application},
    telemetry,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Product catalog over REST, gRPC and Kafka")]
struct Cli {
    /// YAML file overriding config/default.yaml (environment variables win over both).
    #[arg(long, env = "PRODUCTS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init(&settings.telemetry) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("cannot start telemetry: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "products-service failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(
        http = %app.http_addr(),
        grpc = %app.grpc_addr(),
        metrics = %app.metrics_addr(),
        "products-service listening"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}
