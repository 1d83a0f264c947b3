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
    /// Attach the datapath (or adopt the one a previous daemon left pinned),
    /// fill its maps, expire flows. Ctrl-C or SIGTERM stops the daemon; the
    /// datapath stays attached until `netbpf down`.
    Daemon(DaemonArgs),
    /// Remove the pinned datapath: detach every program and drop the maps
    /// (and with them every flow). Stop the daemon first.
    Down,
    /// Publish a port on the running datapath, or remove one (not written
    /// to the config file: a SIGHUP reload or restart applies the file).
    Publish {
        #[command(subcommand)]
        command: PublishCommand,
    },
    /// Masquerade a source CIDR on the running datapath, or stop.
    Masquerade {
        #[command(subcommand)]
        command: MasqueradeCommand,
    },
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
    /// Show the datapath's counters (drops by reason, translations, port
    /// probes), table fill and port-range use.
    Stats(StatsArgs),
    /// Say what the running datapath would do with a packet, and why.
    Explain(ExplainArgs),
    /// Routed containers (per-container-IP routing): list, add, del.
    Containers {
        #[command(subcommand)]
        command: ContainersCommand,
    },
    /// The neighbour map (next hops on the uplink) the routing uses.
    Neigh {
        #[command(subcommand)]
        command: NeighCommand,
    },
    /// Run the self-contained lab demo in network namespaces (what `cargo xtask run` starts).
    Lab(LabArgs),
    /// Container routes across hosts over BGP (through BIRD): sessions and routes.
    Bgp {
        #[command(subcommand)]
        command: BgpCommand,
    },
    /// Turn another tool's NAT rules into netbpf config (printed on stdout).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Read an `iptables-save` dump (its nat table: MASQUERADE, SNAT, DNAT,
    /// Docker's chains) and print the equivalent netbpf config. A rule it
    /// cannot express exactly is an error quoting the rule and its line.
    /// Rules of the other tables (filter's DOCKER-USER, ...) are not
    /// imported: each is named in a warning on stderr.
    IptablesSave(ImportArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The dump; standard input when absent or `-`.
    file: Option<PathBuf>,
    /// The uplink interface, when the rules do not name it (Docker's
    /// `! -o docker0` does not).
    #[arg(long)]
    uplink: Option<String>,
    /// Skip rules that cannot be expressed, with a warning each on stderr.
    #[arg(long)]
    skip_unsupported: bool,
    /// Take conntrack timeouts from the kernel's nf_conntrack_*_timeout
    /// sysctls (of this network namespace) instead of netbpf's RFC
    /// defaults.
    #[arg(long)]
    adopt_sysctl_timeouts: bool,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Seconds between conntrack expiry passes.
    #[arg(long, default_value_t = 5)]
    gc_interval: u64,
    /// Write NAT session events (mapping created / expired, TCP flow
    /// closed) as JSON lines to this file (appended), or `-` for standard
    /// output. Off when not given.
    #[arg(long)]
    events: Option<PathBuf>,
    /// cgroup v2 directory whose processes (in this network namespace)
    /// reach published ports through socket hooks, like Docker's OUTPUT
    /// chain DNAT; `auto` = the root of the cgroup v2 mount, `none`
    /// disables.
    #[arg(long, default_value = "auto")]
    cgroup: String,
}

#[derive(Debug, Subcommand)]
enum ConntrackCommand {
    /// One line per flow: proto, inside, outside, remote, state, age, packets/bytes.
    List(ConntrackListArgs),
    /// Which inside addresses hold the most outside ports, per destination.
    Top(ConntrackTopArgs),
}

