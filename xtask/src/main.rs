//! `cargo xtask`: setup, build, run, test and lint for netbpf.
//!
//! xtask compiles with the machine's default toolchain (it needs only std,
//! anyhow and clap) and drives everything else with the toolchain pinned in
//! `netbpf-ebpf/rust-toolchain.toml`, through `cargo +<channel>`. Every
//! command except `setup` runs setup first, so a fresh clone needs only
//! `cargo xtask test` (as root).

mod bench;
mod cmd;
mod setup;
mod toolchain;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::{cmd::Cmd, toolchain::Toolchain};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Setup, build, run, test and lint netbpf"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The xtask subcommands.
#[derive(Subcommand)]
enum Command {
    /// Install what is missing: the pinned toolchain, LLVM 22, bpf-linker, iproute2.
    Setup,
    /// Set up, then build netbpf (and, through its build script, the eBPF programs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run netbpf as root with ARGS (default: `lab`).
    Run {
        /// Build and run the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for netbpf (put them after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the tests (as root for the in-kernel ones); ARGS go to `cargo test`.
    Test {
        /// Arguments for `cargo test`, e.g. a test name filter (put them after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then check formatting and run clippy with warnings denied.
    Lint,
    /// Build (release) and run the benchmark as root: in-kernel cost per path, router
    /// cost against iptables-nft, install time, SYN flood against iptables-nft, BGP
    /// convergence on changes; writes results/ (docs/performance.md).
    Bench {
        /// The reduced matrix, under two minutes once built.
        #[arg(long)]
        quick: bool,
        /// Skip the router bench (netbpf vs iptables-nft with trafgen).
        #[arg(long)]
        skip_router: bool,
        /// Run only one part: kernel, router, install, flood or bgp.
        #[arg(long, value_name = "PART", value_parser = ["kernel", "router", "install", "flood", "bgp"])]
        only: Option<String>,
        /// The router bench's variants to run, comma-separated (default: all), e.g.
        /// xdp-floor,plain,iptables-nft,netbpf-tc,netbpf-fast,netbpf-native.
        #[arg(long, value_name = "LIST")]
        variants: Option<String>,
    },
}

/// What every subcommand needs.
struct Context {
    /// The workspace root.
    root: PathBuf,
    /// The pinned toolchain.
    toolchain: Toolchain,
}

/// Default arguments of `cargo xtask run`.
const DEFAULT_RUN_ARGS: &[&str] = &["lab"];

/// The userspace package and binary.
const NETBPF: &str = "netbpf";

/// The eBPF package, linted on its own.
const NETBPF_EBPF: &str = "netbpf-ebpf";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .chain()
                .find_map(|cause| cause.downcast_ref::<cmd::Failed>())
                .map_or(1, cmd::Failed::exit_code);
            ExitCode::from(code.max(1))
        }
    }
}

/// Dispatches a parsed command line.
fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    let toolchain = Toolchain::pinned(&root)?;
    let ctx = Context { root, toolchain };
    match cli.command {
        Command::Setup => setup::ensure(&ctx.root, &ctx.toolchain),
        Command::Build { release } => build(&ctx, release),
        Command::Run { release, args } => run_netbpf(&ctx, release, &args),
        Command::Test { args } => test(&ctx, &args),
        Command::Lint => lint(&ctx),
        Command::Bench {
            quick,
            skip_router,
            only,
            variants,
        } => bench::run(
            &ctx,
            quick,
            skip_router,
            only.as_deref(),
            variants.as_deref(),
        ),
    }
}

/// The workspace root: the parent of xtask's manifest directory (taken from
/// the environment `cargo run` sets, else from compile time).
fn workspace_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// `cargo xtask build`.
fn build(ctx: &Context, release: bool) -> Result<()> {
    setup::ensure(&ctx.root, &ctx.toolchain)?;
    let mut cargo = Cmd::cargo(&ctx.toolchain.channel, &ctx.root);
    cargo.args(["build", "--package", NETBPF]);
    if release {
        cargo.arg("--release");
    }
    cargo.run().context("building netbpf")
}

