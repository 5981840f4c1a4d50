//! The `understudy` binary: parse arguments, run the command, map the
//! outcome to an exit code. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads
//! the config file, as `POST /reload` on the admin API does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use understudy::cli::{self, Cli, Command};
use understudy::reload::ConfigSource;
use understudy::server::{self, StartOptions};
use understudy::telemetry::init_tracing;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own live view; only problems should interrupt it.
    let default_level = match cli.command {
        Command::Demo { .. } | Command::Validate(_) => "warn",
        _ => "info",
    };
    init_tracing(cli.log_format, default_level);
    if let Command::Check { config } = &cli.command {
        return cli::check(config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            reset_state,
            record,
        } => run(&config, reset_state, record).await,
        Command::Check { config } => Ok(cli::check(&config)),
        Command::Status { admin, json } => Ok(cli::status(&admin, json).await?),
        Command::Rollout {
            action,
            admin,
            token,
        } => Ok(cli::rollout(&admin, &action, token).await?),
        Command::Demo {
            duration,
            llm: false,
        } => Ok(understudy::demo::run(duration).await?),
        Command::Demo {
            duration,
            llm: true,
        } => Ok(understudy::demo::llm::run(duration).await?),
        Command::Validate(args) => Ok(understudy::validate::run(args).await),
    }
}

async fn run(path: &Path, reset_state: bool, record: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let source = ConfigSource {
        path: path.to_owned(),
        record,
    };
    let config = source.load()?;
    let options = StartOptions {
        reset_state,
        source: Some(source),
    };
    let running = server::start(config, options)
        .await
        .context("cannot start understudy")?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            // The outcome is logged and counted by the reload itself.
            _ = hangup.recv() => {
                let _ = running.reload();
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