#[derive(Debug, Args)]
struct ConntrackTopArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Show at most this many rows.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Only this protocol (tcp, udp, icmp).
    #[arg(long)]
    proto: Option<String>,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Refresh in place every --interval seconds until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1)]
    interval: u64,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// tcp, udp or icmp (for icmp the ports are echo identifiers).
    proto: String,
    /// Source ADDR:PORT.
    src: String,
    /// Destination ADDR:PORT.
    dst: String,
    /// The interface the packet arrives on: the uplink means from outside,
    /// a routed container's veth from that container, any other from a
    /// (masqueraded) container. Default: guessed from the addresses.
    #[arg(long = "in", value_name = "IFACE")]
    in_iface: Option<String>,
    /// TCP: whether the packet is an opening SYN (`syn`) or anything else
    /// (`ack`: mid-connection, SYN-ACK, FIN, RST).
    #[arg(long, default_value = "syn", value_parser = ["syn", "ack"])]
    tcp_flags: String,
    /// IP TTL of the packet as it arrives (routing forwards only above 1).
    #[arg(long, default_value_t = netbpf::explain::DEFAULT_TTL)]
    ttl: u8,
    /// The packet is an ICMP error (PROTO must be icmp; SRC and DST are the
    /// outer addresses, ports ignored): dest-unreach (3), time-exceeded
    /// (11) or parameter-problem (12). Needs --quoted.
    #[arg(long, value_name = "TYPE", requires = "quoted")]
    icmp_error: Option<String>,
    /// The packet the ICMP error quotes: PROTO SRC:PORT DST:PORT (for icmp,
    /// an echo request whose SRC port is its identifier).
    #[arg(long, num_args = 3, value_names = ["PROTO", "SRC:PORT", "DST:PORT"], requires = "icmp_error")]
    quoted: Option<Vec<String>>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
    /// Only flows of this protocol (tcp, udp, icmp).
    #[arg(long)]
    proto: Option<String>,
    /// Only flows with this address on any side (inside, outside, remote).
    #[arg(long)]
    addr: Option<std::net::Ipv4Addr>,
    /// Only flows with this port on any side (ICMP: echo identifier).
    #[arg(long)]
    port: Option<u16>,
    /// Only flows in this state (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
    /// CLOSING, RESET, UDP, ICMP).
    #[arg(long)]
    state: Option<String>,
    /// Output format: `table`, or `conntrack` for lines shaped like `conntrack -L`.
    #[arg(long, default_value = "table", value_parser = ["table", "conntrack"], conflicts_with = "json")]
    format: String,
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
    /// Run the multi-host lab instead: this many container hosts (2-9) on
    /// one segment, carrying each other's container routes over BGP with
    /// BIRD (docs/multi-host.md).
    #[arg(long, default_value_t = 1)]
    hosts: usize,
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

impl Command {
    /// Whether the command shows what the pinned datapath holds.
    fn reads_the_datapath(&self) -> bool {
        matches!(
            self,
            Command::Conntrack { .. }
                | Command::Explain(_)
                | Command::Nat { .. }
                | Command::Stats(_)
                | Command::Containers {
                    command: ContainersCommand::List(_),
                }
                | Command::Neigh { .. }
        )
    }
}

