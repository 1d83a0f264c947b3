//! Part 2: router CPU per packet, netbpf (through the stack and on its
//! fast path) against iptables-nft and plain routing, inbound and outbound,
//! with trafgen in the lab and the receiver reduced to count-and-drop
//! ([`sink`]).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    lab::{self, Lab},
    maps,
    netns::Netns,
};

use super::{
    install::*, latency, measure::*, options::*, packets::*, router_stats, saturation, sink,
    throughput, xdp,
};

// ---------------------------------------------------------------------------
// Part 2: router cost

/// The variants of part 2, each on a lab built afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The floor: an XDP program that only gives each frame its next hop's
    /// MACs and redirects it (no lookup, no TTL, no NAT): the least any
    /// datapath costs in this lab.
    XdpFloor,
    /// The host routes to the container's own address; no NAT at all.
    Plain,
    /// DNAT of the published ports and MASQUERADE of the containers, with
    /// the kernel's conntrack.
    Iptables,
    /// netbpf with `[datapath] fast_path = false`: translated packets go
    /// through the host's stack.
    NetbpfStack,
    /// netbpf with `[datapath] xdp = false`: the fast path in tc only
    /// (inbound translated at the uplink's tc ingress).
    NetbpfTc,
    /// netbpf as configured by default: translated packets are redirected
    /// straight to their egress device, established inbound flows from
    /// the uplink's XDP program.
    NetbpfFast,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::XdpFloor => "xdp-floor",
            Variant::Plain => "plain",
            Variant::Iptables => "iptables-nft",
            Variant::NetbpfStack => "netbpf-stack",
            Variant::NetbpfTc => "netbpf-tc",
            Variant::NetbpfFast => "netbpf-fast",
        }
    }

    pub(crate) fn is_netbpf(self) -> bool {
        self.datapath_toml().is_some()
    }

    /// The netbpf variants' `[datapath]` section (none for the others).
    pub(crate) fn datapath_toml(self) -> Option<&'static str> {
        match self {
            Variant::NetbpfStack => Some("\n[datapath]\nfast_path = false\n"),
            Variant::NetbpfTc => Some("\n[datapath]\nxdp = false\n"),
            Variant::NetbpfFast => Some(""),
            Variant::XdpFloor | Variant::Plain | Variant::Iptables => None,
        }
    }
}

/// Which way the traffic crosses the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// outside → published port (DNAT) → container.
    Inbound,
    /// container → outside, masqueraded (SNAT).
    Outbound,
}

impl Direction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The generated packets' size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// 64-byte Ethernet frames (FCS included): 46-byte IP packets.
    Small,
    /// 1500-byte IP packets, the MTU (1518-byte frames with the FCS).
    Mtu,
}

impl Frame {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Frame::Small => "64B",
            Frame::Mtu => "1500B",
        }
    }

    /// The IPv4 packet's length.
    pub(crate) fn ip_bytes(self) -> u16 {
        match self {
            Frame::Small => 46,
            Frame::Mtu => 1500,
        }
    }
}

/// Where a generated packet comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// One fixed tuple: every packet after the first is established.
    Fixed(Ipv4Addr, u16),
    /// A random 198.18.0.0/16 address and a random port per packet: every
    /// packet is a new flow.
    Random,
    /// One address, the port counting up from [`PORT_SEQUENCE_FIRST`]: a
    /// new flow (and, behind a NAT, a new mapping) per packet, for up to
    /// [`PORT_SEQUENCE_LEN`] packets.
    PortSequence(Ipv4Addr),
}

/// The first port of a [`Source::PortSequence`].
pub(crate) const PORT_SEQUENCE_FIRST: u16 = 1024;

/// Packets a [`Source::PortSequence`] sends before its ports repeat.
pub(crate) const PORT_SEQUENCE_LEN: u64 = 65_536 - PORT_SEQUENCE_FIRST as u64;

/// The container's source port of the outbound established flow (below
/// the port sequence, so the new-flow phase never meets it).
const OUTBOUND_EST_PORT: u16 = 1000;

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

