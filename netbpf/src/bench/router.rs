//! Part 2: router CPU per packet, netbpf against iptables-nft, with trafgen in the lab.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    lab::{self, Lab},
    netns::Netns,
};

use super::{install::*, options::*, packets::*};

// ---------------------------------------------------------------------------
// Part 2: router cost

/// The router's CPU (receive processing is steered here) and the
/// generator's.
pub(crate) const ROUTER_CPU: usize = 1;

pub(crate) const GEN_CPU: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Plain,
    Iptables,
    Netbpf,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Iptables => "iptables-nft",
            Kind::Netbpf => "netbpf",
        }
    }
}

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

/// A trafgen packet: UDP from `src` (None: a random 198.18.0.0/16 address
/// and random source port per packet, so every packet is a new flow) to
/// `dst`, 64-byte frame.
pub(crate) fn trafgen_config(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Option<(Ipv4Addr, u16)>,
    dst: SocketAddrV4,
) -> String {
    let (saddr, sport) = match src {
        Some((a, p)) => (hex_list(&a.octets()), format!("c16({p})")),
        None => ("198, 18, drnd(2)".to_owned(), "drnd(2)".to_owned()),
    };
    // Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes payload = 60 (64 with FCS).
    format!(
        "{{\n  {dmac},\n  {smac},\n  c16(0x0800),\n\
         0x45, 0x00, c16(46), drnd(2), c16(0x4000), 64, 17, csumip(14, 33),\n\
         {saddr},\n  {daddr},\n\
         {sport}, c16({dport}), c16(26), csumudp(14, 34),\n\
         fill(0x42, 18)\n}}\n",
        dmac = hex_list(&dst_mac),
        smac = hex_list(&src_mac),
        daddr = hex_list(&dst.ip().octets()),
        dport = dst.port(),
    )
}

/// One traffic phase's result.
pub(crate) struct Phase {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    /// Router CPU softirq seconds in the window.
    pub(crate) softirq_s: f64,
    /// Its rate (s/s) in the idle window before.
    pub(crate) baseline_softirq_rate: f64,
    /// Generator CPU softirq seconds (RPS hand-off), for reference.
    pub(crate) gen_softirq_s: f64,
    /// Router CPU busy seconds (cpuidle), and its idle-window fraction.
    pub(crate) busy_s: f64,
    pub(crate) baseline_busy_frac: f64,
    pub(crate) wall_s: f64,
}

impl Phase {
    /// Router CPU ns per delivered packet: softirq time in the window minus
    /// the idle window's softirq rate over the same time.
    pub(crate) fn ns_per_packet(&self) -> f64 {
        let t = (self.softirq_s - self.baseline_softirq_rate * self.wall_s).max(0.0);
        if self.delivered == 0 {
            f64::NAN
        } else {
            t * 1e9 / self.delivered as f64
        }
    }

    /// The same from cpuidle residency (all work on the CPU): meaningful
    /// only when the CPU was mostly idle before.
    pub(crate) fn busy_ns_per_packet(&self) -> f64 {
        let busy = (self.busy_s - self.baseline_busy_frac * self.wall_s).max(0.0);
        if self.delivered == 0 {
            f64::NAN
        } else {
            busy * 1e9 / self.delivered as f64
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "delivered": self.delivered,
            "window_s": self.wall_s,
            "router_softirq_s": self.softirq_s,
            "baseline_softirq_rate": self.baseline_softirq_rate,
            "generator_softirq_s": self.gen_softirq_s,
            "router_busy_s": self.busy_s,
            "baseline_busy_fraction": self.baseline_busy_frac,
            "router_ns_per_packet": self.ns_per_packet(),
            "router_busy_ns_per_packet": self.busy_ns_per_packet(),
        })
    }
}

/// The lab, set up for one variant.
pub(crate) struct Rig {
    pub(crate) lab: Lab,
    pub(crate) dst: SocketAddrV4,
    pub(crate) host_mac: [u8; 6],
    pub(crate) out_mac: [u8; 6],
    pub(crate) install_s: f64,
}