/// Warns (stderr) when the pinned datapath is attached to no uplink, so
/// that what a read command shows from its maps is not taken for a
/// running datapath.
fn warn_if_detached(pin_dir: &std::path::Path) {
    match netbpf::pins::detached_warning(pin_dir) {
        Ok(Some(text)) => warn!("{text}"),
        Ok(None) => {}
        Err(e) => warn!(
            "cannot tell whether the pinned datapath is attached: {:#}",
            anyhow::Error::from(e)
        ),
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
    if cli.command.reads_the_datapath() {
        warn_if_detached(&cli.pin_dir);
    }
    match cli.command {
        Command::Daemon(args) => daemon(args, cli.pin_dir).await,
        Command::Conntrack {
            command: ConntrackCommand::List(args),
        } => conntrack_list(args, &cli.pin_dir),
        Command::Conntrack {
            command: ConntrackCommand::Top(args),
        } => conntrack_top(args, &cli.pin_dir),
        Command::Explain(args) => explain(args, &cli.pin_dir),
        Command::Nat {
            command: NatCommand::List(args),
        } => nat_list(args, &cli.pin_dir),
        Command::Stats(args) => stats(args, &cli.pin_dir).await,
        Command::Containers { command } => containers(command, &cli.pin_dir),
        Command::Neigh {
            command: NeighCommand::List(args),
        } => neigh_list(args, &cli.pin_dir),
        Command::Publish { command } => publish(command, &cli.pin_dir),
        Command::Masquerade { command } => masquerade(command, &cli.pin_dir),
        Command::Down => {
            let report = netbpf::datapath::down(&cli.pin_dir)?;
            println!(
                "netbpf down: detached {} program link(s), removed {} map(s) from {}",
                report.links,
                report.maps,
                cli.pin_dir.display()
            );
            Ok(())
        }
        Command::Bgp {
            command: BgpCommand::Status(args),
        } => bgp_status(args),
        Command::Lab(args) if args.hosts > 1 => {
            let exe = std::env::current_exe().context("finding the netbpf binary")?;
            netbpf::multihost::run_demo(&exe, &args.prefix, args.hosts, args.once).await
        }
        Command::Lab(args) => {
            let exe = std::env::current_exe().context("finding the netbpf binary")?;
            netbpf::lab::run_demo(&exe, &args.prefix, args.once).await
        }
        Command::Import {
            command: ImportCommand::IptablesSave(args),
        } => import_iptables_save(args),
    }
}

fn import_iptables_save(args: ImportArgs) -> Result<()> {
    use netbpf::import;
    let text = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
    };
    let timeouts = if args.adopt_sysctl_timeouts {
        Some(import::read_sysctl_timeouts(std::path::Path::new(
            "/proc/sys/net/netfilter",
        ))?)
    } else {
        None
    };
    let imported = import::import_iptables_save(
        &text,
        &import::ImportOptions {
            uplink: args.uplink,
            skip_unsupported: args.skip_unsupported,
            timeouts,
        },
    )?;
    for w in &imported.skipped {
        warn!("{w}");
    }
    for w in &imported.dropped {
        warn!("{w}");
    }
    for w in &imported.config.warnings {
        warn!("imported config: {w}");
    }
    print!("{}", imported.toml);
    Ok(())
}

