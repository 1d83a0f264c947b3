//! Part 2's labs: the variants, directions, frames and traffic sources,
//! one lab set up for a variant ([`Rig`], with both ends counting and
//! dropping), and the matrix of labs a run goes through ([`plans`]).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use anyhow::Result;

use crate::{
    lab::{self, Container, Lab},
    netns::Netns,
};

use super::{install::*, measure::*, options::*, packets::*, sink, xdp};

/// The variants of part 2, each on a lab built afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The floor: an XDP program that only gives each frame its next hop's
    /// MACs and redirects it (no lookup, no TTL, no NAT): the least any
    /// datapath costs in this lab.
    XdpFloor,
    /// The host routes to the container's own address; no NAT at all.
    Plain,
    /// A routed container (`[[container]]`, the Calico way) and a peer on
    /// the uplink's segment: netbpf's routing programs, no NAT.
    Routed,
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
    /// the uplink's XDP program (generic mode on the lab's veth uplink).
    NetbpfFast,
    /// netbpf with `[datapath] xdp_mode = "native"`: the uplink's XDP
    /// program in driver mode translates established inbound flows and
    /// hands them to tc in the skb's metadata (what a NIC uplink gets).
    NetbpfNative,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::XdpFloor => "xdp-floor",
            Variant::Plain => "plain",
            Variant::Routed => "routed",
            Variant::Iptables => "iptables-nft",
            Variant::NetbpfStack => "netbpf-stack",
            Variant::NetbpfTc => "netbpf-tc",
            Variant::NetbpfFast => "netbpf-fast",
            Variant::NetbpfNative => "netbpf-native",
        }
    }

    /// Whether netbpf's daemon runs in this variant (its counters are read).
    pub(crate) fn is_netbpf(self) -> bool {
        self == Variant::Routed || self.datapath_toml().is_some()
    }

    /// The netbpf variants' `[datapath]` section (none for the others).
    pub(crate) fn datapath_toml(self) -> Option<&'static str> {
        match self {
            Variant::NetbpfStack => Some("\n[datapath]\nfast_path = false\n"),
            Variant::NetbpfTc => Some("\n[datapath]\nxdp = false\n"),
            Variant::NetbpfFast => Some(""),
            Variant::NetbpfNative => Some("\n[datapath]\nxdp_mode = \"native\"\n"),
            Variant::XdpFloor | Variant::Plain | Variant::Routed | Variant::Iptables => None,
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

/// The container the traffic goes to or comes from: the routed container
/// for [`Variant::Routed`], the first masqueraded one otherwise.
fn container_of(lab: &Lab, variant: Variant) -> &Container {
    match variant {
        Variant::Routed => &lab.routed[0],
        _ => &lab.containers[0],
    }
}

/// The machine beyond the uplink: the peer on the segment for
/// [`Variant::Routed`], the outside machine otherwise.
fn far_of(lab: &Lab, variant: Variant) -> &Netns {
    match (variant, &lab.peer) {
        (Variant::Routed, Some(peer)) => peer,
        _ => &lab.outside,
    }
}

impl Rig {
    /// See [`container_of`].
    pub(crate) fn container(&self) -> &Container {
        container_of(&self.lab, self.variant)
    }

    /// See [`far_of`].
    pub(crate) fn far(&self) -> &Netns {
        far_of(&self.lab, self.variant)
    }

    pub(crate) fn ends(&self, direction: Direction) -> Ends<'_> {
        let c1 = self.container();
        let far_addr = if self.variant == Variant::Routed {
            lab::PEER_ADDR
        } else {
            lab::OUTSIDE_ADDR
        };
        match direction {
            Direction::Inbound => Ends {
                gen_ns: self.far(),
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
                dst: SocketAddrV4::new(far_addr, lab::SERVICE_PORT),
                established: Source::Fixed(c1.addr, OUTBOUND_EST_PORT),
                new: Source::PortSequence(c1.addr),
                recv_ns: self.far(),
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
    // The routed container's lab has a peer wired straight to the uplink
    // (as the outside machine is in the others) instead of the outside.
    let mut lab = if variant == Variant::Routed {
        Lab::build_direct_peer(&prefix, 1)?
    } else {
        Lab::build(&prefix, 1)?
    };
    let (c1, far) = (container_of(&lab, variant), far_of(&lab, variant));
    // Receive processing of the host's interfaces (the uplink for inbound
    // traffic, the container's veth for outbound) on the router CPU; the
    // receiving end's runs there too (a veth delivers on the CPU that
    // transmits).
    steer_to_router(&lab.host, &["eth0", &c1.host_veth])?;
    // No IPv6 in the lab (router solicitations and MLD reports of the
    // fresh interfaces would count as sent, and cost the router CPU).
    for ns in [&lab.host, far, &c1.ns] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")?;
    }
    // Both receiving ends count and drop at their tc ingress (the same for
    // every variant).
    sink::install(&c1.ns, "eth0")?;
    sink::install(far, "eth0")?;
    // Both ends are the same in every variant, and what the floor needs
    // (xdp::prepare_end): NAPI, and full checksums from their own sockets.
    xdp::prepare_end(&c1.ns, "eth0")?;
    xdp::prepare_end(far, "eth0")?;
    let to = SocketAddrV4::new(c1.addr, lab::SERVICE_PORT);
    let published = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED_PORT);
    let veth_mac = mac_of(&lab.host, &c1.host_veth)?;
    let c1_mac = mac_of(&c1.ns, "eth0")?;
    let out_mac = mac_of(far, "eth0")?;
    let mut install_s = 0.0;
    let mut floor = None;
    let inbound_dst = match variant {
        Variant::Plain => to,
        Variant::Routed => {
            let extra = lab.routed_toml();
            let t = Instant::now();
            lab.start_daemon(&opts.netbpf_exe, &extra)?;
            install_s = t.elapsed().as_secs_f64();
            to
        }
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
        Variant::NetbpfStack | Variant::NetbpfTc | Variant::NetbpfFast | Variant::NetbpfNative => {
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
        for variant in [Variant::XdpFloor, Variant::Plain, Variant::Routed] {
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
                Variant::NetbpfNative,
            ] {
                // The XDP program only takes inbound packets: outbound,
                // netbpf-tc and netbpf-native are netbpf-fast.
                plans.push(RigPlan {
                    variant,
                    ports,
                    frame,
                    outbound: ports == 0
                        && !matches!(variant, Variant::NetbpfTc | Variant::NetbpfNative),
                });
            }
        }
    }
    plans
}

/// [`plans`] with only the variants named in `names` (all when empty).
pub(crate) fn plans_of(names: &[String]) -> anyhow::Result<Vec<RigPlan>> {
    let all = plans();
    if let Some(unknown) = names
        .iter()
        .find(|n| !all.iter().any(|p| p.variant.name() == n.as_str()))
    {
        anyhow::bail!("no router bench variant {unknown:?}");
    }
    Ok(all
        .into_iter()
        .filter(|p| names.is_empty() || names.iter().any(|n| n == p.variant.name()))
        .collect())
}

/// The published-port ladder of the inbound 64-byte rows.
pub(crate) const PORT_COUNTS: [u32; 3] = [0, 1000, 10_000];