/// The lab, set up for one variant.
pub(crate) struct Rig {
    /// The floor variant's program; first, so that it is detached before
    /// the lab's namespaces go.
    pub(crate) _floor: Option<xdp::Floor>,
    pub(crate) lab: Lab,
    pub(crate) variant: Variant,
    /// Where inbound traffic goes: the container itself (plain) or the
    /// published port.
    pub(crate) inbound_dst: SocketAddrV4,
    /// The host's uplink and container-side veth, the outside machine's
    /// and the container's interface.
    pub(crate) host_mac: [u8; 6],
    pub(crate) veth_mac: [u8; 6],
    pub(crate) out_mac: [u8; 6],
    pub(crate) c1_mac: [u8; 6],
    pub(crate) install_s: f64,
}

/// One direction's ends in a [`Rig`].
pub(crate) struct Ends<'a> {
    /// The generator's namespace (it sends out of its `eth0`).
    pub(crate) gen_ns: &'a Netns,
    pub(crate) dst_mac: [u8; 6],
    pub(crate) src_mac: [u8; 6],
    pub(crate) dst: SocketAddrV4,
    pub(crate) established: Source,
    pub(crate) new: Source,
    /// The receiver's namespace (count-and-drop on its `eth0`).
    pub(crate) recv_ns: &'a Netns,
    /// The host's interfaces the traffic enters and leaves by.
    pub(crate) router_in: &'a str,
    pub(crate) router_out: &'a str,
}

impl Rig {
    pub(crate) fn ends(&self, direction: Direction) -> Ends<'_> {
        let c1 = &self.lab.containers[0];
        match direction {
            Direction::Inbound => Ends {
                gen_ns: &self.lab.outside,
                dst_mac: self.host_mac,
                src_mac: self.out_mac,
                dst: self.inbound_dst,
                established: Source::Fixed(Ipv4Addr::new(198, 19, 0, 1), 5555),
                new: Source::Random,
                recv_ns: &c1.ns,
                router_in: "eth0",
                router_out: &c1.host_veth,
            },
            Direction::Outbound => Ends {
                gen_ns: &c1.ns,
                dst_mac: self.veth_mac,
                src_mac: self.c1_mac,
                dst: SocketAddrV4::new(lab::OUTSIDE_ADDR, lab::SERVICE_PORT),
                established: Source::Fixed(c1.addr, OUTBOUND_EST_PORT),
                new: Source::PortSequence(c1.addr),
                recv_ns: &self.lab.outside,
                router_in: &c1.host_veth,
                router_out: "eth0",
            },
        }
    }
}

/// `iptables_rules` plus the containers' MASQUERADE out of the uplink.
fn with_masquerade(rules: &str) -> String {
    let masquerade = format!(
        "-A POSTROUTING -s {} -o eth0 -j MASQUERADE\nCOMMIT\n",
        lab::CONTAINER_CIDR
    );
    rules
        .replacen("*nat\n", "*nat\n:POSTROUTING ACCEPT [0:0]\n", 1)
        .replacen("COMMIT\n", &masquerade, 1)
}