async fn daemon(args: DaemonArgs, pin_dir: PathBuf) -> Result<()> {
    // First, before the warnings it explains (no cgroup v2 mount, bpffs
    // mounted): under `ip netns exec` neither pins nor cgroup hooks work.
    let foreign_sys = netbpf::mountns::foreign_sys();
    if let Some(foreign) = &foreign_sys {
        warn!("{}", foreign.warning(&pin_dir));
    }
    let config = Config::load(&args.config)?;
    config.log_warnings();
    // iptables NAT rules left in place that translate the same traffic.
    for w in netbpf::coexist::check_iptables(&config) {
        warn!("{w}");
    }
    // Another daemon on these pins is the first thing to report (before
    // the metrics port it would also hold); the datapath takes the lock for
    // good when it starts.
    drop(netbpf::pins::DaemonLock::acquire(&pin_dir)?);
    // Register signal handlers before attaching, so a signal that arrives
    // while starting still takes the clean path.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    // Bound before attaching: an unusable address changes nothing.
    let metrics_listener = netbpf::metrics::bind(config.metrics.address).await?;
    // Likewise an events file that cannot be opened.
    let events_sink = match &args.events {
        Some(path) => Some((
            path.clone(),
            netbpf::events::open_sink(path)
                .with_context(|| format!("--events {}", path.display()))?,
        )),
        None => None,
    };
    let options = netbpf::datapath::Options {
        cgroup: match args.cgroup.as_str() {
            "none" => None,
            "auto" => {
                let found = netbpf::datapath::cgroup2_mount();
                if found.is_none() {
                    let why = if foreign_sys.is_some() {
                        " (this process's /sys is not the host's: see above)"
                    } else {
                        ""
                    };
                    warn!(
                        "no cgroup v2 mount{why}: published ports are not reachable from the host's own sockets"
                    );
                }
                found
            }
            path => Some(PathBuf::from(path)),
        },
    };
    let mut datapath = Datapath::start_with(&config, &pin_dir, &options)?;
    let mut routing_sync = tokio::time::interval(netbpf::containers::SYNC_INTERVAL);
    // [bgp]: keep BIRD's config in step with the routed containers.
    let mut bgp = match &config.bgp {
        Some(b) => {
            let own = netbpf::bgp::own_networks(&config, &datapath.resolved.uplink_networks);
            Some(netbpf::bgp::BgpSync::start(b, own, &pin_dir)?)
        }
        None => None,
    };
    let mut nat = datapath.nat_maps()?;
    netbpf::events::set_enabled(&pin_dir, args.events.is_some())?;
    let events = match events_sink {
        Some((path, sink)) => {
            let reader = netbpf::events::spawn_reader(&pin_dir, sink.clone())?;
            info!("writing NAT session events to {}", path.display());
            Some((sink, reader))
        }
        None => None,
    };
    let metrics = netbpf::metrics::spawn(metrics_listener, pin_dir.clone());
    let timeouts = config.conntrack.timeouts;
    let capacity = config.conntrack.capacity;
    let mut gc = tokio::time::interval(Duration::from_secs(args.gc_interval.max(1)));
    let mut orphans = conntrack::Orphans::new();
    info!("running; Ctrl-C or SIGTERM stops");
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => reload_containers(&mut datapath, &args.config),
            _ = routing_sync.tick() => {
                if let Err(e) = datapath.sync_routing() {
                    warn!("routing: sync failed: {:#}", anyhow::Error::from(e));
                }
                if let Some(b) = bgp.as_mut() {
                    b.sync();
                }
            }
            _ = gc.tick() => {
                match conntrack::collect_garbage(&mut nat, &timeouts, conntrack::monotonic_now_ns(), &mut orphans) {
                    Ok(r) if r.flows + r.mappings > 0 => {
                        info!("expired {} flow(s), released {} mapping(s)", r.flows, r.mappings);
                        if let Some((sink, _)) = &events {
                            netbpf::events::write_gc(sink, &r);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!("conntrack expiry pass failed: {:#}", anyhow::Error::from(e)),
                }
                match netbpf::earlydrop::relieve(&mut nat, capacity) {
                    Ok(0) => {}
                    Ok(n) => warn!("conntrack table nearly full: dropped {n} half-open flow(s)"),
                    Err(e) => warn!("conntrack early drop failed: {:#}", anyhow::Error::from(e)),
                }
            }
        }
    }
    metrics.abort();
    drop(nat);
    if let Err(e) = datapath.stop() {
        error!("stopping: {:#}", anyhow::Error::from(e));
        return Err(anyhow::anyhow!("stopping failed"));
    }
    if foreign_sys.is_some() {
        warn!(
            "daemon stopped; its pins in {} were in a bpffs only this process saw, and go with it",
            pin_dir.display()
        );
        return Ok(());
    }
    info!(
        "daemon stopped; the datapath stays attached and keeps its flows (pinned in {}); `netbpf down` removes it",
        pin_dir.display()
    );
    Ok(())
}

fn conntrack_list(args: ConntrackListArgs, pin_dir: &std::path::Path) -> Result<()> {
    let timeouts = match &args.config {
        Some(path) => Config::load(path)?.conntrack.timeouts,
        None => Timeouts::default(),
    };
    let filter = conntrack::FlowFilter {
        proto: args.proto.as_deref().map(parse_proto).transpose()?,
        addr: args.addr,
        port: args.port,
        state: match &args.state {
            Some(name) => Some(conntrack::FlowState::parse(name).ok_or_else(|| {
                let names: Vec<&str> = conntrack::FlowState::ALL.iter().map(|s| s.name()).collect();
                anyhow::anyhow!("--state {name:?}: expected one of {}", names.join(", "))
            })?),
            None => None,
        },
    };
    let nat = NatMaps::open_pinned(pin_dir)?;
    let mut rows = conntrack::list(&nat, &timeouts)?;
    rows.retain(|r| filter.matches(r));
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if args.format == "conntrack" {
        for r in &rows {
            println!("{}", r.conntrack_line());
        }
        eprintln!("netbpf: {} flow entries have been shown.", rows.len());
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
        print!("{}", table::render(&conntrack::FlowRow::HEADER, &cells));
        println!("{} flow(s)", rows.len());
    }
    Ok(())
}

fn parse_proto(name: &str) -> Result<u8> {
    conntrack::parse_proto(name)
        .ok_or_else(|| anyhow::anyhow!("{name:?} is not a protocol (tcp, udp, icmp)"))
}

