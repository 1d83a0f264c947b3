//! The router bench's two XDP programs (`netbpf-ebpf/src/bench.rs`) from
//! userspace: the *floor* variant, which only gives each frame its next
//! hop's MACs and redirects it, and the saturation generator, which sends
//! one frame as fast as `BPF_PROG_TEST_RUN` with live frames can.
//!
//! Both need NAPI on the veth that receives what they send (a native XDP
//! redirect into a veth, and a live frame sent out of one, are queued for
//! the peer's NAPI): the rig turns GRO on at every receiving end
//! ([`prepare_end`]), which gives a veth its NAPI.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use netbpf_common::{HopValue, map_names};

use super::measure::mac_of;
use crate::netns::Netns;

/// The floor program.
const FLOOR: &str = "netbpf_bench_floor";
/// The generator program.
const TRANSMIT: &str = "netbpf_bench_tx";
/// Frames per live-frames batch (the kernel's default and maximum is 64
/// per `xdp_do_flush`; 256 keeps the veth's ring fed).
const LIVE_BATCH: u32 = 256;

/// The netbpf object with only the bench's programs loaded and its large
/// maps shrunk (they are created with the object, and stay empty).
fn load_object() -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for name in [
        map_names::CONNTRACK,
        map_names::NAT_MAPPINGS,
        map_names::NAT_REVERSE,
    ] {
        loader.map_max_entries(name, 1024);
    }
    loader
        .load(crate::ebpf_object())
        .context("loading the eBPF object for the bench's XDP programs")
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?;
    crate::loader::load_retrying(prog).with_context(|| format!("loading {name}"))?;
    Ok(prog)
}

/// Makes `dev` in `ns` an end the floor can send to and receive from: GRO
/// on (the NAPI a native XDP redirect into a veth needs at the peer), and
/// transmit checksum offload off. A veth hands a locally sent TCP or UDP
/// packet on with only its pseudo-header summed (`CHECKSUM_PARTIAL`); a
/// native XDP program on the peer turns the skb into a bare frame, which
/// loses that state, so the receiver would find the checksum wrong. With
/// the offload off the sender sums the whole packet, as a real NIC's
/// receiver would see it. (trafgen's frames carry full checksums anyway.)
pub(crate) fn prepare_end(ns: &Netns, dev: &str) -> Result<()> {
    set_gro(ns, dev, true)?;
    ns.exec("ethtool", &["-K", dev, "tx", "off"])
        .with_context(|| {
            format!(
                "turning checksum offload off for {dev} in {} (ethtool)",
                ns.name()
            )
        })?;
    Ok(())
}

/// Turns GRO on or off for `dev` in `ns`; on gives a veth its NAPI.
pub(crate) fn set_gro(ns: &Netns, dev: &str, on: bool) -> Result<()> {
    let state = if on { "on" } else { "off" };
    ns.exec("ethtool", &["-K", dev, "gro", state])
        .with_context(|| format!("turning GRO {state} for {dev} in {} (ethtool)", ns.name()))?;
    Ok(())
}

/// One direction of the floor: frames entering `from` leave by `to`, with
/// `to`'s MAC as their source and `next_mac` as their destination.
pub(crate) struct FloorHop<'a> {
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) next_mac: [u8; 6],
}

/// The floor program, attached (native XDP) on every hop's `from` in `ns`;
/// detached when dropped.
pub(crate) struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    pub(crate) fn attach(ns: &Netns, hops: &[FloorHop]) -> Result<Self> {
        let hops = hops
            .iter()
            .map(|h| {
                Ok((
                    h.from.to_owned(),
                    h.to.to_owned(),
                    h.next_mac,
                    mac_of(ns, h.to)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let name = ns.name().to_owned();
        ns.run(move || -> Result<Ebpf> {
            let mut ebpf = load_object()?;
            let mut entries = Vec::new();
            for (from, to, next_mac, src_mac) in &hops {
                let ifindex = |dev: &str| {
                    nix::net::if_::if_nametoindex(dev)
                        .with_context(|| format!("no interface {dev} in {name}"))
                };
                entries.push((
                    ifindex(from)?,
                    HopValue {
                        ifindex: ifindex(to)?,
                        dst_mac: *next_mac,
                        src_mac: *src_mac,
                        ..HopValue::default()
                    },
                ));
            }
            let mut map: BpfHashMap<_, u32, HopValue> = BpfHashMap::try_from(
                ebpf.map_mut(map_names::BENCH_HOPS)
                    .ok_or_else(|| anyhow!("map {} missing", map_names::BENCH_HOPS))?,
            )?;
            for (from, hop) in &entries {
                map.insert(from, hop, 0)?;
            }
            let prog = program(&mut ebpf, FLOOR)?;
            for ((from, ..), (index, _)) in hops.iter().zip(&entries) {
                prog.attach(*index, XdpMode::Driver)
                    .with_context(|| format!("attaching {FLOOR} (native) to {from} in {name}"))?;
            }
            Ok(ebpf)
        })?
        .map(|ebpf| Self { _ebpf: ebpf })
    }
}

/// What a saturation run sent.
pub(crate) struct Burst {
    /// Frames the generator program ran on.
    pub(crate) frames: u64,
    /// How long the runs took.
    pub(crate) wall: Duration,
}

/// Sends `frame` out of `dev` in `ns` for about `duration`, as fast as
/// live frames go, from a thread pinned to `cpu`.
pub(crate) fn saturate(
    ns: &Netns,
    dev: &str,
    frame: Vec<u8>,
    cpu: usize,
    duration: Duration,
) -> Result<Burst> {
    let dev = dev.to_owned();
    let name = ns.name().to_owned();
    ns.run(move || -> Result<Burst> {
        pin_to_cpu(cpu)?;
        let mut ebpf = load_object()?;
        let prog = program(&mut ebpf, TRANSMIT)?;
        let ifindex = nix::net::if_::if_nametoindex(dev.as_str())
            .with_context(|| format!("no interface {dev} in {name}"))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        // Runs of this many frames, until the time is up.
        const REPEAT: u32 = 200_000;
        let start = Instant::now();
        let mut frames = 0u64;
        while start.elapsed() < duration {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            opts.ctx_in = Some(&ctx);
            opts.repeat = REPEAT;
            opts.attrs = TestRunAttrs::new().xdp_live_frames(LIVE_BATCH);
            prog.test_run(opts)
                .with_context(|| format!("live frames out of {dev} in {name}"))?;
            frames += u64::from(REPEAT);
        }
        Ok(Burst {
            frames,
            wall: start.elapsed(),
        })
    })?
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context("pinning the generator thread")?;
    Ok(())
}
