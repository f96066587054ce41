//! The life of a server process, the same for the gateway and the broker: the command line
//! (`--help` lists the environment table), logs, the configuration checked before anything
//! starts (exit 2 listing every problem), the runtime, and the exit status (0 after a clean
//! shutdown, 1 when serving failed). Also the operator commands every binary shares, which
//! start nothing: `check-config` ([`check`]) and `completions` ([`completions`]).

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use switchboard_gateway::config::Problems;

use crate::settings::{self, LogFormat};
use crate::telemetry;

/// The command line `A` of `process` (its long help followed by the environment table it
/// reads), or clap's exit.
pub fn args<A: CommandFactory + FromArgMatches>(process: settings::Process) -> A {
    let matches = A::command()
        .after_long_help(settings::env_help(process))
        .get_matches();
    A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The configuration file's path from the command line or `SWITCHBOARD_CONFIG`; an empty one
/// counts as unset, like every other variable.
pub fn config_path(arg: Option<std::ffi::OsString>) -> Option<std::path::PathBuf> {
    arg.filter(|p| !p.is_empty()).map(std::path::PathBuf::from)
}

/// Installs the logs (in the configured format), then runs `serve` with the configuration on
/// `runtime` — or, if the configuration has problems, lists them all and exits 2.
pub fn main<C, F>(
    name: &str,
    config: Result<C, Problems>,
    log: impl FnOnce(&C) -> LogFormat,
    mut runtime: tokio::runtime::Builder,
    serve: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    telemetry::init_logs(config.as_ref().map(log).unwrap_or_default());
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::allocator::start() {
        tracing::warn!(
            allocator = crate::allocator::NAME,
            "freed memory is returned only while busy: {e}"
        );
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The operator commands every server binary has; none starts anything or binds a port.
#[derive(clap::Subcommand, Debug)]
pub enum Operation {
    /// Checks a configuration file (with the environment's overrides, as the start would):
    /// exit 0, or 2 listing every problem as file:line:col.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
    /// Prints the shell completion script for this command.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Operation {
    /// Runs the command for the binary whose command line is `A`, `load` reading a file (and
    /// the environment) as its start does.
    pub fn run<A: CommandFactory, C>(
        self,
        name: &str,
        load: impl FnOnce(&Path) -> Result<C, Problems>,
    ) -> ExitCode {
        match self {
            Operation::CheckConfig { file } => check(name, &file, load(&file)),
            Operation::Completions { shell } => completions::<A>(shell),
        }
    }
}

/// `check-config FILE`: the outcome of loading `file` (and the environment) exactly as the start
/// would, without starting anything: 0 and `FILE: valid` on stdout, or 2 and every problem on
/// stderr, each as `file:line:col` (or the variable's name).
fn check<C>(name: &str, file: &Path, config: Result<C, Problems>) -> ExitCode {
    match config {
        Ok(_) => {
            println!("{}: valid", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: invalid configuration:\n{e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error. 1 when stdout
/// cannot be written.
pub fn print(name: &str, text: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `completions SHELL`: the completion script of `A`'s command line for `shell` on stdout
/// (clap_complete's; e.g. `BIN completions bash > /etc/bash_completion.d/BIN`).
pub fn completions<A: CommandFactory>(shell: clap_complete::Shell) -> ExitCode {
    let mut command = A::command();
    let name = command.get_name().to_owned();
    // Rendered in memory first: clap_complete panics on a failed write, `print` does not.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    print(&name, &script)
}
