//! What the router and flood benches read from the machine: CPU time by
//! kind (softirq, idle) per CPU, interface counters and MACs in a
//! namespace, and a trafgen run waited for (and stopped) on time.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::netns::Netns;

/// The router's CPU (receive processing is steered here) and the
/// generator's.
pub(crate) const ROUTER_CPU: usize = 1;

pub(crate) const GEN_CPU: usize = 0;

/// Total microseconds CPU `cpu` has spent in cpuidle states (None without
/// cpuidle).
pub(crate) fn idle_us(cpu: usize) -> Option<u64> {
    let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle");
    let mut total = 0u64;
    let mut found = false;
    for entry in fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path().join("time");
        if let Ok(text) = fs::read_to_string(&path) {
            total += text.trim().parse::<u64>().ok()?;
            found = true;
        }
    }
    found.then_some(total)
}

/// Softirq time of CPU `cpu` in seconds, from /proc/stat (USER_HZ units,
/// sampled at the scheduler tick: this kernel has no
/// CONFIG_IRQ_TIME_ACCOUNTING). Softirqs run by ksoftirqd count here too.
pub(crate) fn softirq_s(cpu: usize) -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&label))?;
    let ticks: u64 = line.split_whitespace().nth(7)?.parse().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A point on the CPUs' clocks.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    pub(crate) at: Instant,
    /// Router CPU's total cpuidle residency (µs).
    pub(crate) idle_us: Option<u64>,
    /// Softirq seconds of the router and the generator CPU.
    pub(crate) router_softirq: f64,
    pub(crate) gen_softirq: f64,
}

impl CpuMark {
    pub(crate) fn now() -> Self {
        Self {
            at: Instant::now(),
            idle_us: idle_us(ROUTER_CPU),
            router_softirq: softirq_s(ROUTER_CPU).unwrap_or(f64::NAN),
            gen_softirq: softirq_s(GEN_CPU).unwrap_or(f64::NAN),
        }
    }

    pub(crate) fn wall_s(&self, later: &CpuMark) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }

    /// Busy seconds of the router CPU (wall minus cpuidle residency): any
    /// work, ours or not.
    pub(crate) fn busy_s(&self, later: &CpuMark) -> f64 {
        let wall = self.wall_s(later);
        match (self.idle_us, later.idle_us) {
            (Some(a), Some(b)) => (wall - b.saturating_sub(a) as f64 / 1e6).clamp(0.0, wall),
            _ => f64::NAN,
        }
    }

    pub(crate) fn router_softirq_s(&self, later: &CpuMark) -> f64 {
        later.router_softirq - self.router_softirq
    }

    pub(crate) fn gen_softirq_s(&self, later: &CpuMark) -> f64 {
        later.gen_softirq - self.gen_softirq
    }
}

/// A counter from /sys/class/net/DEV/statistics inside `ns`.
pub(crate) fn netdev_counter(ns: &Netns, dev: &str, counter: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/{counter}");
    let out = ns.exec("cat", &[&path])?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("reading {path} in {}", ns.name()))
}

/// Packets the generator's interface sent or dropped (a full receive
/// backlog on the router drops at the veth).
pub(crate) fn sent_counter(ns: &Netns) -> Result<u64> {
    Ok(netdev_counter(ns, "eth0", "tx_packets")? + netdev_counter(ns, "eth0", "tx_dropped")?)
}

pub(crate) fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| anyhow!("bad MAC {text:?} of {dev} in {}", ns.name()))
}

pub(crate) fn hex_list(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits for a trafgen started in a namespace, stopping it (SIGINT, to our
/// own child by its pid: `ip netns exec` execs taskset, which execs
/// trafgen) once `deadline` passes; a failure it did not owe to that stop
/// is an error. Returns whether it had to be stopped.
pub(crate) fn wait_trafgen(
    mut child: std::process::Child,
    deadline: Instant,
    poll: Duration,
) -> Result<bool> {
    let mut stopped = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if !stopped && Instant::now() > deadline {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            stopped = true;
        }
        thread::sleep(poll);
    }
    let out = child.wait_with_output()?;
    if !out.status.success() && !stopped {
        bail!(
            "trafgen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stopped)
}