fn conntrack_top(args: ConntrackTopArgs, pin_dir: &std::path::Path) -> Result<()> {
    let nat = NatMaps::open_pinned(pin_dir)?;
    let mut rows = conntrack::list(&nat, &Timeouts::default())?;
    if let Some(p) = &args.proto {
        let filter = conntrack::FlowFilter {
            proto: Some(parse_proto(p)?),
            ..Default::default()
        };
        rows.retain(|r| filter.matches(r));
    }
    let top = conntrack::top(&rows, args.limit);
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&top)?);
    } else {
        let cells: Vec<Vec<String>> = top.iter().map(|r| r.cells()).collect();
        print!("{}", table::render(&conntrack::TopRow::HEADER, &cells));
    }
    Ok(())
}

fn explain(args: ExplainArgs, pin_dir: &std::path::Path) -> Result<()> {
    use netbpf::explain::{self as ex, Direction, Query, TcpFlags};
    let proto = parse_proto(&args.proto)?;
    let endpoint = |what: &str, s: &str, proto: u8| -> Result<std::net::SocketAddrV4> {
        if let Ok(a) = s.parse() {
            return Ok(a);
        }
        // ICMP endpoints may leave the port (identifier) out.
        match s.parse::<std::net::Ipv4Addr>() {
            Ok(ip) if proto == netbpf_common::proto::ICMP => Ok(std::net::SocketAddrV4::new(ip, 0)),
            _ => Err(anyhow::anyhow!("{what} {s:?}: expected IPV4:PORT")),
        }
    };
    let icmp_error = match (&args.icmp_error, &args.quoted) {
        (Some(t), Some(quoted)) => {
            if proto != netbpf_common::proto::ICMP {
                anyhow::bail!("--icmp-error: PROTO must be icmp (the error's own protocol)");
            }
            let icmp_type = ex::ICMP_ERROR_TYPES
                .iter()
                .find(|(n, name)| *name == t.as_str() || n.to_string() == *t)
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--icmp-error {t:?}: expected dest-unreach (3), time-exceeded (11) or parameter-problem (12)"
                    )
                })?;
            let [qp, qs, qd] = quoted.as_slice() else {
                anyhow::bail!("--quoted: expected PROTO SRC:PORT DST:PORT");
            };
            let qproto = parse_proto(qp)?;
            Some(ex::IcmpError {
                icmp_type,
                quoted: ex::Quoted {
                    proto: qproto,
                    src: endpoint("--quoted SRC", qs, qproto)?,
                    dst: endpoint("--quoted DST", qd, qproto)?,
                },
            })
        }
        _ => None,
    };
    let iif = match &args.in_iface {
        Some(iface) => Some(netbpf::netdev::ifindex(iface)?),
        None => None,
    };
    let query = Query {
        proto,
        src: endpoint("SRC", &args.src, proto)?,
        dst: endpoint("DST", &args.dst, proto)?,
        tcp: if args.tcp_flags == "ack" {
            TcpFlags::NotSyn
        } else {
            TcpFlags::Syn
        },
        ttl: args.ttl,
        iif,
        icmp_error,
    };
    let live = ex::LiveMaps::open_pinned(pin_dir)?;
    let rules = ex::Rules::read(pin_dir, &live.nat)?;
    let direction = match &args.in_iface {
        None => ex::infer_direction(&rules, &live, &query),
        Some(iface) => {
            if ex::is_uplink(&rules, iface)? {
                Direction::Ingress
            } else if iif.is_some_and(|i| ex::Lookup::container_if(&live, i).is_some()) {
                Direction::FromRoutedContainer
            } else {
                Direction::FromContainer
            }
        }
    };
    let explanation = ex::explain(&rules, &live, &query, direction);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{explanation}");
    }
    Ok(())
}

fn nat_list(args: OutputArgs, pin_dir: &std::path::Path) -> Result<()> {
    let rules = netbpf::rows::NatRules::read(pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        print!("{}", rules.render());
    }
    Ok(())
}

