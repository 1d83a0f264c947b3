//! Part 2's latency figure: UDP request/response round trips through the
//! router at a fixed rate (one request in flight), p50 and p99.
//!
//! The receiving ends count and drop everything in the other phases, so
//! this runs last on a rig, once [`super::sink::remove`] took the count-and-drop
//! filters away; a whoami server in the receiving namespace answers.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    packets::{median, percentile},
    rig::{Direction, Rig},
};
use crate::lab::{self, Transport, WhoamiServer};

/// Requests per second.
pub(crate) const RATE: u32 = 1000;
/// Requests per direction.
const REQUESTS: u32 = 2000;
/// A request with no answer within this is counted as lost.
const TIMEOUT: Duration = Duration::from_millis(100);
/// Lost requests, none answered, after which the path is given up on.
const GIVE_UP: u32 = 20;

/// Round trips from the generator's side to the receiver's side of `rig`
/// in `direction`, in µs: p50, p99, max, and how many got no answer.
pub(crate) fn latency(rig: &Rig, direction: Direction) -> Result<Value> {
    let ends = rig.ends(direction);
    let _server = WhoamiServer::spawn(
        ends.recv_ns,
        Transport::Udp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, lab::SERVICE_PORT),
        "bench",
    )?;
    let dst = ends.dst;
    let (mut rtts, lost) = ends
        .gen_ns
        .run(move || round_trips(dst))?
        .with_context(|| format!("request/response to {dst}"))?;
    rtts.sort_by(f64::total_cmp);
    Ok(json!({
        "rate_per_s": RATE,
        "requests": REQUESTS,
        "answered": rtts.len(),
        "lost": lost,
        "p50_us": median(&rtts),
        "p99_us": percentile(&rtts, 99.0),
        "max_us": rtts.last().copied().unwrap_or(f64::NAN),
    }))
}

/// [`REQUESTS`] requests to `dst` at [`RATE`]: the round trips (µs) and
/// the number lost.
fn round_trips(dst: SocketAddrV4) -> io::Result<(Vec<f64>, u32)> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(dst)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let period = Duration::from_secs(1) / RATE;
    let mut buf = [0u8; 256];
    let (mut rtts, mut lost) = (Vec::with_capacity(REQUESTS as usize), 0);
    let start = Instant::now();
    for i in 0..REQUESTS {
        if let Some(wait) = (start + period * i).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let t = Instant::now();
        socket.send(b"ping")?;
        match socket.recv(&mut buf) {
            Ok(_) => rtts.push(t.elapsed().as_secs_f64() * 1e6),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                lost += 1;
                // A path that does not answer at all is not waited out.
                if lost >= GIVE_UP && rtts.is_empty() {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((rtts, lost))
}
