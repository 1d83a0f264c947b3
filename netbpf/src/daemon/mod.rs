//! The daemon: start the datapath (or adopt the pinned one), then one
//! select loop until SIGTERM or SIGINT that reloads on SIGHUP
//! ([`reload`]), syncs routing and BGP, and expires conntrack. Owns the
//! order of the start-up checks and the loop; what each step does lives
//! in the module it calls (`datapath`, `conntrack`, `events`, `metrics`,
//! `bgp`).

mod error;
mod reload;

use std::{convert::Infallible, path::PathBuf, str::FromStr, time::Duration};

use log::{error, info, warn};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use error::DaemonError;
pub use reload::reload;

use crate::{
    bgp::{self, BgpSync},
    coexist,
    config::Config,
    conntrack, containers,
    datapath::{self, Datapath},
    docker::{self, DockerState},
    earlydrop, events, metrics, mountns, notify, owners, pins,
};

/// Which cgroup's sockets reach published ports through the socket hooks
/// (`netbpf daemon --cgroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupChoice {
    /// `auto`: the root of the cgroup v2 mount, if there is one.
    Auto,
    /// `none`: leave host sockets alone.
    None,
    /// This cgroup v2 directory.
    Path(PathBuf),
}

impl FromStr for CgroupChoice {
    type Err = Infallible;

    /// `auto`, `none`, or any other text as a path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => CgroupChoice::Auto,
            "none" => CgroupChoice::None,
            path => CgroupChoice::Path(PathBuf::from(path)),
        })
    }
}

/// How the daemon runs (`netbpf daemon`'s flags).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The TOML config file (read at start and on SIGHUP).
    pub config: PathBuf,
    /// Time between conntrack expiry passes.
    pub gc_interval: Duration,
    /// Where to write NAT session events (`-` for standard output).
    pub events: Option<PathBuf>,
    /// Which cgroup's sockets reach published ports.
    pub cgroup: CgroupChoice,
    /// Follow the dockerd at this socket (`--docker`), whatever the
    /// config's `[docker]` says.
    pub docker: Option<PathBuf>,
}

fn handler(kind: SignalKind, name: &'static str) -> Result<Signal, DaemonError> {
    signal(kind).map_err(|source| DaemonError::Signal {
        signal: name,
        source,
    })
}