/// `cargo xtask run`: builds, then replaces this process with netbpf, so that
/// Ctrl-C reaches netbpf alone and its exit status is ours.
fn run_netbpf(ctx: &Context, release: bool, args: &[String]) -> Result<()> {
    if !setup::is_root()? {
        bail!(
            "`cargo xtask run` must run as root: netbpf loads eBPF programs and sets up \
             network namespaces. Run it again as root"
        );
    }
    build(ctx, release)?;
    let binary = target_dir(&ctx.root)
        .join(if release { "release" } else { "debug" })
        .join(NETBPF);
    let mut netbpf = Cmd::new(&binary);
    netbpf.current_dir(&ctx.root).child_env();
    if args.is_empty() {
        netbpf.args(DEFAULT_RUN_ARGS);
    } else {
        netbpf.args(args);
    }
    Err(netbpf.exec())
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (or
/// `$CARGO_BUILD_TARGET_DIR`), relative to the workspace root, else
/// `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|key| env::var_os(key).filter(|dir| !dir.is_empty()))
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// `cargo xtask test`.
fn test(ctx: &Context, args: &[String]) -> Result<()> {
    setup::ensure(&ctx.root, &ctx.toolchain)?;
    if !setup::is_root()? {
        let bar = "*".repeat(78);
        eprintln!(
            "{bar}\n* WARNING: not running as root. The in-kernel tests load eBPF programs and\n\
             * create network namespaces; they will fail or be skipped. Run as root.\n{bar}"
        );
    }
    // The default members (not --workspace): the eBPF crate builds only for
    // bpfel-unknown-none, through netbpf's build script.
    Cmd::cargo(&ctx.toolchain.channel, &ctx.root)
        .arg("test")
        .args(args)
        .run()
        .context("tests failed")
}

/// `cargo xtask lint`: rustfmt, clippy on the default members, clippy on the
/// eBPF crate alone (a workspace-wide clippy trips on a duplicate
/// `panic_impl`). All three run; the failures are reported together.
fn lint(ctx: &Context) -> Result<()> {
    setup::ensure(&ctx.root, &ctx.toolchain)?;
    let channel = &ctx.toolchain.channel;
    let checks: [(&str, Vec<&str>); 4] = [
        ("rustfmt", vec!["fmt", "--all", "--", "--check"]),
        (
            // The production library carries no lab or bench code.
            "clippy on the library without the lab",
            vec![
                "clippy",
                "--package",
                NETBPF,
                "--lib",
                "--no-default-features",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy",
            vec!["clippy", "--all-targets", "--", "-D", "warnings"],
        ),
        (
            "clippy on netbpf-ebpf",
            vec![
                "clippy",
                "--package",
                NETBPF_EBPF,
                "--all-targets",
                "--",
                "-D",
                "warnings",
                "-C",
                "panic=abort",
                "-Zpanic_abort_tests",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (name, args) in checks {
        if let Err(err) = Cmd::cargo(channel, &ctx.root).args(args).run() {
            eprintln!("lint: {name} failed: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    eprintln!("lint: ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trailing_args() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        match parse(&["xtask", "run", "--release", "--", "lab", "--verbose"]) {
            Command::Run { release, args } => {
                assert!(release);
                assert_eq!(args, ["lab", "--verbose"]);
            }
            _ => panic!("not run"),
        }
        match parse(&["xtask", "test", "--", "nat", "--", "--nocapture"]) {
            Command::Test { args } => assert_eq!(args, ["nat", "--", "--nocapture"]),
            _ => panic!("not test"),
        }
        match parse(&["xtask", "test"]) {
            Command::Test { args } => assert!(args.is_empty()),
            _ => panic!("not test"),
        }
    }
}
