//! The `netbpf` command.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use log::{error, info, warn};
use netbpf::{
    DEFAULT_PIN_DIR,
    config::{Config, Timeouts},
    conntrack,
    datapath::Datapath,
    maps::{self, NatMaps},
    table,
};
use tokio::signal::unix::{SignalKind, signal};

/// Container networking in the kernel with eBPF: NAT the Docker way and
/// per-container-IP routing the Calico way.
#[derive(Debug, Parser)]
#[command(name = "netbpf", version)]
struct Cli {
    /// bpffs directory where the running datapath pins its maps.
    #[arg(long, global = true, env = "NETBPF_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Enter this named network namespace (as made by `ip netns add`)
    /// before doing anything else. Unlike `ip netns exec`, this keeps the
    /// caller's mount namespace, so pins stay visible to other processes.
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach the datapath, fill its maps, expire flows; stop with Ctrl-C or SIGTERM.
    Daemon(DaemonArgs),
    /// Show the conntrack table of the running datapath.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Show the NAT rules of the running datapath: masquerade and published ports.
    Nat {
        #[command(subcommand)]
        command: NatCommand,
    },
    /// Show the datapath's counters (drops by reason, translations, port probes).
    Stats(OutputArgs),
    /// Run the self-contained lab demo in network namespaces (what `cargo xtask run` starts).
    Lab(LabArgs),
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Seconds between conntrack expiry passes.
    #[arg(long, default_value_t = 5)]
    gc_interval: u64,
}

#[derive(Debug, Subcommand)]
enum ConntrackCommand {
    /// One line per flow: proto, inside, outside, remote, state, age, packets/bytes.
    List(ConntrackListArgs),
}

#[derive(Debug, Subcommand)]
enum NatCommand {
    /// Masquerade rules (source CIDR, address, ports) and published ports
    /// (proto, host address and port, container address and port), as the
    /// datapath holds them.
    List(OutputArgs),
}

#[derive(Debug, Args)]
struct ConntrackListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Config file whose timeouts to show expiry with (default timeouts otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LabArgs {
    /// Prefix of the namespaces the lab creates; the lab's daemon pins its
    /// maps at /sys/fs/bpf/PREFIX (the global --pin-dir does not apply).
    #[arg(long, default_value = "netbpf-lab")]
    prefix: String,
    /// Run the demo once and exit instead of showing live counters.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
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
    let path = std::path::Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("--netns {name}: opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("--netns {name}: entering the namespace"))?;
    Ok(())
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Daemon(args) => daemon(args, cli.pin_dir).await,
        Command::Conntrack {
            command: ConntrackCommand::List(args),
        } => conntrack_list(args, &cli.pin_dir),
        Command::Nat {
            command: NatCommand::List(args),
        } => nat_list(args, &cli.pin_dir),
        Command::Stats(args) => stats(args, &cli.pin_dir),
        Command::Lab(args) => {
            let exe = std::env::current_exe().context("finding the netbpf binary")?;
            netbpf::lab::run_demo(&exe, &args.prefix, args.once).await
        }
    }
}

async fn daemon(args: DaemonArgs, pin_dir: PathBuf) -> Result<()> {
    let config = Config::load(&args.config)?;
    config.log_warnings();
    // Register signal handlers before attaching, so a signal that arrives
    // while starting still takes the clean path.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let datapath = Datapath::start(&config, &pin_dir)?;
    let mut nat = datapath.nat_maps()?;
    let timeouts = config.conntrack.timeouts;
    let mut gc = tokio::time::interval(Duration::from_secs(args.gc_interval.max(1)));
    info!("running; Ctrl-C or SIGTERM stops");
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = gc.tick() => {
                match conntrack::collect_garbage(&mut nat, &timeouts, conntrack::monotonic_now_ns()) {
                    Ok(r) if r.flows + r.mappings > 0 => {
                        info!("expired {} flow(s), released {} mapping(s)", r.flows, r.mappings);
                    }
                    Ok(_) => {}
                    Err(e) => warn!("conntrack expiry pass failed: {:#}", anyhow::Error::from(e)),
                }
            }
        }
    }
    drop(nat);
    if let Err(e) = datapath.stop() {
        error!("stopping: {:#}", anyhow::Error::from(e));
        return Err(anyhow::anyhow!("stopping failed"));
    }
    info!("detached and unpinned");
    Ok(())
}

fn conntrack_list(args: ConntrackListArgs, pin_dir: &std::path::Path) -> Result<()> {
    let timeouts = match &args.config {
        Some(path) => Config::load(path)?.conntrack.timeouts,
        None => Timeouts::default(),
    };
    let nat = NatMaps::open_pinned(pin_dir)?;
    let rows = conntrack::list(&nat, &timeouts)?;
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
        print!("{}", table::render(&conntrack::FlowRow::HEADER, &cells));
        println!("{} flow(s)", rows.len());
    }
    Ok(())
}

fn nat_list(args: OutputArgs, pin_dir: &std::path::Path) -> Result<()> {
    let rules = maps::NatRules::read(pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        print!("{}", rules.render());
    }
    Ok(())
}

fn stats(args: OutputArgs, pin_dir: &std::path::Path) -> Result<()> {
    let stats = maps::read_stats(pin_dir)?;
    if args.json {
        let counters: serde_json::Map<String, serde_json::Value> = stats
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        let json = serde_json::json!({ "counters": counters, "port_probes": stats.port_probes });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let rows: Vec<Vec<String>> = stats
            .counters
            .iter()
            .map(|(k, v)| vec![(*k).to_owned(), v.to_string()])
            .collect();
        print!("{}", table::render(&["COUNTER", "VALUE"], &rows));
        let probes: Vec<String> = stats
            .port_probes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        println!(
            "port allocations by probes needed (last bucket = failed): {}",
            if probes.is_empty() {
                "none".to_owned()
            } else {
                probes.join(" ")
            }
        );
    }
    Ok(())
}