/// The cgroup to attach the socket hooks to; warns when `auto` finds no
/// cgroup v2 mount (saying why when this process's /sys is not the host's).
fn cgroup(choice: &CgroupChoice, foreign_sys: bool) -> Option<PathBuf> {
    match choice {
        CgroupChoice::None => None,
        CgroupChoice::Path(path) => Some(path.clone()),
        CgroupChoice::Auto => {
            let found = datapath::cgroup2_mount();
            if found.is_none() {
                let why = if foreign_sys {
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
    }
}

/// Runs the daemon on the pins in `pin_dir` until SIGTERM or SIGINT. The
/// datapath stays attached when it returns.
pub async fn run(options: &DaemonOptions, pin_dir: PathBuf) -> Result<(), DaemonError> {
    // First, before the warnings it explains (no cgroup v2 mount, bpffs
    // mounted): under `ip netns exec` neither pins nor cgroup hooks work.
    let foreign_sys = mountns::foreign_sys();
    if let Some(foreign) = &foreign_sys {
        warn!("{}", foreign.warning(&pin_dir));
    }
    let config = Config::load(&options.config)?;
    config.log_warnings();
    // iptables NAT rules left in place that translate the same traffic.
    for w in coexist::check_iptables(&config) {
        warn!("{w}");
    }
    // Another daemon on these pins is the first thing to report (before
    // the metrics port it would also hold); the datapath takes the lock for
    // good when it starts.
    drop(pins::DaemonLock::acquire(&pin_dir)?);
    // Register signal handlers before attaching, so a signal that arrives
    // while starting still takes the clean path.
    let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = handler(SignalKind::hangup(), "SIGHUP")?;
    // Bound before attaching: an unusable address changes nothing.
    let metrics_listener = metrics::bind(config.metrics.address).await?;
    // Likewise an events file that cannot be opened.
    let events_sink = match &options.events {
        Some(path) => Some((
            path.clone(),
            events::open_sink(path).map_err(|source| DaemonError::Events {
                path: path.clone(),
                source,
            })?,
        )),
        None => None,
    };
    let docker_socket = options
        .docker
        .clone()
        .or_else(|| config.docker.enabled.then(|| config.docker.socket.clone()));
    if docker_socket.is_none() {
        forget_docker(&pin_dir);
    }
    let attach = datapath::Options {
        cgroup: cgroup(&options.cgroup, foreign_sys.is_some()),
        dynamic_rules: docker_socket.is_some(),
    };
    let mut datapath = Datapath::start_with(&config, &pin_dir, &attach)?;
    register_config(&pin_dir, &config);
    if !attach.dynamic_rules {
        if let Err(e) = crate::control::isolation_set(&pin_dir, &[]) {
            warn!(
                "clearing Docker's network isolation: {:#}",
                anyhow::Error::from(e)
            );
        }
        if let Err(e) = datapath.sync_icc(&[]) {
            warn!(
                "clearing Docker's enable_icc=false ports: {:#}",
                anyhow::Error::from(e)
            );
        }
    }
    // Started after the datapath: each read of Docker's state is applied
    // by this loop, between signals.
    let mut docker_reads = docker_socket.map(|socket| {
        info!("following dockerd at {}", socket.display());
        docker::spawn(socket)
    });
    let mut routing_sync = tokio::time::interval(containers::SYNC_INTERVAL);
    // [bgp]: keep BIRD's config in step with the routed containers.
    let mut bgp = match &config.bgp {
        Some(b) => {
            let own = bgp::own_networks(&config, &datapath.resolved.uplink_networks);
            Some(BgpSync::start(b, own, &pin_dir)?)
        }
        None => None,
    };
    let mut nat = datapath.nat_maps()?;
    events::set_enabled(&pin_dir, options.events.is_some())?;
    let events = match events_sink {
        Some((path, sink)) => {
            let reader = events::spawn_reader(&pin_dir, sink.clone())?;
            info!("writing NAT session events to {}", path.display());
            Some((sink, reader))
        }
        None => None,
    };
    let metrics = metrics::spawn(metrics_listener, pin_dir.clone());
    let timeouts = config.conntrack.timeouts;
    let capacity = config.conntrack.capacity;
    let mut gc = tokio::time::interval(options.gc_interval.max(Duration::from_secs(1)));
    let mut orphans = conntrack::Orphans::new();
    let mut last_docker: Option<DockerState> = None;
    // Docker's refusals already logged, so that each is said once.
    let mut docker_told: Vec<String> = Vec::new();
    info!("running; Ctrl-C or SIGTERM stops");
    notify::tell(notify::READY);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                notify::tell(notify::RELOADING);
                if let Some(config) = reload(&mut datapath, &options.config) {
                    register_config(&pin_dir, &config);
                    // The config wins over Docker: what it now holds is
                    // refused to Docker, what it freed goes to Docker.
                    if let Some(state) = &last_docker {
                        apply_docker(&mut datapath, state, &mut docker_told);
                    }
                }
                notify::tell(notify::READY);
            }
            Some(state) = next_read(&mut docker_reads) => {
                apply_docker(&mut datapath, &state, &mut docker_told);
                last_docker = Some(state);
            }
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
                            events::write_gc(sink, &r);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!("conntrack expiry pass failed: {:#}", anyhow::Error::from(e)),
                }
                match earlydrop::relieve(&mut nat, capacity) {
                    Ok(0) => {}
                    Ok(n) => warn!("conntrack table nearly full: dropped {n} half-open flow(s)"),
                    Err(e) => warn!("conntrack early drop failed: {:#}", anyhow::Error::from(e)),
                }
            }
        }
    }
    notify::tell(notify::STOPPING);
    metrics.abort();
    drop(docker_reads);
    drop(nat);
    if let Err(e) = datapath.stop() {
        error!("stopping: {:#}", anyhow::Error::from(e));
        return Err(DaemonError::Stopping);
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

/// The next read of Docker's state, or never when not following Docker.
async fn next_read(
    reads: &mut Option<tokio::sync::mpsc::Receiver<DockerState>>,
) -> Option<DockerState> {
    match reads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies a read of Docker's state, saying what changed.
fn apply_docker(datapath: &mut Datapath, state: &DockerState, told: &mut Vec<String>) {
    let r = docker::apply(datapath, state, told);
    if r.added + r.removed + r.refused > 0 {
        info!(
            "docker: {} rule(s) added, {} removed, {} refused",
            r.added, r.removed, r.refused
        );
    }
}

/// Records the config's rules under owner `config` (for `netbpf nat list`).
fn register_config(pin_dir: &std::path::Path, config: &Config) {
    if let Err(e) = owners::write(
        pin_dir,
        owners::CONFIG_OWNER,
        &owners::config_entries(config),
    ) {
        warn!("recording the config's rules for `netbpf nat list`: {e}");
    }
}

/// Not following Docker this time: the rules an earlier run took from it
/// are not kept (filling the maps from the config removes them).
fn forget_docker(pin_dir: &std::path::Path) {
    match owners::read(pin_dir, docker::DOCKER_OWNER) {
        Ok(held) if !held.is_empty() => {
            warn!(
                "Docker is not followed (no [docker], no --docker): removing the {} rule(s) an earlier run took from it",
                held.len()
            );
            if let Err(e) = owners::write(pin_dir, docker::DOCKER_OWNER, &[]) {
                warn!("forgetting Docker's rules: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => warn!("Docker's earlier rules: {e}"),
    }
}