async fn stats(args: StatsArgs, pin_dir: &std::path::Path) -> Result<()> {
    let read = || -> Result<(maps::Stats, netbpf::occupancy::Occupancy)> {
        Ok((
            maps::read_stats(pin_dir)?,
            netbpf::occupancy::Occupancy::read(pin_dir)?,
        ))
    };
    if args.output.json {
        let (stats, occupancy) = read()?;
        let mut json = stats.to_json();
        json["tables"] = serde_json::to_value(&occupancy.tables)?;
        json["port_use"] = serde_json::to_value(&occupancy.ports)?;
        json["flow_states"] = serde_json::to_value(&occupancy.flow_states)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let render = |(stats, occupancy): (maps::Stats, netbpf::occupancy::Occupancy)| {
        format!("{}\n{}", stats.render(), occupancy.render())
    };
    if !args.watch {
        print!("{}", render(read()?));
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    print!("\x1b[2J");
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                let text = render(read()?);
                // Home, then each line over the old one, then clear the rest.
                let mut screen = String::from("\x1b[H");
                for line in text.lines() {
                    screen.push_str(line);
                    screen.push_str("\x1b[K\n");
                }
                screen.push_str("\x1b[J");
                print!("{screen}");
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
        }
    }
    Ok(())
}

/// SIGHUP: re-read the config and apply its `[[container]]` list (other
/// sections need a restart).
fn reload_containers(datapath: &mut Datapath, path: &std::path::Path) {
    info!("SIGHUP: reloading {}", path.display());
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(
                "SIGHUP: config not applied, nothing changed: {:#}",
                anyhow::Error::from(e)
            );
            return;
        }
    };
    config.log_warnings();
    if let Err(e) = datapath.reload_rules(&config) {
        error!(
            "SIGHUP: NAT rules not fully applied: {:#}",
            anyhow::Error::from(e)
        );
    } else {
        info!(
            "SIGHUP: {} masquerade rule(s), {} published port rule(s) applied; flows untouched",
            config.masquerade.len(),
            config.publish.len()
        );
    }
    match datapath.reload_containers(&config) {
        Ok((added, removed)) => info!("SIGHUP: {added} container(s) added, {removed} removed"),
        Err(e) => error!(
            "SIGHUP: containers not applied: {:#}",
            anyhow::Error::from(e)
        ),
    }
}

fn publish(command: PublishCommand, pin_dir: &std::path::Path) -> Result<()> {
    use netbpf::control;
    match command {
        PublishCommand::Add {
            proto,
            port,
            to,
            address,
        } => {
            let rule = netbpf::config::publish_entry(&proto, &port, &to, address)
                .map_err(control::ControlError::Invalid)?;
            control::publish_add(pin_dir, &rule)?;
            println!(
                "published {} {} → {}:{}",
                rule.proto, rule.port, rule.to_addr, rule.to_port
            );
        }
        PublishCommand::Del {
            proto,
            port,
            address,
        } => {
            let (proto, port, address) = netbpf::config::publish_key(&proto, &port, address)
                .map_err(control::ControlError::Invalid)?;
            control::publish_del(pin_dir, proto, port, address)?;
            println!("removed the published {proto} {port}");
        }
    }
    Ok(())
}

