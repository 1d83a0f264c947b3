//! Part 4 of the bench: how big a SYN flood each datapath absorbs before
//! anyone else's new flow fails (issue 14).
//!
//! For every variant (netbpf, iptables-nft) and every flood the lab is
//! built afresh under `nbb-flood-<pid>`: the outside machine, the host with
//! the uplink, one container serving TCP port 4000 published on the host's
//! port 8080. trafgen in the outside namespace sends TCP SYNs to the
//! published port at a fixed rate, from one address (random source ports)
//! or from random addresses of 198.18.0.0/16. Nobody owns those addresses:
//! the host routes the container's SYN-ACKs to the outside machine, which
//! does not forward and drops them silently, so the flood never answers
//! with a RST or an ACK, like a real SYN flood.
//!
//! While the flood runs and after it, legitimate clients try new
//! connections: the outside machine's own address to the published port
//! (inbound) and the container to a server on the outside machine
//! (outbound). A connection counts when the server's greeting line arrives
//! within a second. A connection opened before the flood must still echo
//! after it. Recorded per flood: the offered rate, the flows in the table at
//! the end of the flood, the datapath's drop counters, the legitimate
//! connections that worked during and after, and the time after the flood
//! until each kind works again.
//!
//! netbpf runs with `[conntrack] capacity = 16384` (so that the table fills
//! within a flood) and its default per-source budget; iptables-nft runs with
//! the kernel's conntrack at the machine's `nf_conntrack_max`, which is
//! global and read-only inside a namespace: it is read and recorded, never
//! changed. Each datapath is therefore compared at its own limit.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

use super::{
    chart::Bar,
    install::timed_stdin,
    options::Options,
    router::{GEN_CPU, Kind, hex_list, mac_of, netdev_counter},
};
use crate::{
    lab::{self, Lab},
    maps::{self, NatMaps},
    netns::Netns,
};

/// The published port the flood and the inbound clients aim at.
const PUBLISHED: u16 = 8080;
/// netbpf's conntrack capacity in this part.
const NETBPF_CAPACITY: u32 = 16_384;
/// The single flood source: TEST-NET-2, owned by nobody in the lab.
const ONE_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A legitimate connection's budget: connect, then the greeting line.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time between the starts of two probes of one kind during a flood.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long after a flood the bench waits for legitimate connections to
/// work again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Probes of each kind made after recovery.
const AFTER_PROBES: usize = 10;

/// Where a flood comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sources {
    /// [`ONE_SOURCE`], a random source port per SYN.
    One,
    /// A random address of 198.18.0.0/16 and port per SYN.
    Many,
}

impl Sources {
    fn name(self) -> &'static str {
        match self {
            Sources::One => "one source",
            Sources::Many => "many sources",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Sources::One => "one",
            Sources::Many => "many",
        }
    }
}

/// One flood of the matrix.
#[derive(Debug, Clone, Copy)]
struct Flood {
    sources: Sources,
    /// SYNs per second; [`MAX`] is as fast as trafgen sends.
    rate: u64,
    secs: u64,
}

/// The rate of a flood that trafgen sends as fast as it can. Not in the
/// matrix yet: the first quick run with it (one source, netbpf) never
/// finished on the 2-core VM and the cause is not known.
const MAX: u64 = 0;

/// A flood's rate as the summary shows it.
fn rate_label(rate: &Value) -> String {
    match rate.as_u64() {
        Some(MAX) => "max".to_owned(),
        Some(r) => r.to_string(),
        None => "?".to_owned(),
    }
}

fn matrix(quick: bool) -> Vec<Flood> {
    let f = |sources, rate, secs| Flood {
        sources,
        rate,
        secs,
    };
    if quick {
        // The last one offers more SYNs than either table holds (16,384
        // and, on most machines, nf_conntrack_max = 262,144) if the sender
        // keeps the rate.
        vec![
            f(Sources::One, 1_000, 2),
            f(Sources::One, 10_000, 2),
            f(Sources::One, 50_000, 2),
            f(Sources::Many, 10_000, 2),
            f(Sources::Many, 50_000, 6),
        ]
    } else {
        vec![
            f(Sources::One, 1_000, 10),
            f(Sources::One, 10_000, 10),
            f(Sources::One, 50_000, 10),
            f(Sources::Many, 1_000, 10),
            f(Sources::Many, 10_000, 10),
            f(Sources::Many, 50_000, 10),
        ]
    }
}

