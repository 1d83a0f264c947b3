//! Convergence on changes, measured in a running lab (`netbpf lab --hosts
//! N` and the bench's `bgp` part): how long a new container on host 1
//! takes to become reachable from every other host, and how long a removed
//! one takes to leave every other host's routing table. BIRD's start is
//! not part of it: the lab has converged before the first round.
//!
//! One round:
//! 1. A container is wired on host 1 (namespace, veth, a TCP listener):
//!    the container runtime's part, not timed.
//! 2. **Add.** The clock starts, then `netbpf containers add` runs on
//!    host 1. From a container on every other host, a thread tries a TCP
//!    connection to the new container every 10 ms (each attempt given up
//!    after 50 ms, [`PROBE_TIMEOUT`]); the host answers
//!    "unreachable" at once while it has no route (the lab's hosts send
//!    ICMP errors without rate limit, `net.ipv4.icmp_ratelimit = 0`, so a
//!    failed try costs microseconds). A host's figure is the moment its
//!    connection is accepted; `ip monitor route` on each host also gives
//!    the moment BIRD installed the route.
//! 3. **Remove.** The clock starts again, then `netbpf containers del`
//!    runs; a host's figure is the moment `ip monitor route` reports the
//!    route deleted.
//!
//! Before each timed command the round waits a pseudo-random part of the
//! daemon's 250 ms routing sync, so that the rounds sample every phase of
//! that poll instead of locking onto one. The round's figure is the
//! slowest host's.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{MultiHost, Topology, container_addr};
use crate::{
    lab::{LabError, io_err},
    netns::Netns,
};

/// Port of the new container's listener.
const PROBE_PORT: u16 = 7070;

/// How long one connection attempt of a probe waits. An attempt whose
/// SYN or SYN-ACK is lost while the route is half set up (the other hosts
/// have it, host 1's program is not attached yet) is abandoned after this
/// and a new one made: the figure is within this much (plus the 10 ms
/// pause) of the first moment a fresh connection works.
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// The daemon's routing sync period (`containers::SYNC_INTERVAL`, the
/// poll that notices a change): each timed command waits a pseudo-random
/// part of it first, so that rounds do not lock onto the same phase of
/// the poll (they would: a round ends on a tick, and the next one starts
/// a fixed time later).
const PHASE_SPREAD: Duration = crate::containers::SYNC_INTERVAL;

/// How long a round may take before it fails.
const ROUND_BOUND: Duration = Duration::from_secs(30);

/// First container index of the measured ones (`10.10.1.200` on).
const FIRST_INDEX: usize = 200;

/// One add and one removal, in milliseconds from the command's start.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The container added and removed.
    pub address: Ipv4Addr,
    /// Until every other host reached it over TCP (the slowest host).
    pub reachable_ms: f64,
    /// Until every other host's kernel had BIRD's route to it.
    pub route_installed_ms: f64,
    /// Until it was gone from every other host's kernel.
    pub withdrawn_ms: f64,
    /// `netbpf containers add` itself (it returns once the daemon attached
    /// the veth's program).
    pub add_command_ms: f64,
}

/// The rounds of one lab, with their medians and maxima.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// Hosts in the lab.
    pub hosts: usize,
    /// How they peer (`full-mesh`, `reflector`, `host-reflector`).
    pub topology: &'static str,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Median of `reachable_ms`.
    pub reachable_median_ms: f64,
    /// Largest `reachable_ms`.
    pub reachable_max_ms: f64,
    /// Median of `route_installed_ms`.
    pub route_installed_median_ms: f64,
    /// Median of `withdrawn_ms`.
    pub withdrawn_median_ms: f64,
    /// Largest `withdrawn_ms`.
    pub withdrawn_max_ms: f64,
}

