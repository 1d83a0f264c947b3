//! Prometheus metrics: the datapath's counters, table fill and port use in
//! the text exposition format (version 0.0.4), served over HTTP by the
//! daemon.
//!
//! Every scrape reads the pinned maps afresh (the same readers as `netbpf
//! stats`), so the numbers are the kernel's, summed over CPUs, at scrape
//! time. The format is written here rather than through a client library:
//! the values are not instrumented in this process but read from the
//! kernel on each scrape (a library would need a custom collector around
//! the same reads), the metric set is small and fixed, and the format is a
//! few lines of text. The HTTP side is a minimal responder on tokio: `GET
//! /metrics` (and `HEAD`), one request per connection, nothing else.
//!
//! Each connection is served by its own task on the daemon's runtime, so a
//! client that connects and sends nothing, or never reads its answer, holds
//! only its own connection: reading the request and writing the answer
//! each have a timeout, and only the map reads are limited to a few at a
//! time. At most [`MAX_CONNECTIONS`] connections are served at once; one
//! more is closed at once rather than queued.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use log::{info, warn};
use netbpf_common::Counter;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

use crate::{
    maps::{self, MapsError, Stats},
    occupancy::Occupancy,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes reading the maps at once; more wait for a slot (for as long
/// as the map reads take, never for a client).
const MAX_CONCURRENT_SCRAPES: usize = 4;
/// Connections served at once; one more is closed straight away.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted.
const MAX_REQUEST_BYTES: usize = 8192;

/// Metrics endpoint failures.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("metrics.address: cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family being written: its samples, in order.
struct Family {
    help: &'static str,
    kind: Kind,
    /// `(name suffix, labels, value)`; the suffix is `_bucket`, `_sum` or
    /// `_count` for a histogram, empty otherwise.
    samples: Vec<(&'static str, Labels, f64)>,
}

/// Label names and values of one sample.
type Labels = Vec<(&'static str, String)>;

/// Collects families by name (sorted on output) and writes them.
#[derive(Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    fn sample(
        &mut self,
        name: &str,
        help: &'static str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        self.sample_with_suffix(name, "", help, kind, labels, value);
    }

    fn sample_with_suffix(
        &mut self,
        name: &str,
        suffix: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        self.families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                help,
                kind,
                samples: Vec::new(),
            })
            .samples
            .push((suffix, labels, value));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.name());
            for (suffix, labels, value) in &f.samples {
                out.push_str(name);
                out.push_str(suffix);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The family, labels and help of one datapath counter. Drops share one
/// family labelled by reason; translations share families labelled by
/// kind; a counter added later without a name here gets
/// `netbpf_<name>_total`.
fn counter_family(c: Counter) -> (String, Vec<(&'static str, String)>, &'static str) {
    let name = c.name();
    if c.is_drop() {
        let reason = name.strip_prefix("drop_").unwrap_or(name).to_owned();
        return (
            "netbpf_dropped_packets_total".into(),
            vec![("reason", reason)],
            "Packets dropped by the datapath, by reason.",
        );
    }
    let kind = |k: &str| vec![("kind", k.to_owned())];
    const PACKETS: &str = "Packets translated, by kind: snat (source NAT going out), reverse (replies translated back), dnat (to a published port), hairpin (container to an outside endpoint of this NAT).";
    const BYTES: &str = "Bytes (IP total length) translated, by kind.";
    match c {
        Counter::Passed => (
            "netbpf_passed_packets_total".into(),
            vec![],
            "Packets the programs looked at and left to the kernel untouched.",
        ),
        Counter::SnatPackets => (
            "netbpf_translated_packets_total".into(),
            kind("snat"),
            PACKETS,
        ),
        Counter::ReversePackets => (
            "netbpf_translated_packets_total".into(),
            kind("reverse"),
            PACKETS,
        ),
        Counter::DnatPackets => (
            "netbpf_translated_packets_total".into(),
            kind("dnat"),
            PACKETS,
        ),
        Counter::HairpinPackets => (
            "netbpf_translated_packets_total".into(),
            kind("hairpin"),
            PACKETS,
        ),
        Counter::SnatBytes => ("netbpf_translated_bytes_total".into(), kind("snat"), BYTES),
        Counter::ReverseBytes => (
            "netbpf_translated_bytes_total".into(),
            kind("reverse"),
            BYTES,
        ),
        Counter::DnatBytes => ("netbpf_translated_bytes_total".into(), kind("dnat"), BYTES),
        Counter::MappingsCreated => (
            "netbpf_nat_mappings_created_total".into(),
            vec![],
            "NAT mappings (outside ports) allocated.",
        ),
        Counter::FlowsCreated => (
            "netbpf_conntrack_flows_created_total".into(),
            vec![],
            "Conntrack flows created.",
        ),
        Counter::FragmentsPassed => (
            "netbpf_fragments_total".into(),
            vec![("action", "passed".into())],
            "IPv4 non-first fragments, by what happened to them.",
        ),
        Counter::FragmentsTranslated => (
            "netbpf_fragments_total".into(),
            vec![("action", "translated".into())],
            "IPv4 non-first fragments, by what happened to them.",
        ),
        Counter::IcmpErrorsTranslated => (
            "netbpf_icmp_errors_translated_total".into(),
            vec![],
            "ICMP errors translated (outer and quoted headers), both directions.",
        ),
        _ => (
            format!("netbpf_{name}_total"),
            vec![],
            "A datapath counter (see docs/operations.md).",
        ),
    }
}

/// Renders counters and occupancy in the text exposition format.
pub fn render(stats: &Stats, occupancy: &Occupancy) -> String {
    let mut e = Exposition::default();
    e.sample(
        "netbpf_up",
        "1 when the datapath's maps could be read.",
        Kind::Gauge,
        vec![],
        1.0,
    );
    for c in Counter::ALL {
        let (name, labels, help) = counter_family(c);
        e.sample(&name, help, Kind::Counter, labels, stats.get(c) as f64);
    }
    // Port allocations by probes needed: a histogram of the successful
    // ones (the last bucket of the map counts failures, reported apart).
    let buckets = stats.port_probes.len().saturating_sub(1);
    const PROBES: &str =
        "Ports probed per successful NAT port allocation (0 = the first choice was free).";
    let (mut cumulative, mut sum) = (0u64, 0u64);
    for (i, n) in stats.port_probes.iter().take(buckets).enumerate() {
        cumulative += n;
        sum += n * i as u64;
        e.sample_with_suffix(
            "netbpf_port_allocation_probes",
            "_bucket",
            PROBES,
            Kind::Histogram,
            vec![("le", i.to_string())],
            cumulative as f64,
        );
    }
    for (suffix, labels, v) in [
        ("_bucket", vec![("le", "+Inf".to_owned())], cumulative),
        ("_sum", vec![], sum),
        ("_count", vec![], cumulative),
    ] {
        e.sample_with_suffix(
            "netbpf_port_allocation_probes",
            suffix,
            PROBES,
            Kind::Histogram,
            labels,
            v as f64,
        );
    }
    e.sample(
        "netbpf_port_allocation_failures_total",
        "NAT port allocations that found no free port within the probe limit.",
        Kind::Counter,
        vec![],
        stats.port_probes.last().copied().unwrap_or(0) as f64,
    );
    for t in &occupancy.tables {
        let table = vec![("table", t.table.to_lowercase())];
        e.sample(
            "netbpf_table_entries",
            "Entries in a datapath hash map (conntrack, nat_mappings, nat_reverse).",
            Kind::Gauge,
            table.clone(),
            t.entries as f64,
        );
        e.sample(
            "netbpf_table_entries_limit",
            "Capacity (max_entries) of a datapath hash map.",
            Kind::Gauge,
            table,
            f64::from(t.capacity),
        );
    }
    for p in &occupancy.ports {
        let labels = vec![("address", p.addr.to_string()), ("proto", p.proto.clone())];
        e.sample(
            "netbpf_nat_ports_used",
            "Outside ports (ICMP: identifiers) held by NAT mappings, per outside address and protocol.",
            Kind::Gauge,
            labels.clone(),
            p.used as f64,
        );
        e.sample(
            "netbpf_nat_ports_limit",
            "Outside ports the masquerade rules allow, per outside address and protocol.",
            Kind::Gauge,
            labels,
            p.available as f64,
        );
    }
    for s in &occupancy.flow_states {
        e.sample(
            "netbpf_conntrack_flows",
            "Conntrack flows by protocol and state.",
            Kind::Gauge,
            vec![("proto", s.proto.clone()), ("state", s.state.to_owned())],
            s.flows as f64,
        );
    }
    e.render()
}

/// Reads the maps pinned in `dir` and renders them.
pub fn gather(dir: &Path) -> Result<String, MapsError> {
    let stats = maps::read_stats(dir)?;
    let occupancy = Occupancy::read(dir)?;
    Ok(render(&stats, &occupancy))
}

/// Binds the metrics listener (before anything is attached, so a bad
/// address stops the daemon with nothing changed).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves metrics for the datapath pinned in `pin_dir` on `listener` until
/// the returned task is aborted (or the runtime stops).
pub fn spawn(listener: TcpListener, pin_dir: PathBuf) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!("serving Prometheus metrics on http://{addr}/metrics");
    }
    let pin_dir = Arc::new(pin_dir);
    let scrapes = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Never wait here: the accept loop serves everyone.
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                log::debug!("metrics: {MAX_CONNECTIONS} connections open, closing {peer}");
                drop(stream);
                continue;
            };
            let (pin_dir, scrapes) = (pin_dir.clone(), scrapes.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &pin_dir, &scrapes).await {
                    log::debug!("metrics: connection from {peer}: {e}");
                }
                drop(permit);
            });
        }
    })
}

