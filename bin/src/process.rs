//! The life of a server process, the same for the gateway and the broker: the command line
//! (`--help` lists the environment table), logs, the configuration checked before anything
//! starts (exit 2 listing every problem), the runtime, and the exit status (0 after a clean
//! shutdown, 1 when serving failed).

use std::future::Future;
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