impl Convergence {
    /// The figures and every round, for the lab's output.
    pub fn render(&self) -> String {
        let mut s = format!(
            "  {} hosts ({}), {} round(s): new container reachable from every other host in \
             {:.0} ms (median; max {:.0} ms), removed one gone from every other host in {:.0} ms \
             (median; max {:.0} ms)\n",
            self.hosts,
            self.topology,
            self.rounds.len(),
            self.reachable_median_ms,
            self.reachable_max_ms,
            self.withdrawn_median_ms,
            self.withdrawn_max_ms
        );
        for r in &self.rounds {
            s.push_str(&format!(
                "    {}: `containers add` returned after {:.0} ms, route in every kernel at {:.0} ms, \
                 reachable at {:.0} ms; withdrawn {:.0} ms after `containers del`\n",
                r.address, r.add_command_ms, r.route_installed_ms, r.reachable_ms, r.withdrawn_ms
            ));
        }
        s
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn max(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(0.0, f64::max)
}

/// A route change one host's `ip monitor route` printed, and when.
struct RouteEvent {
    host: usize,
    at: Instant,
    deleted: bool,
    addr: Option<Ipv4Addr>,
}

/// `ip -4 monitor route` in every host's namespace, its lines timestamped
/// as they arrive. Killed on drop.
struct Monitors {
    children: Vec<Child>,
    events: Receiver<RouteEvent>,
}

impl Monitors {
    fn start(lab: &MultiHost) -> Result<Self, LabError> {
        let (tx, events) = mpsc::channel();
        let mut children = Vec::new();
        for h in &lab.hosts {
            let mut child = Command::new("ip")
                .args(["-n", h.ns.name(), "-4", "monitor", "route"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io_err("starting ip monitor route"))?;
            let Some(out) = child.stdout.take() else {
                return Err(LabError::Daemon("ip monitor has no stdout".into()));
            };
            children.push(child);
            let (tx, host) = (tx.clone(), h.index);
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let deleted = line.starts_with("Deleted ");
                    let addr = line
                        .trim_start_matches("Deleted ")
                        .split_whitespace()
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|a| a.parse().ok());
                    let event = RouteEvent {
                        host,
                        at: Instant::now(),
                        deleted,
                        addr,
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            });
        }
        // `ip monitor` subscribes as it starts; give it that moment.
        thread::sleep(Duration::from_millis(300));
        let monitors = Monitors { children, events };
        monitors.drain();
        Ok(monitors)
    }

    /// Forgets events so far.
    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits until every host of `hosts` reported `addr` added (or
    /// deleted); returns the last of those moments.
    fn wait(&self, hosts: &[usize], addr: Ipv4Addr, deleted: bool) -> Result<Instant, LabError> {
        let deadline = Instant::now() + ROUND_BOUND;
        let mut seen: Vec<(usize, Instant)> = Vec::new();
        while seen.len() < hosts.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.events.recv_timeout(left).map_err(|_| {
                LabError::Daemon(format!(
                    "{addr} not {} on every host within {ROUND_BOUND:?} (seen on hosts {:?})",
                    if deleted { "withdrawn" } else { "installed" },
                    seen.iter().map(|(h, _)| h).collect::<Vec<_>>()
                ))
            })?;
            if e.addr == Some(addr)
                && e.deleted == deleted
                && hosts.contains(&e.host)
                && !seen.iter().any(|(h, _)| *h == e.host)
            {
                seen.push((e.host, e.at));
            }
        }
        Ok(seen
            .iter()
            .map(|(_, at)| *at)
            .max()
            .unwrap_or_else(Instant::now))
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `netbpf ARGS` on host 1 of `lab`, failing on a non-zero exit.
fn netbpf_on_host1(lab: &MultiHost, exe: &Path, args: &[&str]) -> Result<(), LabError> {
    let out = lab.hosts[0]
        .netbpf(exe)
        .args(args)
        .output()
        .map_err(io_err("running netbpf"))?;
    if !out.status.success() {
        return Err(LabError::Daemon(format!(
            "netbpf {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Measures `rounds` rounds on `lab`, which must be running and converged
/// (`exe` is the netbpf binary its daemons run).
pub fn measure(lab: &mut MultiHost, exe: &Path, rounds: usize) -> Result<Convergence, LabError> {
    if lab.hosts.len() < 2 || lab.hosts.iter().any(|h| h.containers.is_empty()) {
        return Err(LabError::Daemon(
            "convergence needs 2 hosts or more, each with a container".into(),
        ));
    }
    for h in &lab.hosts {
        h.ns.sysctl("net.ipv4.icmp_ratelimit=0")?;
    }
    let monitors = Monitors::start(lab)?;
    let mut out = Vec::new();
    for r in 0..rounds {
        out.push(round(lab, exe, &monitors, FIRST_INDEX + r)?);
    }
    let reach: Vec<f64> = out.iter().map(|r| r.reachable_ms).collect();
    let gone: Vec<f64> = out.iter().map(|r| r.withdrawn_ms).collect();
    Ok(Convergence {
        hosts: lab.hosts.len(),
        topology: topology_name(lab.topology),
        reachable_median_ms: median(reach.clone()),
        reachable_max_ms: max(reach.into_iter()),
        route_installed_median_ms: median(out.iter().map(|r| r.route_installed_ms).collect()),
        withdrawn_median_ms: median(gone.clone()),
        withdrawn_max_ms: max(gone.into_iter()),
        rounds: out,
    })
}

fn round(
    lab: &mut MultiHost,
    exe: &Path,
    monitors: &Monitors,
    index: usize,
) -> Result<Round, LabError> {
    let addr = container_addr(1, index);
    let prefix = lab.prefix.clone();
    let veth = lab.hosts[0]
        .wire_container(&prefix, index)?
        .host_veth
        .clone();
    let result = timed_round(lab, exe, monitors, addr, &veth);
    // Whatever happened, the container goes (its namespace with it).
    lab.hosts[0].unwire_container(addr);
    result
}

fn timed_round(
    lab: &MultiHost,
    exe: &Path,
    monitors: &Monitors,
    addr: Ipv4Addr,
    veth: &str,
) -> Result<Round, LabError> {
    let dst = SocketAddrV4::new(addr, PROBE_PORT);
    let Some(new) = lab.hosts[0].containers.iter().find(|c| c.addr == addr) else {
        return Err(LabError::Daemon(format!("container {addr} not wired")));
    };
    // Accepted by the kernel from the backlog: no accept() needed.
    let listener = new
        .ns
        .run(move || TcpListener::bind(dst))?
        .map_err(io_err(format!("listening on {dst}")))?;
    let others: Vec<usize> = lab.hosts[1..].iter().map(|h| h.index).collect();
    monitors.drain();

    thread::sleep(jitter());
    let start = Instant::now();
    let (add_command, installed, reachable) = thread::scope(|scope| {
        let probes: Vec<_> = lab.hosts[1..]
            .iter()
            .map(|h| {
                let ns = &h.containers[0].ns;
                scope.spawn(move || probe(ns, dst, start + ROUND_BOUND))
            })
            .collect();
        let added = netbpf_on_host1(
            lab,
            exe,
            &[
                "containers",
                "add",
                "--address",
                &addr.to_string(),
                "--interface",
                veth,
            ],
        );
        let add_command = start.elapsed();
        let installed = added.and_then(|()| monitors.wait(&others, addr, false));
        let mut reachable = Some(start);
        for p in probes {
            match (p.join(), reachable) {
                (Ok(Some(at)), Some(r)) => reachable = Some(r.max(at)),
                _ => reachable = None,
            }
        }
        (add_command, installed, reachable)
    });
    let installed = installed?;
    let reachable = reachable.ok_or_else(|| {
        LabError::Daemon(format!(
            "{addr} not reachable from every other host within {ROUND_BOUND:?}"
        ))
    })?;
    drop(listener);

    monitors.drain();
    thread::sleep(jitter());
    let start_del = Instant::now();
    netbpf_on_host1(
        lab,
        exe,
        &["containers", "del", "--address", &addr.to_string()],
    )?;
    let withdrawn = monitors.wait(&others, addr, true)?;
    Ok(Round {
        address: addr,
        reachable_ms: ms(reachable - start),
        route_installed_ms: ms(installed.saturating_duration_since(start)),
        withdrawn_ms: ms(withdrawn.saturating_duration_since(start_del)),
        add_command_ms: ms(add_command),
    })
}

/// A pause in `0..PHASE_SPREAD`, from the clock's nanoseconds (no need
/// for a real random source: only the phase against the poll matters).
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let spread = PHASE_SPREAD.as_millis().max(1) as u32;
    Duration::from_millis(u64::from(nanos / 1000 % spread))
}

/// From namespace `ns`, tries a TCP connection to `dst` (each attempt
/// waiting [`PROBE_TIMEOUT`] at most) every 10 ms until
/// one is accepted (returns when) or `deadline` passes.
fn probe(ns: &Netns, dst: SocketAddrV4, deadline: Instant) -> Option<Instant> {
    ns.run(move || {
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&SocketAddr::V4(dst), PROBE_TIMEOUT).is_ok() {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    })
    .ok()
    .flatten()
}

/// The name of a topology in the figures.
pub fn topology_name(t: Topology) -> &'static str {
    match t {
        Topology::FullMesh => "full-mesh",
        Topology::Reflector => "reflector",
        Topology::HostReflector => "host-reflector",
        Topology::Racks(_) => "racks",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_maxima() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
        assert_eq!(max([1.0, 7.0, 3.0].into_iter()), 7.0);
    }

    #[test]
    fn the_figures_render_with_every_round() {
        let round = Round {
            address: Ipv4Addr::new(10, 10, 1, 200),
            reachable_ms: 244.4,
            route_installed_ms: 230.0,
            withdrawn_ms: 215.0,
            add_command_ms: 265.0,
        };
        let c = Convergence {
            hosts: 10,
            topology: topology_name(Topology::Reflector),
            rounds: vec![round],
            reachable_median_ms: 244.4,
            reachable_max_ms: 244.4,
            route_installed_median_ms: 230.0,
            withdrawn_median_ms: 215.0,
            withdrawn_max_ms: 215.0,
        };
        let text = c.render();
        assert!(
            text.starts_with("  10 hosts (reflector), 1 round(s): new container reachable from every other host in 244 ms"),
            "{text}"
        );
        assert!(
            text.contains("10.10.1.200: `containers add` returned after 265 ms"),
            "{text}"
        );
    }
}
