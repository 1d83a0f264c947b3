//! `netbpf cni` (also the binary run as `netbpf-cni`): one CNI plugin
//! invocation, the `CNI_*` environment and stdin in, the result or an
//! error object on stdout, exit status 1 on failure.

use std::{io::Read as _, process::ExitCode};

use clap::Args;

/// The name a runtime finds the plugin under in its `CNI_PATH` (a link to
/// `netbpf`); run under it, netbpf is the plugin.
pub const PLUGIN_NAME: &str = "netbpf-cni";

/// `netbpf cni` takes no arguments: everything comes from the
/// environment and stdin, as the CNI spec says.
#[derive(Debug, Args)]
pub struct CniArgs {}

/// Runs one invocation and gives the process's exit status.
pub fn run() -> ExitCode {
    // Logs go to stderr, which runtimes keep; stdout is the result only.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .try_init();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = netbpf::cni::spec::CniError::Io(format!("reading stdin: {e}"));
        println!("{}", err.to_json(netbpf::cni::spec::LATEST_VERSION));
        return ExitCode::FAILURE;
    }
    let outcome = netbpf::cni::invoke(|name| std::env::var(name).ok(), &stdin);
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