/// Reads one request head and answers it.
async fn handle(mut stream: TcpStream, pin_dir: &Path, scrapes: &Semaphore) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let dir = pin_dir.to_owned();
            let _slot = scrapes.acquire().await.map_err(io::Error::other)?;
            match tokio::task::spawn_blocking(move || gather(&dir)).await {
                Ok(Ok(text)) => ("200 OK", CONTENT_TYPE, text),
                Ok(Err(e)) => (
                    "503 Service Unavailable",
                    "text/plain; charset=utf-8",
                    format!("netbpf: reading the maps: {}\n", error_chain(&e)),
                ),
                Err(e) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    format!("netbpf: {e}\n"),
                ),
            }
        }
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "netbpf: metrics are at /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(done) => done,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take the answer in time",
        )),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::occupancy::{PortUse, StateCount, TableFill};
    use netbpf_common::PORT_PROBE_BUCKETS;

    fn stats() -> Stats {
        let counters = Counter::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name(), i as u64 * 10))
            .collect();
        let mut port_probes = vec![0; PORT_PROBE_BUCKETS as usize];
        port_probes[0] = 5;
        port_probes[2] = 1;
        port_probes[PORT_PROBE_BUCKETS as usize - 1] = 3;
        Stats {
            counters,
            port_probes,
        }
    }

    fn occupancy() -> Occupancy {
        Occupancy {
            tables: vec![TableFill {
                table: "CONNTRACK",
                entries: 7,
                capacity: 1024,
            }],
            ports: vec![PortUse {
                addr: "203.0.113.1".parse().unwrap(),
                proto: "tcp".into(),
                used: 2,
                available: 1000,
                ranges: "61000-61999".into(),
            }],
            flow_states: vec![StateCount {
                proto: "tcp".into(),
                state: "ESTABLISHED",
                flows: 7,
            }],
        }
    }

    /// A minimal parser of the text format: `(name, labels, value)` of every
    /// sample, checking that each sample's family was declared first.
    type Sample = (String, Vec<(String, String)>, f64);

    fn parse(text: &str) -> Vec<Sample> {
        let mut typed: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut f = rest.split(' ');
                typed.push(f.next().unwrap().to_owned());
                assert!(matches!(f.next(), Some("counter" | "gauge" | "histogram")));
                continue;
            }
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP "), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().unwrap()
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => {
                    let l = l.strip_suffix('}').unwrap();
                    let labels = l
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (n.to_owned(), labels)
                }
                None => (series.to_owned(), vec![]),
            };
            assert!(
                typed.iter().any(|t| name == *t
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{t}{s}"))),
                "{name} sampled before its # TYPE"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{name}"
            );
            out.push((name, labels, value));
        }
        out
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .2
    }

    #[test]
    fn every_counter_is_exported_once() {
        let text = render(&stats(), &occupancy());
        let samples = parse(&text);
        let s = stats();
        for c in Counter::ALL {
            let (name, labels, _) = counter_family(c);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(value(&samples, &name, &labels), s.get(c) as f64, "{c:?}");
        }
        // Distinct counters never share a series.
        let mut series: Vec<(String, Vec<(&str, String)>)> = Counter::ALL
            .iter()
            .map(|c| {
                let (name, labels, _) = counter_family(*c);
                (name, labels)
            })
            .collect();
        series.sort();
        series.dedup();
        assert_eq!(series.len(), Counter::ALL.len());
        for (name, label, c) in [
            (
                "netbpf_dropped_packets_total",
                ("reason", "conntrack_full"),
                Counter::DropConntrackFull,
            ),
            (
                "netbpf_translated_packets_total",
                ("kind", "snat"),
                Counter::SnatPackets,
            ),
        ] {
            assert_eq!(value(&samples, name, &[label]), s.get(c) as f64, "{c:?}");
        }
        // Each family is declared exactly once.
        let types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE netbpf_translated_packets_total "))
            .count();
        assert_eq!(types, 1);
    }

    #[test]
    fn histogram_and_gauges() {
        let samples = parse(&render(&stats(), &occupancy()));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(
            v("netbpf_port_allocation_probes_bucket", &[("le", "0")]),
            5.0
        );
        assert_eq!(
            v("netbpf_port_allocation_probes_bucket", &[("le", "1")]),
            5.0
        );
        assert_eq!(
            v("netbpf_port_allocation_probes_bucket", &[("le", "2")]),
            6.0
        );
        assert_eq!(
            v("netbpf_port_allocation_probes_bucket", &[("le", "+Inf")]),
            6.0
        );
        assert_eq!(v("netbpf_port_allocation_probes_sum", &[]), 2.0);
        assert_eq!(v("netbpf_port_allocation_probes_count", &[]), 6.0);
        assert_eq!(v("netbpf_port_allocation_failures_total", &[]), 3.0);
        assert_eq!(v("netbpf_table_entries", &[("table", "conntrack")]), 7.0);
        assert_eq!(
            v("netbpf_table_entries_limit", &[("table", "conntrack")]),
            1024.0
        );
        let port = [("address", "203.0.113.1"), ("proto", "tcp")];
        assert_eq!(v("netbpf_nat_ports_used", &port), 2.0);
        assert_eq!(v("netbpf_nat_ports_limit", &port), 1000.0);
        assert_eq!(
            v(
                "netbpf_conntrack_flows",
                &[("proto", "tcp"), ("state", "ESTABLISHED")]
            ),
            7.0
        );
        assert_eq!(v("netbpf_up", &[]), 1.0);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.5), "0.5");
    }
}
