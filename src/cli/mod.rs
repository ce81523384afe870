//! The command line (clap): one file per group of subcommands. Client commands talk to the daemon
//! over HTTP; `serve`, `validate`, `schema`, `diff --against` and `worker` need no daemon.

mod apply;
mod client;
mod daemon;
mod diff;
mod logs;
mod model;
pub mod render;
mod serve;
mod status;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::ModelName;
use crate::worker::WorkerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hub",
    version,
    about = "Declarative reconciler for a machine that serves AI models",
    long_about = "Declarative reconciler for a machine that serves AI models.\n\nEdit hub.yaml, review with `hub diff`, converge with `hub apply` (or just save the file that `hub serve` watches), and read the result with `hub status`."
)]
pub struct Cli {
    /// The daemon's address for client commands (default: host and port from the config file).
    #[arg(long, global = true, env = "HUB_URL")]
    url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground: watch hub.yaml and reconcile.
    Serve(serve::ServeArgs),
    /// Check a hub.yaml file and print every problem with its line and column.
    Validate(FileArg),
    /// Print the JSON Schema of hub.yaml.
    Schema(validate::SchemaArgs),
    /// Show what applying FILE would do (exit 0: no change, 1: changes, 2: error).
    Diff(diff::DiffArgs),
    /// Make FILE the desired state.
    Apply(apply::ApplyArgs),
    /// Show the daemon's status.
    Status(status::StatusArgs),
    /// List the models clients can ask the gateway for, and whether a request would wait.
    Models(status::ModelsArgs),
    /// Print events live: every model state change and reconcile report.
    Watch(watch::WatchArgs),
    /// Print a model's worker log (-f: keep following it).
    Logs(logs::LogsArgs),
    /// Start the daemon in the background and print the status (or just the status if it runs).
    Start(daemon::StartArgs),
    /// Stop the daemon and wait for it to exit.
    Stop(daemon::StopArgs),
    /// Re-read the watched hub.yaml now.
    Reload,
    /// Stop the daemon (and its workers, unless --keep-workers).
    Shutdown(model::ShutdownArgs),
    /// Start models' workers (an override until their hub.yaml entry changes).
    StartModel(model::ModelArgs),
    /// Stop models' workers (an override until their hub.yaml entry changes).
    StopModel(model::ModelArgs),
    /// Load models' weights (on demand for a running model).
    LoadModel(model::ModelArgs),
    /// Free models' weights.
    UnloadModel(model::ModelArgs),
    /// Run the built-in model server (started by hub itself for the `builtin` engine).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `-f FILE`, defaulting to `./hub.yaml`.
#[derive(Debug, Clone, clap::Args)]
pub struct FileArg {
    /// The hub.yaml file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "hub.yaml",
        env = "HUB_CONFIG"
    )]
    pub file: PathBuf,
}

impl FileArg {
    pub fn default_path() -> PathBuf {
        std::env::var_os("HUB_CONFIG").map_or_else(|| PathBuf::from("hub.yaml"), PathBuf::from)
    }
}

/// Parses the command line, runs the command, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        end_quietly_on_closed_stdout();
    }
    let threaded = matches!(cli.command, Command::Serve(_));
    let runtime = if threaded {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // kubectl's convention for diff: 1 means "there are changes", so errors are 2.
    let error_code = if matches!(cli.command, Command::Diff(_)) {
        2
    } else {
        1
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(error_code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.url;
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Validate(args) => validate::validate(&args.file),
        Command::Schema(args) => validate::schema(&args),
        Command::Diff(args) => diff::run(args, url).await,
        Command::Apply(args) => apply::run(args, url).await,
        Command::Status(args) => status::run(args, url).await,
        Command::Models(args) => status::models(args, url).await,
        Command::Watch(args) => watch::run(args, url).await,
        Command::Logs(args) => logs::run(args, url).await,
        Command::Start(args) => daemon::start(args, url).await,
        Command::Stop(args) => daemon::stop(args, url).await,
        Command::Reload => model::reload(url).await,
        Command::Shutdown(args) => model::shutdown(args, url).await,
        Command::StartModel(args) => model::run(args, crate::wire::Verb::Start, url).await,
        Command::StopModel(args) => model::run(args, crate::wire::Verb::Stop, url).await,
        Command::LoadModel(args) => model::run(args, crate::wire::Verb::Load, url).await,
        Command::UnloadModel(args) => model::run(args, crate::wire::Verb::Unload, url).await,
        Command::Worker(args) => crate::worker::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

/// Makes a client command whose output goes to a pipe that closed (`hub status | head -1`) end
/// there, quietly, as `cat` and `ls` do: by SIGPIPE. Rust ignores SIGPIPE, so that a closed
/// pipe is an error, and `println!` panics on that error. The servers (`serve`, `worker`) keep
/// ignoring it: a client that hangs up must never kill them.
///
/// The one cost: a request body written to a connection the daemon has already reset can raise
/// it too, and then the command, which was failing anyway, ends without saying why.
fn end_quietly_on_closed_stdout() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: the default disposition runs no handler code, and no other thread exists yet.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// A model name from the command line, parsed before it goes into a URL.
///
/// Not a clap `value_parser`: clap would refuse the whole command line (exit 2), while
/// `hub stop-model Bad/Name alpha` reports the bad name and still acts on `alpha` (exit 1).
fn model_name(name: &str) -> anyhow::Result<ModelName> {
    ModelName::new(name).map_err(|_| {
        anyhow::anyhow!(
            "{name:?} is not a model name: names are lowercase letters, digits, `-` and `_`"
        )
    })
}

/// Parses `--timeout 90s` and the like.
fn duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
        .ok_or_else(|| format!("invalid duration {text:?}: use 500ms, 90s, 15m or 1h"))
}

#[cfg(test)]
mod tests {
    /// clap checks a subcommand's definition only when it is parsed; this checks them all.
    #[test]
    fn every_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
