//! One traffic phase of part 2: trafgen sends established or new flows
//! at a fixed rate through a [`Rig`], and the router CPU's softirq time,
//! what was delivered and where the rest was counted are measured.

use std::{
    fs,
    net::SocketAddrV4,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{maps, netns::Netns};

use super::{
    measure::*,
    rig::{Direction, Ends, Frame, PORT_SEQUENCE_FIRST, Rig, Source},
    sink,
};

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A trafgen packet (its protocol-header syntax, which fills in the
/// lengths and recomputes the checksums of every field that changes per
/// packet): UDP from `src` to `dst`, `frame`-sized.
pub(crate) fn trafgen_config(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Source,
    dst: SocketAddrV4,
    frame: Frame,
) -> String {
    let (saddr, sport) = match src {
        Source::Fixed(a, p) => (a.to_string(), p.to_string()),
        Source::Random => ("198.18.0.0, sa[2:2]=drnd()".to_owned(), "drnd()".to_owned()),
        Source::PortSequence(a) => (a.to_string(), format!("dinc({PORT_SEQUENCE_FIRST}, 65535)")),
    };
    // IPv4 20 + UDP 8 + payload.
    let payload = frame.ip_bytes() - 28;
    format!(
        "{{\n  eth(da={dmac}, sa={smac}),\n  ipv4(sa={saddr}, da={daddr}, ttl=64, df, id=drnd()),\n  \
         udp(sp={sport}, dp={dport}),\n  fill(0x42, {payload})\n}}\n",
        dmac = mac_text(dst_mac),
        smac = mac_text(src_mac),
        daddr = dst.ip(),
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
    /// Generator CPU softirq seconds (RPS hand-off; the floor's XDP
    /// program), and its rate (s/s) in the idle window.
    pub(crate) gen_softirq_s: f64,
    pub(crate) baseline_gen_softirq_rate: f64,
    /// Router CPU busy seconds (cpuidle), and its idle-window fraction.
    pub(crate) busy_s: f64,
    pub(crate) baseline_busy_frac: f64,
    pub(crate) wall_s: f64,
    /// Where packets that were sent but not delivered were counted.
    pub(crate) lost: Value,
    /// netbpf's counters that moved in the phase (every `fast_path_*`,
    /// moved or not), for the netbpf variants.
    pub(crate) netbpf: Option<Value>,
}

impl Phase {
    /// Router CPU ns per delivered packet: softirq time in the window minus
    /// the idle window's softirq rate over the same time.
    pub(crate) fn ns_per_packet(&self) -> f64 {
        self.per_delivered(self.softirq_s - self.baseline_softirq_rate * self.wall_s)
    }

    /// Softirq ns per delivered packet on both CPUs (the router's and the
    /// generator's), each minus its idle-window rate: the figure the floor
    /// is compared on, since an XDP program on a veth runs in the NAPI of
    /// the CPU that sent to it (the generator's), not the router CPU.
    pub(crate) fn all_ns_per_packet(&self) -> f64 {
        self.per_delivered(
            self.softirq_s + self.gen_softirq_s
                - (self.baseline_softirq_rate + self.baseline_gen_softirq_rate) * self.wall_s,
        )
    }

    fn per_delivered(&self, softirq_s: f64) -> f64 {
        if self.delivered == 0 {
            f64::NAN
        } else {
            softirq_s.max(0.0) * 1e9 / self.delivered as f64
        }
    }

    /// The same from cpuidle residency (all work on the CPU): meaningful
    /// only when the CPU was mostly idle before.
    pub(crate) fn busy_ns_per_packet(&self) -> f64 {
        self.per_delivered(self.busy_s - self.baseline_busy_frac * self.wall_s)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "delivered": self.delivered,
            "lost": self.lost,
            "netbpf_counters": self.netbpf,
            "window_s": self.wall_s,
            "router_softirq_s": self.softirq_s,
            "baseline_softirq_rate": self.baseline_softirq_rate,
            "generator_softirq_s": self.gen_softirq_s,
            "baseline_generator_softirq_rate": self.baseline_gen_softirq_rate,
            "router_busy_s": self.busy_s,
            "baseline_busy_fraction": self.baseline_busy_frac,
            "router_ns_per_packet": self.ns_per_packet(),
            "all_cpus_ns_per_packet": self.all_ns_per_packet(),
            "router_busy_ns_per_packet": self.busy_ns_per_packet(),
        })
    }
}

/// The counters where a packet that was sent but not delivered is counted.
fn loss_counters(rig: &Rig, ends: &Ends) -> Result<[(&'static str, u64); 3]> {
    Ok([
        // The router's receive backlog was full (the veth drops on
        // transmit).
        (
            "generator_tx_dropped",
            netdev_counter(ends.gen_ns, "eth0", "tx_dropped")?,
        ),
        (
            "router_in_rx_dropped",
            netdev_counter(&rig.lab.host, ends.router_in, "rx_dropped")?,
        ),
        // The receiver's backlog was full.
        (
            "router_out_tx_dropped",
            netdev_counter(&rig.lab.host, ends.router_out, "tx_dropped")?,
        ),
    ])
}

/// netbpf's counters, by name.
fn netbpf_counters(rig: &Rig) -> Result<Vec<(&'static str, u64)>> {
    Ok(maps::read_stats(&rig.lab.pin_dir)?.counters)
}

/// What moved between two reads of netbpf's counters: every
/// `fast_path_*`, and the others that are not zero.
fn counters_delta(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> Value {
    let mut m = serde_json::Map::new();
    for ((name, a), (_, b)) in after.iter().zip(before) {
        let d = a.saturating_sub(*b);
        if d > 0 || name.starts_with("fast_path_") {
            m.insert((*name).to_owned(), json!(d));
        }
    }
    Value::Object(m)
}

/// Sends `count` packets at `pps` with trafgen on the generator CPU in
/// `direction`, established or new flows, and measures the router CPU
/// until the receiver stops receiving.
#[allow(clippy::too_many_arguments)]
pub(crate) fn phase(
    rig: &Rig,
    direction: Direction,
    new_flows: bool,
    frame: Frame,
    pps: u64,
    count: u64,
    limit: Duration,
) -> Result<Phase> {
    let ends = rig.ends(direction);
    let tag = format!(
        "{}-{}-{}",
        direction.name(),
        if new_flows { "new" } else { "est" },
        frame.name()
    );
    let write_cfg = |name: String, src: Source| -> Result<String> {
        let path = rig.lab.dir.join(name);
        fs::write(
            &path,
            trafgen_config(ends.dst_mac, ends.src_mac, src, ends.dst, frame),
        )?;
        Ok(path.to_string_lossy().into_owned())
    };
    let est_cfg = write_cfg(format!("trafgen-{tag}-warm.cfg"), ends.established)?;
    let cfg = write_cfg(
        format!("trafgen-{tag}.cfg"),
        if new_flows {
            ends.new
        } else {
            ends.established
        },
    )?;
    // Sends `n` packets; a router slower than the rate slows trafgen down
    // (socket send-buffer back-pressure through the veth), so it is
    // stopped with SIGINT after `limit`.
    let trafgen = |cfg: &str, n: u64, limit: Duration| -> Result<()> {
        let child = ends
            .gen_ns
            .command("taskset")
            .args(["-c", &GEN_CPU.to_string(), "trafgen"])
            .args(["--dev", "eth0", "--conf", cfg, "--cpus", "1"])
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
    // Warm-up with the established tuple (never one of the new-flow
    // phase's): ARP, routes, the established phase's flow.
    trafgen(&est_cfg, 50, Duration::from_secs(5))?;
    wait_quiet(ends.recv_ns)?;
    // Baseline: the router CPU's softirq rate and busy fraction with no
    // traffic (other work on the machine).
    let b0 = CpuMark::now();
    thread::sleep(Duration::from_millis(500));
    let b1 = CpuMark::now();
    let bw = b0.wall_s(&b1);

    let netbpf0 = match rig.variant.is_netbpf() {
        true => Some(netbpf_counters(rig)?),
        false => None,
    };
    let loss0 = loss_counters(rig, &ends)?;
    let rx0 = sink::count(ends.recv_ns, "eth0")?;
    let tx0 = sent_counter(ends.gen_ns)?;
    let m0 = CpuMark::now();
    trafgen(&cfg, count, limit)?;
    let m1 = wait_quiet_mark(ends.recv_ns)?;
    let rx1 = sink::count(ends.recv_ns, "eth0")?;
    let tx1 = sent_counter(ends.gen_ns)?;
    let loss1 = loss_counters(rig, &ends)?;
    let netbpf = match netbpf0 {
        Some(before) => Some(counters_delta(&before, &netbpf_counters(rig)?)),
        None => None,
    };
    let (sent, delivered) = (tx1 - tx0, rx1 - rx0);
    let mut lost = serde_json::Map::new();
    let mut counted = 0;
    for ((name, a), (_, b)) in loss1.iter().zip(loss0) {
        counted += a - b;
        lost.insert((*name).to_owned(), json!(a - b));
    }
    if let Some(Value::Object(m)) = &netbpf {
        for (name, v) in m.iter().filter(|(name, _)| name.starts_with("drop_")) {
            counted += v.as_u64().unwrap_or(0);
            lost.insert(format!("netbpf_{name}"), v.clone());
        }
    }
    lost.insert(
        "unexplained".to_owned(),
        json!(sent.saturating_sub(delivered).saturating_sub(counted)),
    );
    Ok(Phase {
        sent,
        delivered,
        softirq_s: m0.router_softirq_s(&m1),
        baseline_softirq_rate: b0.router_softirq_s(&b1) / bw,
        gen_softirq_s: m0.gen_softirq_s(&m1),
        baseline_gen_softirq_rate: b0.gen_softirq_s(&b1) / bw,
        busy_s: m0.busy_s(&m1),
        baseline_busy_frac: b0.busy_s(&b1) / bw,
        wall_s: m0.wall_s(&m1),
        lost: Value::Object(lost),
        netbpf,
    })
}

/// Waits until the receiver's count stops moving.
pub(crate) fn wait_quiet(recv: &Netns) -> Result<()> {
    wait_quiet_mark(recv).map(|_| ())
}

/// Waits until the receiver's count stops moving (the router's backlog
/// drained); returns the CPU mark of the last moment it moved.
pub(crate) fn wait_quiet_mark(recv: &Netns) -> Result<CpuMark> {
    let mut last = sink::count(recv, "eth0")?;
    let mut mark = CpuMark::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = sink::count(recv, "eth0")?;
        if now == last || Instant::now() > deadline {
            return Ok(mark);
        }
        last = now;
        mark = CpuMark::now();
    }
}