pub(crate) fn build_rig(opts: &Options, kind: Kind, ports: u32) -> Result<Rig> {
    let prefix = format!("nbb-r-{}", std::process::id());
    let mut lab = Lab::build(&prefix, 1)?;
    let c1 = &lab.containers[0];
    // Receive processing of the host's uplink on the router CPU.
    lab.host.exec(
        "sh",
        &[
            "-c",
            &format!(
                "echo {:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus",
                1u64 << ROUTER_CPU
            ),
        ],
    )?;
    // The container drops what it receives, at the earliest netfilter hook
    // (the same for every variant); its eth0 counter counts it.
    c1.ns.exec(
        "iptables-nft",
        &["-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "DROP"],
    )?;
    let to = SocketAddrV4::new(c1.addr, lab::SERVICE_PORT);
    let published = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED_PORT);
    let mut install_s = 0.0;
    let dst = match kind {
        Kind::Plain => to,
        Kind::Iptables => {
            let rules = iptables_rules(ports, lab::UPLINK_ADDR, to);
            install_s = timed_stdin(&lab.host, "iptables-nft-restore", &[], &rules)?.as_secs_f64();
            published
        }
        Kind::Netbpf => {
            let mut extra = publish_toml_n(ports);
            extra.push_str(&lab::publish_toml(
                "udp",
                &PUBLISHED_PORT.to_string(),
                to,
                None,
            ));
            // Room for every new flow of a phase (the default 262144 is
            // also enough for the full bench; this keeps inserts from ever
            // failing).
            extra.push_str("\n[conntrack]\ncapacity = 524288\n");
            let t = Instant::now();
            lab.start_daemon(&opts.netbpf_exe, &extra)?;
            install_s = t.elapsed().as_secs_f64();
            published
        }
    };
    let host_mac = mac_of(&lab.host, "eth0")?;
    let out_mac = mac_of(&lab.outside, "eth0")?;
    Ok(Rig {
        lab,
        dst,
        host_mac,
        out_mac,
        install_s,
    })
}