/// Steers the receive processing of `devs` in `host` to [`ROUTER_CPU`]
/// (RPS).
pub(crate) fn steer_to_router(host: &Netns, devs: &[&str]) -> Result<()> {
    for dev in devs {
        host.exec(
            "sh",
            &[
                "-c",
                &format!(
                    "echo {:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus",
                    1u64 << ROUTER_CPU
                ),
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn build_rig(opts: &Options, variant: Variant, ports: u32) -> Result<Rig> {
    let prefix = format!("nbb-r-{}", std::process::id());
    let mut lab = Lab::build(&prefix, 1)?;
    let c1 = &lab.containers[0];
    // Receive processing of the host's interfaces (the uplink for inbound
    // traffic, the container's veth for outbound) on the router CPU; the
    // receiving end's runs there too (a veth delivers on the CPU that
    // transmits).
    steer_to_router(&lab.host, &["eth0", &c1.host_veth])?;
    // No IPv6 in the lab (router solicitations and MLD reports of the
    // fresh interfaces would count as sent, and cost the router CPU).
    for ns in [&lab.host, &lab.outside, &c1.ns] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")?;
    }
    // Both receiving ends count and drop at their tc ingress (the same for
    // every variant).
    sink::install(&c1.ns, "eth0")?;
    sink::install(&lab.outside, "eth0")?;
    // Both ends are the same in every variant, and what the floor needs
    // (xdp::prepare_end): NAPI, and full checksums from their own sockets.
    xdp::prepare_end(&c1.ns, "eth0")?;
    xdp::prepare_end(&lab.outside, "eth0")?;
    let to = SocketAddrV4::new(c1.addr, lab::SERVICE_PORT);
    let published = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED_PORT);
    let veth_mac = mac_of(&lab.host, &c1.host_veth)?;
    let c1_mac = mac_of(&c1.ns, "eth0")?;
    let out_mac = mac_of(&lab.outside, "eth0")?;
    let mut install_s = 0.0;
    let mut floor = None;
    let inbound_dst = match variant {
        Variant::Plain => to,
        Variant::XdpFloor => {
            let t = Instant::now();
            floor = Some(xdp::Floor::attach(
                &lab.host,
                &[
                    xdp::FloorHop {
                        from: "eth0",
                        to: &c1.host_veth,
                        next_mac: c1_mac,
                    },
                    xdp::FloorHop {
                        from: &c1.host_veth,
                        to: "eth0",
                        next_mac: out_mac,
                    },
                ],
            )?);
            install_s = t.elapsed().as_secs_f64();
            to
        }
        Variant::Iptables => {
            let rules = with_masquerade(&iptables_rules(ports, lab::UPLINK_ADDR, to));
            install_s = timed_stdin(&lab.host, "iptables-nft-restore", &[], &rules)?.as_secs_f64();
            published
        }
        Variant::NetbpfStack | Variant::NetbpfTc | Variant::NetbpfFast => {
            let mut extra = publish_toml_n(ports);
            extra.push_str(&lab::publish_toml(
                "udp",
                &PUBLISHED_PORT.to_string(),
                to,
                None,
            ));
            // Room for every new flow of a rig's phases (the default 262144
            // is also enough; this keeps inserts from ever failing).
            extra.push_str("\n[conntrack]\ncapacity = 524288\n");
            extra.push_str(variant.datapath_toml().unwrap_or_default());
            let t = Instant::now();
            lab.start_daemon(&opts.netbpf_exe, &extra)?;
            install_s = t.elapsed().as_secs_f64();
            published
        }
    };
    if matches!(variant, Variant::Plain | Variant::XdpFloor) {
        // Without NAT the outside machine routes to the containers through
        // the host (the latency phase's answers need it; trafgen's frames
        // are addressed to the host's MAC by hand).
        lab.outside.ip(&[
            "route",
            "add",
            lab::CONTAINER_CIDR,
            "via",
            &lab::UPLINK_ADDR.to_string(),
        ])?;
    }
    let host_mac = mac_of(&lab.host, "eth0")?;
    Ok(Rig {
        _floor: floor,
        lab,
        variant,
        inbound_dst,
        host_mac,
        veth_mac,
        out_mac,
        c1_mac,
        install_s,
    })
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

/// One lab of the matrix and the directions measured on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RigPlan {
    pub(crate) variant: Variant,
    pub(crate) ports: u32,
    pub(crate) frame: Frame,
    /// Outbound too (only without extra published ports: they do not
    /// change the outbound path).
    pub(crate) outbound: bool,
}

impl RigPlan {
    /// The directions measured on this lab.
    pub(crate) fn directions(&self) -> Vec<Direction> {
        if self.outbound {
            vec![Direction::Inbound, Direction::Outbound]
        } else {
            vec![Direction::Inbound]
        }
    }
}

/// The matrix: every variant with 64-byte frames (inbound with 0, 1k and
/// 10k published ports, outbound with 0), and with 1500-byte packets
/// (0 published ports, both directions).
pub(crate) fn plans() -> Vec<RigPlan> {
    let mut plans = Vec::new();
    for frame in [Frame::Small, Frame::Mtu] {
        let ladder: &[u32] = match frame {
            Frame::Small => &PORT_COUNTS,
            Frame::Mtu => &[0],
        };
        for variant in [Variant::XdpFloor, Variant::Plain] {
            plans.push(RigPlan {
                variant,
                ports: 0,
                frame,
                outbound: true,
            });
        }
        for &ports in ladder {
            for variant in [
                Variant::Iptables,
                Variant::NetbpfStack,
                Variant::NetbpfTc,
                Variant::NetbpfFast,
            ] {
                // The XDP program only takes inbound packets: outbound,
                // netbpf-tc is netbpf-fast.
                plans.push(RigPlan {
                    variant,
                    ports,
                    frame,
                    outbound: ports == 0 && variant != Variant::NetbpfTc,
                });
            }
        }
    }
    plans
}

/// The published-port ladder of the inbound 64-byte rows.
pub(crate) const PORT_COUNTS: [u32; 3] = [0, 1000, 10_000];

pub(crate) fn router_bench(opts: &Options) -> Result<Value> {
    let (runs, secs, pps): (usize, u64, u64) = if opts.quick {
        (1, 1, 50_000)
    } else {
        (3, 4, 50_000)
    };
    // A router slower than the rate makes trafgen slow down; it is stopped
    // after twice the phase time (plus a second).
    let limit = Duration::from_secs(2 * secs + 1);
    let plans = plans();
    let mut rows: Vec<Value> = Vec::new();
    for run in 0..runs {
        // Interleaved: every run goes through every variant, starting at a
        // different one each time.
        for k in 0..plans.len() {
            let plan = plans[(k + run) % plans.len()];
            let label = format!(
                "{} {} {}",
                plan.variant.name(),
                plan.ports,
                plan.frame.name()
            );
            let rig = build_rig(opts, plan.variant, plan.ports)
                .with_context(|| format!("setting up {label}"))?;
            for direction in plan.directions() {
                let what = format!("{label} {}", direction.name());
                let est = phase(&rig, direction, false, plan.frame, pps, pps * secs, limit)
                    .with_context(|| format!("{what}: established phase"))?;
                // The outbound new flows count ports up from 1024: no more
                // packets than there are ports.
                let new_count = match direction {
                    Direction::Inbound => pps * secs,
                    Direction::Outbound => (pps * secs).min(PORT_SEQUENCE_LEN - 512),
                };
                let new = phase(&rig, direction, true, plan.frame, pps, new_count, limit)
                    .with_context(|| format!("{what}: new-flow phase"))?;
                let saturated = saturation::saturation(&rig, direction, plan.frame)
                    .with_context(|| format!("{what}: saturation"))?;
                eprintln!(
                    "bench:   run {} {what:<32} established {:>6.0} ns/pkt router, {:>6.0} both CPUs ({}/{} delivered), new flow {:>6.0} / {:>6.0} ({}/{}), saturation {:.0} kpps, install {:.3} s",
                    run + 1,
                    est.ns_per_packet(),
                    est.all_ns_per_packet(),
                    est.delivered,
                    est.sent,
                    new.ns_per_packet(),
                    new.all_ns_per_packet(),
                    new.delivered,
                    new.sent,
                    saturated["delivered_pps"].as_f64().unwrap_or(f64::NAN) / 1e3,
                    rig.install_s
                );
                rows.push(json!({
                    "run": run + 1,
                    "variant": plan.variant.name(),
                    "published_ports": plan.ports,
                    "frame": plan.frame.name(),
                    "ip_bytes": plan.frame.ip_bytes(),
                    "direction": direction.name(),
                    "install_s": rig.install_s,
                    "established": est.json(),
                    "new_flow": new.json(),
                    "saturation": saturated,
                }));
            }
            // Last on the rig: it takes the count-and-drop filters away.
            if plan.frame == Frame::Small && plan.ports == 0 {
                sink::remove(&rig.lab.containers[0].ns, "eth0")?;
                sink::remove(&rig.lab.outside, "eth0")?;
                for direction in plan.directions() {
                    let l = latency::latency(&rig, direction)
                        .with_context(|| format!("{label} {}: latency", direction.name()))?;
                    eprintln!(
                        "bench:   run {} {label} {:<9} latency p50 {:.1} µs, p99 {:.1} µs ({} lost) at {}/s",
                        run + 1,
                        direction.name(),
                        l["p50_us"].as_f64().unwrap_or(f64::NAN),
                        l["p99_us"].as_f64().unwrap_or(f64::NAN),
                        l["lost"],
                        latency::RATE,
                    );
                    if let Some(row) = rows.iter_mut().rev().find(|r| {
                        router_stats::is(
                            r,
                            plan.variant.name(),
                            0,
                            plan.frame.name(),
                            direction.name(),
                        )
                    }) {
                        row["latency"] = l;
                    }
                }
            }
            drop(rig);
        }
    }
    let (summary, ratios) = router_stats::aggregate(&rows, &plans);
    eprintln!("bench:   TCP throughput through the NAT (iperf3)");
    let tcp = throughput::throughput(opts);
    Ok(json!({
        "tcp_throughput": tcp,
        "method": METHOD,
        "runs": runs,
        "seconds_per_phase": secs,
        "rate_pps": pps,
        "router_cpu": ROUTER_CPU,
        "generator_cpu": GEN_CPU,
        "rows": rows,
        "summary": summary,
        "ratios": ratios,
    }))
}

const METHOD: &str = "Lab topology (outside -- host -- container c1), rebuilt per variant and \
    frame size. Variants: plain (routing to the container's own address, no NAT), iptables-nft \
    (DNAT of host port 8080 placed after N other DNAT rules, MASQUERADE of 10.77.0.0/24 out of \
    the uplink, conntrack), netbpf-stack ([datapath] fast_path = false: translated packets go \
    through the host's stack) and netbpf-fast (the default: translated packets are redirected \
    to their egress device), netbpf with 8080 plus N other [[publish]] ports. trafgen on CPU 0 \
    sends UDP at a fixed rate: inbound from the outside namespace to the container (plain) or \
    to 203.0.113.1:8080; outbound from the container's namespace to 203.0.113.2:4000 (plain: \
    forwarded without NAT). RPS steers the receive processing of the host's uplink and of the \
    container's host-side veth to CPU 1; the receiving end (the container's eth0 inbound, the \
    outside machine's eth0 outbound) counts and drops every IPv4 packet at its tc ingress \
    (clsact + cls_bpf direct-action with the classic BPF program `ret #2`, counted by the \
    qdisc's drop counter), also on CPU 1. Router cost = CPU 1's softirq time (/proc/stat, \
    tick-sampled) from the first packet sent until the receiver's count stops moving, minus \
    CPU 1's softirq rate in a 0.5 s idle window just before, divided by delivered packets \
    (router_busy_ns_per_packet is the same from cpuidle residency, which counts other \
    processes too). Established phase: one fixed source tuple. New-flow phase: inbound a \
    random source address (198.18/16) and port per packet; outbound the container's source \
    port counting up from 1024 (a new mapping per packet). 64-byte frames, inbound with 0, \
    1000 and 10000 extra published ports and outbound with 0; 1500-byte IP packets with 0, \
    both directions. Lost packets are looked for in the generator's tx_dropped (router \
    backlog full), the host's rx_dropped/tx_dropped on the two interfaces and netbpf's drop_* \
    counters; netbpf's counters that moved (all fast_path_*) are recorded per phase.";
