//! The `netbpf` command: parse the command line ([`cli`]), enter the
//! network namespace if asked, and hand the command to its group.

mod cli;

use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Parser;
#[cfg(feature = "lab")]
use cli::lab;
use cli::{Cli, Command, conntrack, daemon, explain, import, nat, routing, stats};
use log::warn;

fn main() -> ExitCode {
    // Run as `netbpf-cni` (a link a runtime finds in its CNI_PATH), this
    // is a CNI plugin and takes no arguments.
    let argv0 = std::env::args_os().next();
    if argv0.as_deref().map(Path::new).and_then(Path::file_name)
        == Some(std::ffi::OsStr::new(cli::cni::PLUGIN_NAME))
    {
        return cli::cni::run();
    }
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    // Still single-threaded here: setns moves the whole process.
    if let Some(name) = &cli.netns
        && let Err(e) = enter_netns(name)
    {
        eprintln!("netbpf: error: {e:#}");
        return ExitCode::FAILURE;
    }
    // After --netns: a plugin for a runtime in that namespace.
    if matches!(cli.command, Command::Cni(_)) {
        return cli::cni::run();
    }
    let result = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dispatch(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbpf: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Moves this (single-threaded) process into network namespace `name`.
fn enter_netns(name: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("--netns {name}: opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("--netns {name}: entering the namespace"))?;
    Ok(())
}

/// Warns (stderr) when the pinned datapath is attached to no uplink, so
/// that what a read command shows from its maps is not taken for a
/// running datapath.
fn warn_if_detached(pin_dir: &Path) {
    match netbpf::pins::detached_warning(pin_dir) {
        Ok(Some(text)) => warn!("{text}"),
        Ok(None) => {}
        Err(e) => warn!(
            "cannot tell whether the pinned datapath is attached: {:#}",
            anyhow::Error::from(e)
        ),
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    if cli.command.reads_the_datapath() {
        warn_if_detached(&cli.pin_dir);
    }
    let pin_dir = &cli.pin_dir;
    match cli.command {
        Command::Daemon(args) => daemon::run(args, cli.pin_dir).await,
        Command::Down => daemon::down(pin_dir),
        Command::Publish { command } => nat::publish(command, pin_dir),
        Command::Masquerade { command } => nat::masquerade(command, pin_dir),
        Command::Nat { command } => nat::list(command, pin_dir),
        Command::Conntrack { command } => conntrack::run(command, pin_dir),
        Command::Stats(args) => stats::run(args, pin_dir).await,
        Command::Explain(args) => explain::run(args, pin_dir),
        Command::Containers { command } => routing::containers(command, pin_dir),
        Command::Neigh { command } => routing::neigh(command, pin_dir),
        Command::Bgp { command } => routing::bgp(command),
        #[cfg(feature = "lab")]
        Command::Lab(args) => lab::run(args).await,
        Command::Import { command } => import::run(command),
        // Run by main() before the logger and the async runtime start.
        Command::Cni(_) => Ok(()),
    }
}
