//! Part 2's saturation figure: the most packets per second a variant
//! delivers when the generator sends faster than the router can forward.
//!
//! trafgen's `sendto` tops out near 400 kpps here, below what one router
//! core forwards, so the generator is the live-frames XDP program
//! ([`xdp::saturate`]): the established tuple's frame, sent out of the
//! generator's interface as fast as the kernel builds frames. What counts
//! is what the receiving end's count-and-drop filter saw, over the time
//! from the first frame until it stopped moving.
//!
//! A frame sent into a veth is received in the NAPI of the CPU that sent
//! it, the generator's: the floor's XDP program runs there, and the other
//! variants hand the packet to the router CPU by RPS from there. The
//! figure is recorded with where the frames that did not arrive were
//! dropped (see docs/performance.md for what it does and does not show).

use std::{fs, time::Duration};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{
    measure::{CpuMark, GEN_CPU, ROUTER_CPU, netdev_counter},
    packets::udp_frame,
    phase::wait_quiet_mark,
    rig::{Direction, Ends, Frame, Rig, Source, Variant},
    sink, xdp,
};

/// Sends for this long per direction.
const SEND_FOR: Duration = Duration::from_secs(2);

/// The delivered rate of `rig` in `direction` at saturation.
pub(crate) fn saturation(rig: &Rig, direction: Direction, frame: Frame) -> Result<Value> {
    let ends = rig.ends(direction);
    let Source::Fixed(src, sport) = ends.established else {
        bail!("the established source is not one tuple");
    };
    let mut f = udp_frame(
        src,
        sport,
        *ends.dst.ip(),
        ends.dst.port(),
        frame.ip_bytes(),
    );
    f[0..6].copy_from_slice(&ends.dst_mac);
    f[6..12].copy_from_slice(&ends.src_mac);
    // Live frames sent out of a veth are queued for its peer's NAPI: the
    // floor's XDP program gives the router's interface one, GRO does for
    // the others (turned off again after, so the other phases receive as
    // before).
    let napi = rig.variant != Variant::XdpFloor;
    if napi {
        xdp::set_gro(&rig.lab.host, ends.router_in, true)?;
    }
    let dropped0 = drop_counts(rig, &ends)?;
    let rx0 = sink::count(ends.recv_ns, "eth0")?;
    let m0 = CpuMark::now();
    let sent = xdp::saturate(ends.gen_ns, "eth0", f, GEN_CPU, SEND_FOR);
    let m1 = wait_quiet_mark(ends.recv_ns)?;
    let rx1 = sink::count(ends.recv_ns, "eth0")?;
    let dropped1 = drop_counts(rig, &ends)?;
    if napi {
        xdp::set_gro(&rig.lab.host, ends.router_in, false)?;
    }
    let sent = sent?;
    let delivered = rx1 - rx0;
    let wall = m0.wall_s(&m1);
    Ok(json!({
        "generated": sent.frames,
        "generator_pps": sent.frames as f64 / sent.wall.as_secs_f64(),
        "delivered": delivered,
        "window_s": wall,
        "delivered_pps": delivered as f64 / wall,
        "dropped": {
            "router_in_rx_dropped": dropped1[0] - dropped0[0],
            "router_out_tx_dropped": dropped1[1] - dropped0[1],
            "router_cpu_backlog_dropped": dropped1[2].wrapping_sub(dropped0[2]),
        },
    }))
}

/// The router's interfaces' drop counters, and the router CPU's backlog
/// drops (`/proc/net/softnet_stat`, second column).
fn drop_counts(rig: &Rig, ends: &Ends) -> Result<[u64; 3]> {
    let backlog = fs::read_to_string("/proc/net/softnet_stat")
        .ok()
        .and_then(|t| {
            let line = t.lines().nth(ROUTER_CPU)?.to_owned();
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .unwrap_or(0);
    Ok([
        netdev_counter(&rig.lab.host, ends.router_in, "rx_dropped")?,
        netdev_counter(&rig.lab.host, ends.router_out, "tx_dropped")?,
        backlog,
    ])
}
