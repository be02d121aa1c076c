//! The `shopstream` binary: the command line and the wiring of the crates.

mod app;
mod catalogue;
mod commands;
mod config;
mod evaluate;
mod import;
mod produce;
mod shutdown;
mod telemetry;
mod train;
mod wiring;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use config::Settings;
use shutdown::Shutdown;

/// mimalloc instead of the system allocator: the pipeline builds and drops
/// large maps of items every batch, which glibc's malloc spends a third of
/// the pipeline's time on (BENCHMARKS.md, "Pipeline at shop scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time inventory, analytics and recommendations for an online shop.
///
/// Settings come from built-in defaults, then `shopstream.toml`, then
/// `SHOPSTREAM_*` environment variables (see README.md).
#[derive(Debug, Parser)]
#[command(name = "shopstream", version)]
struct Cli {
    /// A TOML settings file (default: ./shopstream.toml, if present).
    #[arg(long, global = true, env = "SHOPSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default): bootstraps the first admin and, on an
    /// empty store, a demo catalogue.
    Serve,
    /// Create the tables on the configured backend, and the Kinesis stream
    /// if `stream = "kinesis"`. Safe to run again.
    Init {
        /// Print what would be created (tables with their keys and TTL
        /// attribute, stream, bucket) as JSON, and create nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Publish events from a JSON-lines file (one envelope per line) to the
    /// configured stream. If a server holds the embedded store, they go
    /// through its `POST /api/events` (with `--token`).
    Produce {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Import a data set's behaviour log as events onto the stream, oldest
    /// first (directly, or through the running server like `produce`). The
    /// mapping of each format is in the README and docs/evaluation.md.
    Import {
        /// `retailrocket` (events.csv), `movielens` (ratings.csv),
        /// `groceries` (Groceries_dataset.csv), `jsonl` (event envelopes), or
        /// `products`: a catalogue (JSON lines, or CSV for a `.csv` file)
        /// whose SKUs are the shop's own ids, written to the store directly
        /// (stop a server that holds the embedded store first).
        #[arg(long)]
        format: import::Format,
        /// One or more files of that format, merged in time order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Import only the oldest N events.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// List or replay dead letters (records that were not valid events).
    /// In embedded mode, stop the server first, or use the API.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Train the recommender now on the store's interaction log (the last
    /// `recommender_history_hours`) and save the model where the servers
    /// load it from (a server restarting, or one started later, serves it).
    /// If a server holds the embedded store, it is asked to train instead
    /// (with `--token`).
    Train {
        /// The running server, for embedded mode (default: the `listen` setting).
        #[arg(long)]
        url: Option<String>,
        /// An admin access token, for training through the server.
        #[arg(long, env = "SHOPSTREAM_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Evaluate recommenders offline on an interaction log, with the
    /// chronological protocol of docs/evaluation.md: HR, MRR and NDCG at 10
    /// and 20, catalogue coverage, latency. Needs no server or store.
    Evaluate {
        /// `movielens` (ratings.csv) or `groceries` (Groceries_dataset.csv).
        #[arg(long)]
        format: evaluate::Format,
        file: PathBuf,
        /// The share of interactions, by time, to train on.
        #[arg(long, default_value_t = 0.8)]
        train_fraction: f64,
        /// Score at most this many test interactions (spread evenly).
        #[arg(long)]
        max_targets: Option<usize>,
        /// EASE learns a dense item × item matrix: on this many of the most
        /// popular items (its training time grows with the cube).
        #[arg(long, default_value_t = 1000)]
        ease_items: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where `produce` and `import` send, and in what batches.
#[derive(Debug, clap::Args)]
struct SendArgs {
    /// The running server, for embedded mode (default: the `listen` setting).
    #[arg(long)]
    url: Option<String>,
    /// An admin or service access token, for sending through the server.
    #[arg(long, env = "SHOPSTREAM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Events per request or append.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// The newest dead letters, one JSON object per line.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Put a dead letter's record back on the stream and remove it.
    Replay {
        /// The dead letter's id, as `list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user with a role. In embedded mode, stop the server first:
    /// it holds the data directory.
    Create {
        #[arg(long)]
        email: String,
        /// At least 12 characters. Prefer the environment variable, which
        /// stays out of the shell history.
        #[arg(long, env = "SHOPSTREAM_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, value_parser = ["admin", "customer", "supplier", "service"])]
        role: String,
        /// Which supplier's products a supplier sees (required for suppliers).
        #[arg(long)]
        supplier_id: Option<String>,
        /// Display name (default: the part of the e-mail address before '@').
        #[arg(long)]
        name: Option<String>,
    },
}

/// Builds the service and runs it until a stop.
async fn serve(settings: Settings, stop: Shutdown) -> anyhow::Result<()> {
    match app::Application::build(settings, stop).await? {
        Some(app) => app.run().await,
        None => Ok(()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shopstream: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Work abandoned by a stop (a model fit, a store being opened) may still
    // run on the blocking pool: give it a moment, never wait forever.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    // Serving catches SIGINT/SIGTERM from its first moment, before the
    // settings are read or the store is opened.
    let stop = match command {
        Command::Serve => match Shutdown::on_signals() {
            Ok(stop) => Some(stop),
            Err(e) => {
                eprintln!("shopstream: cannot handle signals: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let settings = match load_settings(cli.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let telemetry = match telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shopstream: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve => match stop {
            Some(stop) => serve(settings, stop).await,
            None => Err(anyhow::anyhow!("signal handlers were not registered")),
        },
        Command::Init { plan: true } => commands::init_plan(&settings),
        Command::Init { plan: false } => commands::init(&settings).await,
        Command::User { command } => commands::create_user(&settings, command).await,
        Command::Train { url, token } => train::run(&settings, url, token).await,
        Command::Evaluate {
            format,
            file,
            train_fraction,
            max_targets,
            ease_items,
            json,
        } => tokio::task::spawn_blocking(move || {
            evaluate::run(format, &file, train_fraction, max_targets, ease_items, json)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r),
        Command::DeadLetters { command } => commands::dead_letters(&settings, command).await,
        Command::Produce { file, send } => {
            produce::run(&settings, file, send.url, send.token, send.batch).await
        }
        Command::Import {
            format: import::Format::Products,
            files,
            limit,
            ..
        } => catalogue::import(&settings, files, limit).await,
        Command::Import {
            format,
            files,
            limit,
            send,
        } => produce::import(&settings, format, files, limit, send).await,
    };
    telemetry.shutdown().await;
    exit_code(result)
}

/// The settings, or the exit code for settings that cannot be used.
fn load_settings(file: Option<PathBuf>) -> Result<Settings, std::process::ExitCode> {
    match Settings::load(file) {
        Ok(settings) => Ok(settings),
        Err(e) => {
            eprintln!("shopstream: {e:#}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopstream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