fn masquerade(command: MasqueradeCommand, pin_dir: &std::path::Path) -> Result<()> {
    use netbpf::control;
    match command {
        MasqueradeCommand::Add { source, ports, to } => {
            let rule = netbpf::config::masquerade_entry(&source, ports.as_deref())
                .map_err(control::ControlError::Invalid)?;
            let to = control::masquerade_add(pin_dir, &rule, to)?;
            println!("masquerading {} to {to}", rule.source);
        }
        MasqueradeCommand::Del { source } => {
            let rule = netbpf::config::masquerade_entry(&source, None)
                .map_err(control::ControlError::Invalid)?;
            control::masquerade_del(pin_dir, rule.source)?;
            println!("stopped masquerading {}", rule.source);
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum PublishCommand {
    /// Like a [[publish]] entry: `--proto tcp --port 8080 --to 10.77.0.2:4000`.
    Add {
        /// tcp or udp.
        #[arg(long)]
        proto: String,
        /// Host port or range "8000-8010".
        #[arg(long)]
        port: String,
        /// Container address:port (a range maps 1:1).
        #[arg(long)]
        to: String,
        /// Only answer on this host address.
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
    },
    /// Remove the rule with exactly this protocol, port (range) and address.
    Del {
        /// tcp or udp.
        #[arg(long)]
        proto: String,
        /// Host port or range, as added.
        #[arg(long)]
        port: String,
        /// The address it was bound to, if any.
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
    },
}

#[derive(Debug, Subcommand)]
enum MasqueradeCommand {
    /// Like a [[masquerade]] entry: `--source 10.78.0.0/24 [--ports A-B]`.
    Add {
        /// Source CIDR.
        #[arg(long)]
        source: String,
        /// SNAT source-port range.
        #[arg(long)]
        ports: Option<String>,
        /// Address to translate to (default: the one the datapath's other
        /// masquerade rules use, the uplink's).
        #[arg(long)]
        to: Option<std::net::Ipv4Addr>,
    },
    /// Remove the rule for exactly this source CIDR.
    Del {
        /// Source CIDR, as added.
        #[arg(long)]
        source: String,
    },
}

#[derive(Debug, Subcommand)]
enum ContainersCommand {
    /// Routed containers: address, veth, MACs, whether the daemon attached to the veth.
    List(OutputArgs),
    /// Route a container's own IP on the running daemon (not written to the config).
    Add(ContainerAddArgs),
    /// Stop routing a container's IP on the running daemon.
    Del(ContainerDelArgs),
}

#[derive(Debug, Args)]
struct ContainerAddArgs {
    /// The container's IPv4 address.
    #[arg(long)]
    address: std::net::Ipv4Addr,
    /// Host side of the container's veth.
    #[arg(long)]
    interface: String,
}

#[derive(Debug, Args)]
struct ContainerDelArgs {
    /// The container's IPv4 address.
    #[arg(long)]
    address: std::net::Ipv4Addr,
}

#[derive(Debug, Subcommand)]
enum BgpCommand {
    /// BIRD's BGP sessions, the routes this host announces and those it
    /// learned, from BIRD's control socket.
    Status(BgpStatusArgs),
}

#[derive(Debug, Args)]
struct BgpStatusArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// BIRD's control socket (default: `[bgp] socket` of --config, else
    /// /run/bird/bird.ctl).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// netbpf config file whose `[bgp] socket` to use.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn bgp_status(args: BgpStatusArgs) -> Result<()> {
    let socket = match (&args.socket, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => match Config::load(path)?.bgp {
            Some(b) => b.socket,
            None => anyhow::bail!("{}: no [bgp] table", path.display()),
        },
        (None, None) => PathBuf::from(netbpf::config::DEFAULT_BIRD_SOCKET),
    };
    let status = netbpf::bgp::status(&socket)?;
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum NeighCommand {
    /// Next hops on the uplink and their MACs, as the datapath holds them.
    List(OutputArgs),
}

fn containers(command: ContainersCommand, pin_dir: &std::path::Path) -> Result<()> {
    use netbpf::containers::{self as c, ContainerRow};
    match command {
        ContainersCommand::List(args) => {
            let rows = c::list(pin_dir)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let cells: Vec<Vec<String>> = rows.iter().map(ContainerRow::cells).collect();
                print!("{}", table::render(&ContainerRow::HEADER, &cells));
                println!("{} routed container(s)", rows.len());
            }
        }
        ContainersCommand::Add(args) => {
            let row = c::add(pin_dir, args.address, &args.interface)?;
            println!(
                "routing {} via {} (container MAC {})",
                row.address, row.interface, row.mac
            );
        }
        ContainersCommand::Del(args) => {
            c::del(pin_dir, args.address)?;
            println!("no longer routing {}", args.address);
        }
    }
    Ok(())
}

fn neigh_list(args: OutputArgs, pin_dir: &std::path::Path) -> Result<()> {
    use netbpf::neigh::{self, NeighRow};
    let rows = neigh::list(pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(NeighRow::cells).collect();
        print!("{}", table::render(&NeighRow::HEADER, &cells));
        println!("{} neighbour(s)", rows.len());
    }
    Ok(())
}
