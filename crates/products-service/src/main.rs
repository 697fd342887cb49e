//! The `products-service` binary: load settings, start telemetry, build the
//! application, serve until SIGINT/SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use products_service::{
    adapters::kafka::dead_letter::{replay, ReplayOptions},
    config::Settings,
    events::tail::{tail, TailOptions},
    server::{shutdown_on_signal, Application},
    telemetry, tls,
};
use tokio_util::sync::CancellationToken;

// Many small, short-lived allocations per request (JSON, headers, spans):
// mimalloc serves them with less contention than the system allocator
// (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Re-publish dead letters to the topics they came from (after fixing
    /// what made them fail). Safe to repeat: applying is idempotent.
    ReplayDlq {
        /// List the matching dead letters; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only dead letters that came from this topic.
        #[arg(long)]
        original_topic: Option<String>,
        /// Only dead letters with this key (product id).
        #[arg(long)]
        key: Option<String>,
        /// Only dead letters whose error kind or message contains this text.
        #[arg(long)]
        error_contains: Option<String>,
        /// Replay from the start of the dead-letter topic. Without it, a
        /// replay reads only what was dead-lettered since the last replay of
        /// everything (filtered runs and dry runs remember nothing).
        #[arg(long)]
        from_beginning: bool,
    },
    /// The product change events (docs/EVENTS.md).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Write a local certificate authority and a server certificate signed
    /// by it (ca.crt, ca.key, server.crt, server.key) for HTTPS and gRPC over
    /// TLS on this machine (`make cert`). Clients trust ca.crt.
    GenCert {
        /// Directory for the four PEM files (replaced if present).
        #[arg(long, default_value = ".certs")]
        out: PathBuf,
        /// DNS names / IP addresses of the server certificate.
        #[arg(long = "host", default_values = tls::certgen::DEFAULT_HOSTS)]
        hosts: Vec<String>,
        /// Validity of both certificates.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the events, one JSON line each, following new ones until
    /// interrupted.
    Tail {
        /// Start with the oldest event kept (default: only new events).
        #[arg(long)]
        from_beginning: bool,
        /// Only the events of this product id.
        #[arg(long)]
        product: Option<String>,
        /// Stop at the end of the topic instead of following it.
        #[arg(long)]
        until_end: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenCert { out, hosts, days }) = &cli.command {
        return gen_cert(out, hosts, *days);
    }
    tls::install_crypto_provider();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = settings.resolve_secrets() {
        eprintln!("invalid configuration: {err}");
        return ExitCode::from(2);
    }
    let _telemetry = match telemetry::init(&settings.telemetry) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("cannot start telemetry: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::ReplayDlq {
            dry_run,
            original_topic,
            key,
            error_contains,
            from_beginning,
        } => {
            let options = ReplayOptions {
                dry_run,
                original_topic,
                key,
                error_contains,
                from_beginning,
            };
            replay_dlq(settings, options).await
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    from_beginning,
                    product,
                    until_end,
                },
        } => {
            let options = TailOptions {
                from_beginning,
                product,
                until_end,
            };
            tail_events(settings, options).await
        }
        Command::GenCert { .. } => unreachable!("handled before the settings load"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "products-service failed");
            ExitCode::FAILURE
        }
    }
}

fn gen_cert(out: &std::path::Path, hosts: &[String], days: u32) -> ExitCode {
    match tls::certgen::generate(out, hosts, days) {
        Ok(files) => {
            println!(
                "wrote {} (trust this CA in clients), {} and {} (the server's chain and key) for {}",
                files.ca_cert.display(),
                files.server_cert.display(),
                files.server_key.display(),
                hosts.join(", "),
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gen-cert: {err}");
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

async fn tail_events(settings: Settings, options: TailOptions) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    tokio::task::spawn_blocking(move || {
        tail(
            &settings.kafka,
            &settings.events,
            &options,
            &mut std::io::stdout().lock(),
            &stop,
        )
        .map(drop)
    })
    .await?
}

async fn replay_dlq(settings: Settings, options: ReplayOptions) -> anyhow::Result<()> {
    let report = replay(&settings.kafka, &options).await?;
    for letter in &report.matched {
        println!(
            "{}[{}]@{}\t-> {}\tkey={}\t{}: {}",
            settings.kafka.topics.dead_letter,
            letter.dlq_partition,
            letter.dlq_offset,
            letter.original_topic,
            letter.key.as_deref().unwrap_or("-"),
            letter.error_kind,
            letter.error_message,
        );
    }
    let verb = if options.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    println!(
        "scanned {} dead letters, {} matched, {verb} {}",
        report.scanned,
        report.matched.len(),
        if options.dry_run {
            report.matched.len()
        } else {
            report.replayed
        },
    );
    Ok(())
}