/// Sends `count` packets at `pps` with trafgen on the generator CPU and
/// measures the router CPU until the container stops receiving.
pub(crate) fn phase(
    rig: &Rig,
    src: Option<(Ipv4Addr, u16)>,
    pps: u64,
    count: u64,
    limit: Duration,
    tag: &str,
) -> Result<Phase> {
    let c1 = &rig.lab.containers[0].ns;
    let cfg = rig.lab.dir.join(format!("trafgen-{tag}.cfg"));
    fs::write(
        &cfg,
        trafgen_config(rig.host_mac, rig.out_mac, src, rig.dst),
    )?;
    let cfg_s = cfg.to_string_lossy().into_owned();
    // Sends `n` packets; a router slower than the rate slows trafgen down
    // (socket send-buffer back-pressure through the veth), so it is
    // stopped with SIGINT after `limit`.
    let trafgen = |n: u64, limit: Duration| -> Result<()> {
        let child = rig
            .lab
            .outside
            .command("taskset")
            .args(["-c", &GEN_CPU.to_string(), "trafgen"])
            .args(["--dev", "eth0", "--conf", &cfg_s, "--cpus", "1"])
            .args(["--num", &n.to_string(), "--rate", &format!("{pps}pps")])
            // Leave the machine's IRQ affinity and socket memory alone.
            .args(["--notouch-irq", "--no-sock-mem", "--no-cpu-stats"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen (cargo xtask setup installs netsniff-ng)")?;
        wait_trafgen(child, Instant::now() + limit, Duration::from_millis(20))?;
        Ok(())
    };
    // Warm-up: ARP, routes, the flow of the established phase.
    trafgen(50, Duration::from_secs(5))?;
    wait_quiet(c1)?;
    // Baseline: the router CPU's softirq rate and busy fraction with no
    // traffic (other work on the machine).
    let b0 = CpuMark::now();
    thread::sleep(Duration::from_millis(500));
    let b1 = CpuMark::now();
    let bw = b0.wall_s(&b1);

    let rx0 = netdev_counter(c1, "eth0", "rx_packets")?;
    let tx0 = sent_counter(&rig.lab.outside)?;
    let m0 = CpuMark::now();
    trafgen(count, limit)?;
    let m1 = wait_quiet_mark(c1)?;
    let rx1 = netdev_counter(c1, "eth0", "rx_packets")?;
    let tx1 = sent_counter(&rig.lab.outside)?;
    Ok(Phase {
        sent: tx1 - tx0,
        delivered: rx1 - rx0,
        softirq_s: m0.router_softirq_s(&m1),
        baseline_softirq_rate: b0.router_softirq_s(&b1) / bw,
        gen_softirq_s: m0.gen_softirq_s(&m1),
        busy_s: m0.busy_s(&m1),
        baseline_busy_frac: b0.busy_s(&b1) / bw,
        wall_s: m0.wall_s(&m1),
    })
}

/// Waits until the container's receive counter stops moving.
pub(crate) fn wait_quiet(c1: &Netns) -> Result<()> {
    wait_quiet_mark(c1).map(|_| ())
}

/// Waits until the container's receive counter stops moving (the router's
/// backlog drained); returns the CPU mark of the last moment it moved.
pub(crate) fn wait_quiet_mark(c1: &Netns) -> Result<CpuMark> {
    let mut last = netdev_counter(c1, "eth0", "rx_packets")?;
    let mut mark = CpuMark::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = netdev_counter(c1, "eth0", "rx_packets")?;
        if now == last || Instant::now() > deadline {
            return Ok(mark);
        }
        last = now;
        mark = CpuMark::now();
    }
}

pub(crate) fn router_bench(opts: &Options) -> Result<Value> {
    let (runs, secs, pps): (usize, u64, u64) = if opts.quick {
        (1, 1, 50_000)
    } else {
        (3, 4, 50_000)
    };
    // A router slower than the rate makes trafgen slow down; it is stopped
    // after twice the phase time (plus a second).
    let limit = Duration::from_secs(2 * secs + 1);
    let port_counts: &[u32] = &[0, 1000, 10_000];
    let mut variants: Vec<(Kind, u32)> = vec![(Kind::Plain, 0)];
    for &n in port_counts {
        variants.push((Kind::Iptables, n));
        variants.push((Kind::Netbpf, n));
    }
    let mut rows: Vec<Value> = Vec::new();
    for run in 0..runs {
        // Interleaved: every run goes through every variant, starting at a
        // different one each time.
        for k in 0..variants.len() {
            let (kind, ports) = variants[(k + run) % variants.len()];
            let label = format!("{} {ports}", kind.name());
            let rig =
                build_rig(opts, kind, ports).with_context(|| format!("setting up {label}"))?;
            let est = phase(
                &rig,
                Some((Ipv4Addr::new(198, 19, 0, 1), 5555)),
                pps,
                pps * secs,
                limit,
                "est",
            )
            .with_context(|| format!("{label}: established phase"))?;
            let new = phase(&rig, None, pps, pps * secs, limit, "new")
                .with_context(|| format!("{label}: new-flow phase"))?;
            eprintln!(
                "bench:   run {} {label:<18} established {:>8.0} ns/pkt ({}/{} delivered), new flow {:>9.0} ns/pkt ({}/{}), install {:.3} s",
                run + 1,
                est.ns_per_packet(),
                est.delivered,
                est.sent,
                new.ns_per_packet(),
                new.delivered,
                new.sent,
                rig.install_s
            );
            rows.push(json!({
                "run": run + 1,
                "variant": kind.name(),
                "published_ports": ports,
                "install_s": rig.install_s,
                "established": est.json(),
                "new_flow": new.json(),
            }));
            drop(rig);
        }
    }
    // Medians with min-max per variant.
    let mut agg = Vec::new();
    for &(kind, ports) in &variants {
        let pick = |phase: &str| -> Vec<f64> {
            rows.iter()
                .filter(|r| r["variant"] == kind.name() && r["published_ports"] == ports)
                .filter_map(|r| r[phase]["router_ns_per_packet"].as_f64())
                .collect()
        };
        let stat = |v: Vec<f64>| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            json!({"median": median(&v), "min": min, "max": max, "n": v.len()})
        };
        agg.push(json!({
            "variant": kind.name(),
            "published_ports": ports,
            "established_ns": stat(pick("established")),
            "new_flow_ns": stat(pick("new_flow")),
        }));
    }
    let med = |variant: &str, ports: u32, phase: &str| -> f64 {
        agg.iter()
            .find(|a| a["variant"] == variant && a["published_ports"] == ports)
            .and_then(|a| a[phase]["median"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut ratios = Vec::new();
    for &n in port_counts {
        let mut r = serde_json::Map::new();
        r.insert("published_ports".into(), json!(n));
        for phase in ["established_ns", "new_flow_ns"] {
            let plain = med("plain", 0, phase);
            let ipt = med("iptables-nft", n, phase);
            let nb = med("netbpf", n, phase);
            r.insert(
                phase.trim_end_matches("_ns").to_owned(),
                json!({
                    "netbpf_over_iptables": nb / ipt,
                    "netbpf_extra_over_iptables_extra": (nb - plain) / (ipt - plain),
                }),
            );
        }
        ratios.push(Value::Object(r));
    }
    Ok(json!({
        "method": "Lab topology (outside -- host -- container c1), rebuilt per variant. trafgen in \
                   the outside namespace, pinned to CPU 0, sends 64-byte UDP frames at a fixed \
                   rate to the container (plain) or to host port 8080 published to it \
                   (iptables-nft DNAT rule placed after N others; netbpf [[publish]] plus N \
                   others). RPS steers the host uplink's receive processing to CPU 1; the \
                   container's part runs there too. The container drops the packets in its raw \
                   PREROUTING and counts them on its eth0. Router cost = CPU 1's softirq time \
                   (/proc/stat, tick-sampled) from the first packet sent until the container's \
                   counter stops moving, minus CPU 1's softirq rate in a 0.5 s idle window just \
                   before, divided by delivered packets (router_busy_ns_per_packet is the same \
                   from cpuidle residency, which counts other processes too). Established \
                   phase: one fixed source tuple. New-flow phase: random source address \
                   (198.18/16) and port per packet.",
        "runs": runs,
        "seconds_per_phase": secs,
        "rate_pps": pps,
        "router_cpu": ROUTER_CPU,
        "generator_cpu": GEN_CPU,
        "rows": rows,
        "summary": agg,
        "ratios": ratios,
    }))
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