/// Runs `f` on a new thread inside namespace `ns` and returns the handle.
fn spawn_in<T, F>(ns: &Netns, f: F) -> JoinHandle<io::Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = std::path::Path::new("/run/netns").join(ns.name());
    thread::spawn(move || {
        let file = File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
}

/// A TCP server that greets every connection with `hi\n` and then echoes
/// lines, one thread per connection.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    fn spawn(ns: &Netns, addr: SocketAddrV4) -> Result<Self> {
        let listener = ns
            .run(move || -> io::Result<TcpListener> {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::V4(addr).into())?;
                s.listen(4096)?;
                s.set_nonblocking(true)?;
                Ok(s.into())
            })?
            .with_context(|| format!("listening on {addr} in {}", ns.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || -> io::Result<()> {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || echo(stream));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            Ok(())
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(b"hi\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        stream.write_all(line.as_bytes())?;
        line.clear();
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One legitimate connection from the calling thread's namespace: true when
/// the greeting arrives within [`PROBE_TIMEOUT`].
fn probe(dst: SocketAddrV4) -> bool {
    let start = Instant::now();
    let Ok(stream) = TcpStream::connect_timeout(&SocketAddr::V4(dst), PROBE_TIMEOUT) else {
        return false;
    };
    let left = PROBE_TIMEOUT.saturating_sub(start.elapsed());
    if stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(stream).read_line(&mut line), Ok(n) if n > 0) && line == "hi\n"
}

/// Probes `dst` from `ns` every [`PROBE_INTERVAL`] until `stop`; returns
/// (probes, successes).
fn prober(
    ns: &Netns,
    dst: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> JoinHandle<io::Result<(u64, u64)>> {
    spawn_in(ns, move || {
        let (mut n, mut ok) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            n += 1;
            ok += u64::from(probe(dst));
            thread::sleep(PROBE_INTERVAL.saturating_sub(t.elapsed()));
        }
        Ok((n, ok))
    })
}

/// From `ns`: probes `dst` until one works (at most [`RECOVERY_LIMIT`]),
/// then [`AFTER_PROBES`] more; returns (seconds until one worked or None,
/// successes of the later probes).
fn recovery(ns: &Netns, dst: SocketAddrV4) -> JoinHandle<io::Result<(Option<f64>, u64)>> {
    spawn_in(ns, move || {
        let start = Instant::now();
        let mut recovered = None;
        while start.elapsed() < RECOVERY_LIMIT {
            if probe(dst) {
                recovered = Some(start.elapsed().as_secs_f64());
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let ok = (0..AFTER_PROBES).filter(|_| probe(dst)).count() as u64;
        Ok((recovered, ok))
    })
}

fn joined<T>(h: JoinHandle<io::Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("the {what} thread panicked"))?
        .with_context(|| what.to_owned())
}

/// The trafgen template: a TCP SYN from `src` (None: a random 198.18/16
/// address) and a random port to `dst`, a 54-byte frame. No padding:
/// trafgen's `csumtcp` sums everything after the TCP header's offset, so
/// padding would make every checksum wrong (and netfilter would count each
/// SYN as invalid instead of tracking it).
fn syn_config(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Option<Ipv4Addr>,
    dst: SocketAddrV4,
) -> String {
    let saddr = match src {
        Some(a) => hex_list(&a.octets()),
        None => "198, 18, drnd(2)".to_owned(),
    };
    // Ethernet 14 + IPv4 20 + TCP 20.
    format!(
        "{{\n  {dmac},\n  {smac},\n  c16(0x0800),\n\
         0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),\n\
         {saddr},\n  {daddr},\n\
         drnd(2), c16({dport}), drnd(4), c32(0), 0x50, 0x02, c16(64240), csumtcp(14, 34), c16(0)\n}}\n",
        dmac = hex_list(&dst_mac),
        smac = hex_list(&src_mac),
        daddr = hex_list(&dst.ip().octets()),
        dport = dst.port(),
    )
}

/// The kernel's conntrack statistics in `ns`, summed over CPUs
/// (`/proc/net/stat/nf_conntrack`), plus `nf_conntrack_count`.
fn nf_stats(ns: &Netns) -> Result<serde_json::Map<String, Value>> {
    let out = ns.exec("cat", &["/proc/net/stat/nf_conntrack"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for line in lines {
        for (i, v) in line.split_whitespace().enumerate() {
            if let (Some(s), Ok(v)) = (sums.get_mut(i), u64::from_str_radix(v, 16)) {
                *s += v;
            }
        }
    }
    let mut m = serde_json::Map::new();
    for (name, v) in names.iter().zip(sums) {
        // `entries` is global, not this namespace's.
        if ["insert_failed", "drop", "early_drop", "invalid"].contains(name) {
            m.insert((*name).to_owned(), json!(v));
        }
    }
    let count = ns.exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"])?;
    let count: u64 = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    m.insert("flows".to_owned(), json!(count));
    Ok(m)
}

/// netbpf's drop counters (those not zero) and its flows: all, and from
/// the flood's addresses.
fn netbpf_stats(lab: &Lab) -> Result<serde_json::Map<String, Value>> {
    let stats = maps::read_stats(&lab.pin_dir)?;
    let mut m = serde_json::Map::new();
    for (name, v) in &stats.counters {
        if name.starts_with("drop_") && *v > 0 {
            m.insert((*name).to_owned(), json!(v));
        }
    }
    let flows = NatMaps::open_pinned(&lab.pin_dir)?.flows()?;
    let flood = flows
        .iter()
        .filter(|(k, _)| {
            let a = Ipv4Addr::from(k.remote_addr);
            a == ONE_SOURCE || (a.octets()[0] == 198 && a.octets()[1] == 18)
        })
        .count();
    m.insert("flows".to_owned(), json!(flows.len()));
    m.insert("flood_flows".to_owned(), json!(flood));
    Ok(m)
}

/// `after - before` for every number in `after`.
fn delta(before: &serde_json::Map<String, Value>, after: &serde_json::Map<String, Value>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in after {
        let b = before.get(k).and_then(Value::as_u64).unwrap_or(0);
        m.insert(k.clone(), json!(v.as_u64().unwrap_or(0).saturating_sub(b)));
    }
    Value::Object(m)
}

/// The lab for one variant, with servers running and an established
/// connection from the outside to the published port.
struct Rig {
    // Field order is drop order: connections and servers before the lab.
    established: TcpStream,
    _servers: Vec<Server>,
    lab: Lab,
    kind: Kind,
}

impl Rig {
    fn build(opts: &Options, kind: Kind) -> Result<Self> {
        let prefix = format!("nbb-flood-{}", std::process::id());
        let mut lab = Lab::build(&prefix, 1)?;
        let c1 = lab.containers[0].addr;
        let to = SocketAddrV4::new(c1, lab::SERVICE_PORT);
        let servers = vec![
            Server::spawn(
                &lab.containers[0].ns,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, lab::SERVICE_PORT),
            )?,
            Server::spawn(
                &lab.outside,
                SocketAddrV4::new(lab::OUTSIDE_ADDR, lab::SERVICE_PORT),
            )?,
        ];
        match kind {
            Kind::Netbpf => {
                let extra = lab::publish_toml("tcp", &PUBLISHED.to_string(), to, None)
                    + &format!("\n[conntrack]\ncapacity = {NETBPF_CAPACITY}\n");
                lab.start_daemon(&opts.netbpf_exe, &extra)?;
            }
            Kind::Iptables => {
                let rules = format!(
                    "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                     -A PREROUTING -d {up}/32 -p tcp -m tcp --dport {PUBLISHED} -j DNAT --to-destination {to}\n\
                     -A POSTROUTING -s {cidr} -o eth0 -j MASQUERADE\nCOMMIT\n",
                    up = lab::UPLINK_ADDR,
                    cidr = lab::CONTAINER_CIDR,
                );
                timed_stdin(&lab.host, "iptables-nft-restore", &[], &rules)?;
            }
            Kind::Plain => bail!("the flood bench has no plain variant"),
        }
        let published = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED);
        let outside = SocketAddrV4::new(lab::OUTSIDE_ADDR, lab::SERVICE_PORT);
        let ok = joined(
            spawn_in(&lab.outside, move || Ok(probe(published))),
            "probe",
        )? && joined(
            spawn_in(&lab.containers[0].ns, move || Ok(probe(outside))),
            "probe",
        )?;
        if !ok {
            bail!("{}: the lab does not connect before any flood", kind.name());
        }
        let established = joined(
            spawn_in(&lab.outside, move || {
                let s = TcpStream::connect_timeout(&SocketAddr::V4(published), PROBE_TIMEOUT)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = String::new();
                BufReader::new(s.try_clone()?).read_line(&mut line)?;
                Ok(s)
            }),
            "the established connection",
        )?;
        Ok(Self {
            established,
            _servers: servers,
            lab,
            kind,
        })
    }

    fn stats(&self) -> Result<serde_json::Map<String, Value>> {
        match self.kind {
            Kind::Netbpf => netbpf_stats(&self.lab),
            _ => nf_stats(&self.lab.host),
        }
    }

    /// Whether the connection opened before the flood still echoes.
    fn established_alive(&self) -> bool {
        let Ok(mut s) = self.established.try_clone() else {
            return false;
        };
        if s.write_all(b"still there?\n").is_err() {
            return false;
        }
        let mut line = String::new();
        // The greeting was read in build; the next line is the echo.
        matches!(BufReader::new(&self.established).read_line(&mut line), Ok(n) if n > 0)
            && line == "still there?\n"
    }

    /// Sends the flood with trafgen on the generator CPU; returns the SYNs
    /// that left the outside machine's interface and the flood's duration.
    fn flood(&self, f: Flood) -> Result<(u64, f64)> {
        let cfg = self.lab.dir.join("flood.cfg");
        let src = match f.sources {
            Sources::One => Some(ONE_SOURCE),
            Sources::Many => None,
        };
        let dst = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED);
        fs::write(
            &cfg,
            syn_config(
                mac_of(&self.lab.host, "eth0")?,
                mac_of(&self.lab.outside, "eth0")?,
                src,
                dst,
            ),
        )?;
        let tx0 = netdev_counter(&self.lab.outside, "eth0", "tx_packets")?;
        let start = Instant::now();
        let mut cmd = self.lab.outside.command("taskset");
        cmd.args(["-c", &GEN_CPU.to_string(), "trafgen"])
            .args([
                "--dev",
                "eth0",
                "--conf",
                &cfg.to_string_lossy(),
                "--cpus",
                "1",
            ])
            .args(["--notouch-irq", "--no-sock-mem", "--no-cpu-stats"]);
        if f.rate == MAX {
            // Stopped at the deadline below.
            cmd.args(["--num", "1000000000"]);
        } else {
            cmd.args(["--num", &(f.rate * f.secs).to_string()])
                .args(["--rate", &format!("{}pps", f.rate)]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen (cargo xtask setup installs netsniff-ng)")?;
        // A slower receiver slows trafgen down; the flood lasts its time.
        let deadline = start + Duration::from_secs(f.secs);
        let mut stopped = false;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if !stopped && Instant::now() > deadline {
                // Our own child, by its pid (ip netns exec execs taskset,
                // which execs trafgen).
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                stopped = true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let secs = start.elapsed().as_secs_f64();
        let out = child.wait_with_output()?;
        if !out.status.success() && !stopped {
            bail!(
                "trafgen failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let tx1 = netdev_counter(&self.lab.outside, "eth0", "tx_packets")?;
        Ok((tx1.saturating_sub(tx0), secs))
    }
}

/// One flood against one variant.
fn run_flood(opts: &Options, kind: Kind, f: Flood) -> Result<Value> {
    let rig = Rig::build(opts, kind)?;
    let published = SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED);
    let outside = SocketAddrV4::new(lab::OUTSIDE_ADDR, lab::SERVICE_PORT);
    let c1 = &rig.lab.containers[0].ns;
    let before = rig.stats()?;
    let c1_rx0 = netdev_counter(c1, "eth0", "rx_packets")?;
    let stop = Arc::new(AtomicBool::new(false));
    let inbound = prober(&rig.lab.outside, published, stop.clone());
    let outbound = prober(c1, outside, stop.clone());
    let flooded = rig.flood(f);
    stop.store(true, Ordering::Relaxed);
    let (sent, secs) = flooded?;
    let at_end = rig.stats()?;
    let c1_rx = netdev_counter(c1, "eth0", "rx_packets")?.saturating_sub(c1_rx0);
    let (in_n, in_ok) = joined(inbound, "inbound probes")?;
    let (out_n, out_ok) = joined(outbound, "outbound probes")?;
    let rec_in = recovery(&rig.lab.outside, published);
    let rec_out = recovery(c1, outside);
    let (in_back, in_after) = joined(rec_in, "inbound recovery")?;
    let (out_back, out_after) = joined(rec_out, "outbound recovery")?;
    let alive = rig.established_alive();
    let flows = at_end.get("flows").cloned().unwrap_or(Value::Null);
    let flood_flows = at_end.get("flood_flows").cloned().unwrap_or(Value::Null);
    let all_ok =
        in_ok == in_n && out_ok == out_n && in_after + out_after == 2 * AFTER_PROBES as u64;
    let row = json!({
        "variant": kind.name(),
        "sources": f.sources.key(),
        "rate_pps": f.rate,
        "flood_s": secs,
        "syns_sent": sent,
        "offered_pps": sent as f64 / secs,
        "container_rx_packets": c1_rx,
        "flows_at_end": flows,
        "flood_flows_at_end": flood_flows,
        "counters": delta(&before, &at_end),
        "during": {
            "inbound": {"tried": in_n, "ok": in_ok},
            "outbound": {"tried": out_n, "ok": out_ok},
        },
        "after": {
            "inbound_recovered_s": in_back,
            "outbound_recovered_s": out_back,
            "inbound_ok": in_after,
            "outbound_ok": out_after,
            "probes": AFTER_PROBES,
        },
        "established_survived": alive,
        "all_legit_ok": all_ok && alive,
    });
    eprintln!(
        "bench:   {:<12} {:<12} {:>6} SYN/s asked, {:>7.0} sent/s for {:.1} s: {} flows; legit during in {in_ok}/{in_n} out {out_ok}/{out_n}, after in {in_after}/{AFTER_PROBES} out {out_after}/{AFTER_PROBES}, established {}",
        kind.name(),
        f.sources.name(),
        rate_label(&json!(f.rate)),
        sent as f64 / secs,
        secs,
        flows,
        if alive { "kept" } else { "LOST" },
    );
    Ok(row)
}

/// The highest offered rate of `sources` floods whose legitimate
/// connections all worked, below the first one where one failed.
fn absorbed(rows: &[Value], kind: Kind, sources: Sources) -> Value {
    let mut mine: Vec<&Value> = rows
        .iter()
        .filter(|r| r["variant"] == kind.name() && r["sources"] == sources.key())
        .collect();
    // The sender's maximum (rate 0) is the largest.
    mine.sort_by_key(|r| match r["rate_pps"].as_u64() {
        Some(MAX) | None => u64::MAX,
        Some(r) => r,
    });
    let mut best: Option<&Value> = None;
    let mut failed: Option<&Value> = None;
    for r in mine {
        if r["all_legit_ok"].as_bool() == Some(true) {
            best = Some(r);
        } else {
            failed = Some(r);
            break;
        }
    }
    json!({
        "absorbed_pps": best.map(|r| r["offered_pps"].clone()),
        "flows_at_end": best.map(|r| r["flows_at_end"].clone()),
        "first_failure_pps": failed.map(|r| r["offered_pps"].clone()),
        "every_flood_absorbed": failed.is_none(),
    })
}

/// Runs part 4.
pub fn bench(opts: &Options) -> Result<Value> {
    let nf_max: u64 = fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut rows = Vec::new();
    for f in matrix(opts.quick) {
        // Interleaved: both variants see the machine in the same state.
        for kind in [Kind::Netbpf, Kind::Iptables] {
            let row = run_flood(opts, kind, f).with_context(|| {
                format!(
                    "flood: {} {} at {} SYN/s",
                    kind.name(),
                    f.sources.name(),
                    rate_label(&json!(f.rate))
                )
            })?;
            rows.push(row);
        }
    }
    let mut figures = serde_json::Map::new();
    for kind in [Kind::Netbpf, Kind::Iptables] {
        figures.insert(
            kind.name().to_owned(),
            json!({
                "one_source": absorbed(&rows, kind, Sources::One),
                "many_sources": absorbed(&rows, kind, Sources::Many),
            }),
        );
    }
    let mut ratios = Vec::new();
    let (nb, ipt): (Vec<&Value>, Vec<&Value>) = rows.iter().partition(|r| r["variant"] == "netbpf");
    for (a, b) in nb.iter().zip(ipt) {
        let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let legit = |r: &Value| {
            let n = r["during"]["inbound"]["tried"].as_f64().unwrap_or(0.0)
                + r["during"]["outbound"]["tried"].as_f64().unwrap_or(0.0);
            let ok = r["during"]["inbound"]["ok"].as_f64().unwrap_or(0.0)
                + r["during"]["outbound"]["ok"].as_f64().unwrap_or(0.0);
            ok / n
        };
        ratios.push(json!({
            "sources": a["sources"],
            "rate_pps": a["rate_pps"],
            "flows_netbpf_over_iptables": f(a, "flows_at_end") / f(b, "flows_at_end"),
            "legit_ok_during_netbpf": legit(a),
            "legit_ok_during_iptables": legit(b),
        }));
    }
    Ok(json!({
        "method": "Lab topology (outside -- host -- container c1 serving TCP 4000, published on \
                   host port 8080), rebuilt per variant and flood under nbb-flood-<pid>. trafgen \
                   in the outside namespace (CPU 0) sends TCP SYNs to 203.0.113.1:8080 at a fixed \
                   rate (or as fast as it can: \"max\") for a fixed time, from 198.51.100.7 with random source ports (one source) \
                   or from random 198.18.0.0/16 addresses (many sources); the SYN-ACKs are routed \
                   to the outside namespace, which does not forward and drops them, so the flood \
                   never answers. During the flood the outside's own address connects to the \
                   published port and the container connects to a server on the outside, every \
                   100 ms each; a connection counts when the server's greeting arrives within 1 s. \
                   After the flood: time until each kind works again (at most 10 s), then 10 more \
                   of each, and whether a connection opened before the flood still echoes. \
                   netbpf: [conntrack] capacity = 16384, default [inbound] budget (100 new flows/s \
                   per source, bursts of 1000). iptables-nft: DNAT + MASQUERADE in the host \
                   namespace, the kernel's conntrack at the machine's nf_conntrack_max (global, \
                   read-only in a namespace, not changed): each datapath at its own limit.",
        "netbpf_conntrack_capacity": NETBPF_CAPACITY,
        "nf_conntrack_max": nf_max,
        "probe_timeout_s": PROBE_TIMEOUT.as_secs_f64(),
        "rows": rows,
        "figures": figures,
        "ratios": ratios,
    }))
}

fn fmt_rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |r| format!("{r:.0}"))
}

fn fmt_recovered(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "not in 10 s".to_owned(), |s| format!("{s:.2} s"))
}

/// Part 4 of the markdown summary.
pub fn summary(s: &mut String, f: &Value) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\n## SYN flood: what each datapath absorbs before anyone else's new flow fails\n"
    );
    if let Some(why) = f["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
        return;
    }
    let _ = writeln!(
        s,
        "{}\n\nnetbpf conntrack capacity {}; this machine's `nf_conntrack_max` {} (not \
         changed). Legit connection = a new TCP connection whose greeting arrives within {} s; \
         *in* = the outside's own address to the published port, *out* = the container to the \
         outside.\n",
        f["method"].as_str().unwrap_or(""),
        f["netbpf_conntrack_capacity"],
        f["nf_conntrack_max"],
        f["probe_timeout_s"],
    );
    let _ = writeln!(
        s,
        "| datapath | flood | SYN/s asked | SYN/s sent | s | flows at end (flood's) | drop counters | legit during in / out | works again in / out | after in / out | older connection |\n\
         |---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"
    );
    for r in f["rows"].as_array().cloned().unwrap_or_default() {
        let counters = r["counters"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| *k != "flows" && *k != "flood_flows" && v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let flood_flows = if r["flood_flows_at_end"].is_null() {
            String::new()
        } else {
            format!(" ({})", r["flood_flows_at_end"])
        };
        let d = &r["during"];
        let a = &r["after"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.1} | {}{flood_flows} | {} | {}/{} / {}/{} | {} / {} | {}/{} / {}/{} | {} |",
            r["variant"].as_str().unwrap_or("?"),
            r["sources"].as_str().unwrap_or("?"),
            rate_label(&r["rate_pps"]),
            r["offered_pps"].as_f64().unwrap_or(f64::NAN),
            r["flood_s"].as_f64().unwrap_or(f64::NAN),
            r["flows_at_end"],
            if counters.is_empty() {
                "–"
            } else {
                &counters
            },
            d["inbound"]["ok"],
            d["inbound"]["tried"],
            d["outbound"]["ok"],
            d["outbound"]["tried"],
            fmt_recovered(&a["inbound_recovered_s"]),
            fmt_recovered(&a["outbound_recovered_s"]),
            a["inbound_ok"],
            a["probes"],
            a["outbound_ok"],
            a["probes"],
            if r["established_survived"].as_bool() == Some(true) {
                "echoes"
            } else {
                "**lost**"
            },
        );
    }
    let _ = writeln!(
        s,
        "\nThe figure: the highest flood rate (SYN/s sent) after which, and during which, every \
         legit connection worked, up to the first rate where one failed (\"≥\" when none \
         failed: the datapath absorbed the largest flood the bench sent).\n\n\
         | datapath | one source: absorbed SYN/s | flows at end | first failure | many sources: absorbed SYN/s | flows at end | first failure |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    if let Some(figs) = f["figures"].as_object() {
        for (name, fig) in figs {
            let cell = |k: &str| {
                let x = &fig[k];
                let ge = if x["every_flood_absorbed"].as_bool() == Some(true) {
                    "≥ "
                } else {
                    ""
                };
                format!(
                    "{ge}{} | {} | {}",
                    fmt_rate(&x["absorbed_pps"]),
                    x["flows_at_end"],
                    fmt_rate(&x["first_failure_pps"])
                )
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} |",
                cell("one_source"),
                cell("many_sources")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| flood | SYN/s asked | flows at end netbpf/iptables | legit during, netbpf | legit during, iptables |\n|---|---:|---:|---:|---:|"
    );
    for q in f["ratios"].as_array().cloned().unwrap_or_default() {
        let pct = |k: &str| {
            q[k].as_f64()
                .map_or_else(|| "–".to_owned(), |v| format!("{:.0} %", v * 100.0))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            q["sources"].as_str().unwrap_or("?"),
            rate_label(&q["rate_pps"]),
            q["flows_netbpf_over_iptables"]
                .as_f64()
                .map_or_else(|| "–".to_owned(), |v| format!("{v:.3}")),
            pct("legit_ok_during_netbpf"),
            pct("legit_ok_during_iptables"),
        );
    }
}

/// The plot's bars for part 4: flows in the table at the end of each
/// flood, with the share of legit connections that worked during it.
pub fn plot_bars(f: &Value) -> Vec<Bar> {
    let mut bars = Vec::new();
    for r in f["rows"].as_array().cloned().unwrap_or_default() {
        let colour = if r["variant"] == "netbpf" {
            "#2a7ab0"
        } else {
            "#c0504d"
        };
        let d = &r["during"];
        let tried = d["inbound"]["tried"].as_f64().unwrap_or(0.0)
            + d["outbound"]["tried"].as_f64().unwrap_or(0.0);
        let ok = d["inbound"]["ok"].as_f64().unwrap_or(0.0)
            + d["outbound"]["ok"].as_f64().unwrap_or(0.0);
        bars.push((
            format!(
                "{} {} {}",
                r["variant"].as_str().unwrap_or("?"),
                if r["sources"] == "one" {
                    "1 src"
                } else {
                    "many"
                },
                match r["rate_pps"].as_u64() {
                    Some(MAX) | None => "max".to_owned(),
                    Some(v) => format!("{}k/s", v / 1000),
                }
            ),
            r["flows_at_end"].as_f64().unwrap_or(f64::NAN),
            colour,
            format!(" flows, legit {:.0} %", 100.0 * ok / tried.max(1.0)),
        ));
    }
    bars
}
