//! NAT session events (the RFC 8158 idea: who held which outside port
//! when), written by the daemon as JSON lines when `--events` is given:
//!
//! * `mapping_created`: from the kernel, through the `EVENTS` ring buffer;
//! * `mapping_expired`: the expiry pass released a mapping (its last flow
//!   had expired);
//! * `flow_closed`: the expiry pass removed a TCP flow that had closed.
//!
//! When events are off the kernel side costs one array lookup per new
//! mapping (`EVENTS_ON`), nothing per packet.

use std::{
    io::{self, Write},
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, Map, MapData, RingBuf};
use log::warn;
use netbpf_common::{Endpoint, FlowKey, FlowValue, NatEvent, event_kind, map_names};

use crate::{
    conntrack::{GcReport, monotonic_now_ns},
    maps::{self, MapsError, proto_name},
};

/// Where event lines go.
pub type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Turns the kernel side of events on or off in a pinned datapath.
pub fn set_enabled(pin_dir: &Path, on: bool) -> Result<(), MapsError> {
    let name = map_names::EVENTS_ON;
    let data = maps::open_pinned(pin_dir, name)?;
    let mut array: Array<MapData, u32> =
        Array::try_from(Map::Array(data)).map_err(|source| MapsError::Map { name, source })?;
    array
        .set(0, &u32::from(on), 0)
        .map_err(|source| MapsError::Map { name, source })
}

fn endpoint(e: &Endpoint) -> String {
    format!("{}:{}", Ipv4Addr::from(e.addr), e.port)
}

/// Wall-clock seconds for a CLOCK_MONOTONIC time stamp.
fn unix_time(time_ns: u64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let age = monotonic_now_ns().saturating_sub(time_ns) as f64 / 1e9;
    now - age
}

/// One JSON line for an event.
pub fn json_line(kind: u32, inside: &Endpoint, outside: &Endpoint, time_ns: u64) -> String {
    let event = match kind {
        event_kind::MAPPING_CREATED => "mapping_created",
        event_kind::MAPPING_EXPIRED => "mapping_expired",
        event_kind::FLOW_CLOSED => "flow_closed",
        _ => "unknown",
    };
    serde_json::json!({
        "unix_time": (unix_time(time_ns) * 1000.0).round() / 1000.0,
        "event": event,
        "proto": proto_name(inside.proto),
        "inside": endpoint(inside),
        "outside": endpoint(outside),
    })
    .to_string()
}

fn write_line(sink: &Sink, line: &str) {
    let Ok(mut out) = sink.lock() else { return };
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        warn!("events: cannot write an event line");
    }
}

/// Writes the expiry pass's events.
pub fn write_gc(sink: &Sink, report: &GcReport) {
    let now = monotonic_now_ns();
    for (inside, outside) in &report.released {
        write_line(
            sink,
            &json_line(event_kind::MAPPING_EXPIRED, inside, outside, now),
        );
    }
    for (key, value) in &report.closed {
        let (inside, outside) = flow_endpoints(key, value);
        write_line(
            sink,
            &json_line(event_kind::FLOW_CLOSED, &inside, &outside, now),
        );
    }
}

fn flow_endpoints(key: &FlowKey, value: &FlowValue) -> (Endpoint, Endpoint) {
    (
        Endpoint::new(key.proto, key.inside_addr, key.inside_port),
        Endpoint::new(key.proto, value.outside_addr, value.outside_port),
    )
}

/// Opens the output: a file (appended to) or `-` for standard output.
pub fn open_sink(path: &Path) -> io::Result<Sink> {
    let out: Box<dyn Write + Send> = if path == Path::new("-") {
        Box::new(io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )
    };
    Ok(Arc::new(Mutex::new(out)))
}

/// Relays the kernel's events from the pinned ring buffer to `sink` until
/// the task is dropped.
pub fn spawn_reader(pin_dir: &Path, sink: Sink) -> Result<tokio::task::JoinHandle<()>, MapsError> {
    let name = map_names::EVENTS;
    let data = maps::open_pinned(pin_dir, name)?;
    let ring =
        RingBuf::try_from(Map::RingBuf(data)).map_err(|source| MapsError::Map { name, source })?;
    // SAFETY: the AsyncFd owns the ring buffer, so the fd it polls stays
    // open for as long as it is registered.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    }
    .map_err(|e| MapsError::Io {
        path: pin_dir.join(name),
        source: e.into(),
    })?;
    Ok(tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                warn!("events: ring buffer reader stopped");
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<NatEvent>() {
                    continue;
                }
                // SAFETY: the kernel writes whole NatEvents (repr(C), Pod);
                // the length was checked, read_unaligned copes with any
                // alignment.
                let event: NatEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                write_line(
                    &sink,
                    &json_line(event.kind, &event.inside, &event.outside, event.time_ns),
                );
            }
            guard.clear_ready();
        }
    }))
}
