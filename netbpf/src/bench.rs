//! The benchmark behind `cargo xtask bench` (see docs/performance.md).
//!
//! Three parts, each written to one JSON file with a markdown summary and
//! an SVG plot:
//!
//! 1. **In-kernel cost per path**: the real programs run through
//!    `BPF_PROG_TEST_RUN` on packets built here, with the `CONNTRACK` map
//!    pre-filled from userspace with 0, 10k and 1M flows.
//! 2. **Router cost, netbpf vs iptables-nft**: the lab topology (outside
//!    machine, host, one container) rebuilt for every variant; trafgen on
//!    CPU 0 sends UDP to a published port, RPS steers the host's receive
//!    processing to CPU 1, and CPU 1's busy time (from cpuidle residency)
//!    is divided by the packets the container received.
//! 3. **Install time** of 10k published ports: netbpf's map fill and daemon
//!    start against `iptables-nft-restore`.
//! 4. **Flood**: how big a SYN flood, from one source and from many, each
//!    datapath (netbpf, iptables-nft) absorbs before anyone else's new
//!    flow fails ([`flood`]).
//!
//! `--only PART` runs one of them (`kernel`, `router`, `install`, `flood`).
//!
//! Namespaces are named `nbb-*-<pid>` and pins live in
//! `/sys/fs/bpf/nbb-*-<pid>`; both are removed when the bench ends (also on
//! errors, through [`Netns`]'s and [`Lab`]'s drops).

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{ProgramInfo, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use netbpf_common::{
    ContainerEntry, Counter, Endpoint, FlowKey, FlowValue, PUBLISH_KEY_BITS, PublishKey,
    PublishRule, RouteUplink, flow_flags, map_names, proto,
};
use serde_json::{Value, json};

mod flood;

use crate::{
    config::Config,
    containers::programs as route_programs,
    datapath::{self, programs},
    lab::{self, Lab},
    netns::Netns,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The reduced matrix (under two minutes).
    pub quick: bool,
    /// Where the result folder is created.
    pub out_dir: PathBuf,
    /// The `netbpf` binary (the router bench starts it as the daemon).
    pub netbpf_exe: PathBuf,
    /// The command line that started the bench, recorded in the results.
    pub command: String,
    /// Skip the router bench (part 2).
    pub skip_router: bool,
    /// Run only this part.
    pub only: Option<Part>,
}

/// A part of the bench, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// 1: in-kernel cost per path.
    Kernel,
    /// 2: router cost against iptables-nft.
    Router,
    /// 3: install time.
    Install,
    /// 4: the SYN flood each datapath absorbs.
    Flood,
}

impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(Part::Kernel),
            "router" => Ok(Part::Router),
            "install" => Ok(Part::Install),
            "flood" => Ok(Part::Flood),
            _ => Err(format!(
                "unknown part {s:?}: one of kernel, router, install, flood"
            )),
        }
    }
}

impl Part {
    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::Router => "router",
            Part::Install => "install",
            Part::Flood => "flood",
        }
    }
}

/// tc verdicts as `BPF_PROG_TEST_RUN` reports them.
const TC_OK: u32 = 0;
/// `TC_ACT_UNSPEC` (-1): not ours, pass on.
const TC_NEXT: u32 = u32::MAX;

const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 9, 9);
const PUBLISHED_PORT: u16 = 8080;
const CONTAINER_PORT: u16 = 4000;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// `TC_ACT_REDIRECT`: the routing programs' verdict after `bpf_redirect`.
const TC_REDIRECT: u32 = 7;
/// XDP verdicts.
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// Routing state for the routed-forward and ARP paths: one routed
/// container `ROUTED` behind ifindex `ROUTED_IFINDEX`, a peer on the
/// uplink's segment. The container's MAC in `CONTAINERS` is the uplink's
/// own, so a forwarded frame is again addressed to the uplink and `repeat`
/// forwards it again (see [`KernelDp::routed_warm`]).
const ROUTED: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 5);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const ROUTE_UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
const VETH_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x05];
const ROUTED_IFINDEX: u32 = 1;
const UPLINK_IFINDEX: u32 = 5;
/// Runs per `BPF_PROG_TEST_RUN` of the routed forward: a TTL of 255
/// forwards 254 times (255 → 1), the next run would pass it to the kernel.
const ROUTED_RUNS_PER_CALL: u32 = 254;

/// First host port of the extra published ports (20000..20000+N).
const EXTRA_PORT_BASE: u16 = 20000;

/// Runs everything, writes `<out_dir>/<timestamp>/` and returns the summary.
pub fn run(opts: &Options) -> Result<String> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run it as root");
    }
    let stamp = utc_stamp();
    let dir = opts.out_dir.join(&stamp);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let env_start = environment(opts)?;
    eprintln!(
        "bench: {} mode, results in {}",
        if opts.quick { "quick" } else { "full" },
        dir.display()
    );

    let runs = |part: Part| opts.only.is_none_or(|only| only == part);
    let not_run = |part: Part| json!({"skipped": format!("--only {}", opts.only.map_or(part.name(), Part::name))});
    let kernel = if runs(Part::Kernel) {
        eprintln!("bench: part 1, in-kernel cost per path (BPF_PROG_TEST_RUN)");
        kernel_bench(opts.quick)?
    } else {
        not_run(Part::Kernel)
    };
    let install = if runs(Part::Install) {
        eprintln!("bench: part 3, install time of 10k published ports");
        install_bench()?
    } else {
        not_run(Part::Install)
    };
    let router = if !runs(Part::Router) {
        not_run(Part::Router)
    } else if opts.skip_router {
        json!({"skipped": "--skip-router"})
    } else if num_cpus() < 2 {
        json!({"skipped": "needs 2 CPUs (generator on one, router on the other)"})
    } else {
        eprintln!("bench: part 2, router cost netbpf vs iptables-nft (trafgen)");
        router_bench(opts)?
    };
    let flood = if runs(Part::Flood) {
        eprintln!("bench: part 4, SYN flood netbpf vs iptables-nft (trafgen)");
        flood::bench(opts)?
    } else {
        not_run(Part::Flood)
    };
    let env_end = environment(opts)?;
    let results = json!({
        "schema": "netbpf-bench/1",
        "started": stamp,
        "quick": opts.quick,
        "command": opts.command,
        "environment_start": env_start,
        "environment_end": env_end,
        "kernel": kernel,
        "router": router,
        "install": install,
        "flood": flood,
    });
    let text = serde_json::to_string_pretty(&results)?;
    fs::write(dir.join("bench.json"), text + "\n")?;
    let svg = plot(&results);
    fs::write(dir.join("plot.svg"), &svg)?;
    let summary = summary(&results, "plot.svg");
    fs::write(dir.join("summary.md"), &summary)?;
    // `results/latest` points at the newest run.
    let latest = opts.out_dir.join("latest");
    let _ = fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&stamp, &latest);
    eprintln!("bench: wrote {}", dir.display());
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Environment

fn num_cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Machine, kernel, load and the command: recorded at start and end.
fn environment(opts: &Options) -> Result<Value> {
    let cpuinfo = read_trim("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(String::new, |s| s.trim().to_owned());
    let mem_kib: u64 = read_trim("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let loadavg = read_trim("/proc/loadavg");
    let load1: f64 = loadavg
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let cpus = num_cpus();
    // More than a quarter of the machine busy with other work before we
    // start makes CPU-time figures unreliable.
    let high_load = load1 > 0.25 * cpus as f64;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    Ok(json!({
        "command": opts.command,
        "cpu_model": model,
        "cpus": cpus,
        "mem_mib": mem_kib / 1024,
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "kernel_version": read_trim("/proc/sys/kernel/version"),
        "clocksource": read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "cpuidle_driver": read_trim("/sys/devices/system/cpu/cpuidle/current_driver"),
        "loadavg": loadavg,
        "high_load": high_load,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }))
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC).
fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------
// Packets

/// RFC 1071 sum, not complemented.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let hi = chunk[0];
        let lo = chunk.get(1).copied().unwrap_or(0);
        acc += u32::from(u16::from_be_bytes([hi, lo]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An Ethernet + IPv4 + TCP frame (no payload) with correct checksums.
fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    let ack: u32 = if flags & ACK != 0 { 0x2000_0001 } else { 0 };
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags]);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto::TCP]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let c = fold(sum16(&tcp, sum16(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ip = Vec::with_capacity(20 + tcp.len());
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 63, proto::TCP, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);

    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

/// `frame` with new Ethernet addresses and IPv4 TTL (header checksum
/// recomputed).
fn with_ttl_macs(mut f: Vec<u8>, ttl: u8, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[14 + 8] = ttl;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&f[14..34], 0));
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}

/// Whether the IPv4 header checksum of an Ethernet + IPv4 frame is right.
fn ip_checksum_ok(f: &[u8]) -> bool {
    f.len() >= 34 && fold(sum16(&f[14..34], 0)) == 0
}

/// An ARP frame (RFC 826, IPv4 over Ethernet).
fn arp_frame(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// Address number `i` in `base` (a /16): `a.b.(i >> 8).(i & 0xff)`, skipping
/// .0 and .255 host bytes is not needed for the programs.
fn addr_in(base: [u8; 2], i: u32) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8)
}

// ---------------------------------------------------------------------------
// Part 1: in-kernel cost per path

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// A loaded (not attached) datapath for test runs.
struct KernelDp {
    ebpf: Ebpf,
}

impl KernelDp {
    fn new(capacity: u32) -> Result<Self> {
        let toml = format!(
            "[uplink]\ninterface = \"eth0\"\naddress = \"{UPLINK}\"\n\
             [[masquerade]]\nsource = \"10.77.0.0/16\"\n\
             [[publish]]\nproto = \"tcp\"\nport = {PUBLISHED_PORT}\nto = \"{C1}:{CONTAINER_PORT}\"\n\
             [conntrack]\ncapacity = {capacity}\n"
        );
        let config = Config::from_toml(&toml).context("bench config")?;
        let mut ebpf = datapath::load(&config).context("loading the eBPF object")?;
        datapath::fill_masquerade(&mut ebpf, &config, UPLINK)?;
        datapath::fill_publish(&mut ebpf, &config, &[UPLINK])?;
        fill_routing(&mut ebpf)?;
        for name in [
            programs::EGRESS,
            programs::INGRESS,
            programs::INSIDE,
            route_programs::ROUTE_IN,
        ] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(route_programs::ARP)
            .ok_or_else(|| anyhow!("program {} missing", route_programs::ARP))?
            .try_into()?;
        xdp.load()
            .with_context(|| format!("loading {}", route_programs::ARP))?;
        Ok(Self { ebpf })
    }

    /// The kernel's view of a loaded program (verifier and JIT sizes).
    fn info(&self, prog: &str) -> Result<ProgramInfo> {
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let info = if prog == route_programs::ARP {
            let x: &Xdp = p.try_into()?;
            x.info()?
        } else {
            let c: &SchedClassifier = p.try_into()?;
            c.info()?
        };
        Ok(info)
    }

    /// The routed forward, warm: `BPF_PROG_TEST_RUN` with repeat 254 on a
    /// TTL-255 frame (every run forwards it and decrements the TTL; the
    /// frame stays addressed to the uplink because the container's MAC is
    /// the uplink's), `calls` times. Checked: `routed_in` grew by exactly
    /// 254 per call, nothing expired, the frame comes out with TTL 1, the
    /// new MACs and a valid header checksum. Returns the per-call averages.
    fn routed_warm(&self, calls: u32) -> Result<Vec<f64>> {
        let pkt = with_ttl_macs(
            tcp_frame(PEER, 443, ROUTED, 40000, ACK),
            255,
            ROUTE_UPLINK_MAC,
            PEER_MAC,
        );
        let want = with_ttl_macs(pkt.clone(), 1, ROUTE_UPLINK_MAC, VETH_MAC);
        let before = self.counter(Counter::RoutedIn)?;
        let expired = self.counter(Counter::RouteTtlExpired)?;
        let mut out = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let (rc, ns, got) = self.run(route_programs::ROUTE_IN, &pkt, ROUTED_RUNS_PER_CALL)?;
            if rc != TC_REDIRECT || got != want || !ip_checksum_ok(&got) {
                bail!(
                    "routed_forward: repeat {ROUTED_RUNS_PER_CALL} gave verdict {rc} and a \
                     different frame; not measuring that path"
                );
            }
            out.push(ns);
        }
        let grew = self.counter(Counter::RoutedIn)? - before;
        if grew != u64::from(calls * ROUTED_RUNS_PER_CALL)
            || self.counter(Counter::RouteTtlExpired)? != expired
        {
            bail!("routed_forward: forwarded {grew} times, expected {calls} × 254");
        }
        Ok(out)
    }

    /// One `BPF_PROG_TEST_RUN`: (verdict, kernel-measured ns per run,
    /// packet out).
    fn run(&self, prog: &str, pkt: &[u8], repeat: u32) -> Result<(u32, f64, Vec<u8>)> {
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let mut out = vec![0u8; pkt.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        // XDP (the ARP program) and tc programs run the same way.
        let r = if prog == route_programs::ARP {
            let x: &Xdp = p.try_into()?;
            x.test_run(opts)
        } else {
            let c: &SchedClassifier = p.try_into()?;
            c.test_run(opts)
        }
        .context("BPF_PROG_TEST_RUN")?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration.as_nanos() as f64, out))
    }

    /// A counter, summed over CPUs.
    fn counter(&self, c: Counter) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::STATS)
            .ok_or_else(|| anyhow!("map STATS missing"))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(stats.get(&(c as u32), 0)?.iter().sum())
    }

    /// Inserts a `CONNTRACK` flow.
    fn insert_flow(&mut self, key: FlowKey, outside: (Ipv4Addr, u16), flags: u64) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::CONNTRACK)
            .ok_or_else(|| anyhow!("map CONNTRACK missing"))?;
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
        let value = FlowValue {
            outside_addr: outside.0.octets(),
            outside_port: outside.1,
            flags,
            ..FlowValue::default()
        };
        ct.insert(&key, &value, 0)?;
        Ok(())
    }

    /// Inserts a `NAT_REVERSE` entry.
    fn insert_reverse(&mut self, outside: Endpoint, inside: Endpoint) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::NAT_REVERSE)
            .ok_or_else(|| anyhow!("map NAT_REVERSE missing"))?;
        let mut rev: HashMap<&mut MapData, Endpoint, Endpoint> = HashMap::try_from(map)?;
        rev.insert(&outside, &inside, 0)?;
        Ok(())
    }

    /// Inserts a one-port `PUBLISH` rule bound to `addr`.
    fn insert_publish(&mut self, addr: Ipv4Addr, port: u16, to: (Ipv4Addr, u16)) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::PUBLISH)
            .ok_or_else(|| anyhow!("map PUBLISH missing"))?;
        let mut trie: LpmTrie<&mut MapData, PublishKey, PublishRule> = LpmTrie::try_from(map)?;
        let rule = PublishRule {
            to_addr: to.0.octets(),
            to_port: to.1,
            host_port_min: port,
            host_port_max: port,
            _pad: 0,
        };
        let key = Key::new(
            PUBLISH_KEY_BITS,
            PublishKey::new(proto::TCP, addr.octets(), port),
        );
        trie.insert(&key, &rule, 0)?;
        Ok(())
    }

    /// `repeat` runs of a translating path on a packet that a mirror
    /// entry translates back, so that every run takes the same path (the
    /// kernel reruns the program on the rewritten skb). Checked: `counter`
    /// grew by `repeat`, and the packet came back unchanged (even
    /// `repeat`). Returns ns per run.
    fn ping_pong(
        &self,
        prog: &str,
        pkt: &[u8],
        counter: Counter,
        repeat: u32,
        path: &str,
    ) -> Result<f64> {
        let repeat = repeat & !1;
        let before = self.counter(counter)?;
        let (rc, ns, out) = self.run(prog, pkt, repeat)?;
        let grew = self.counter(counter)? - before;
        if rc != TC_OK || grew != u64::from(repeat) || out != pkt {
            bail!(
                "{path}: ping-pong with repeat {repeat} translated {grew} times (verdict {rc}); \
                 not measuring that path"
            );
        }
        Ok(ns)
    }

    /// Pre-fills `CONNTRACK` with `n` flows that no benchmark packet
    /// matches (inside addresses in 10.99.0.0/16, outside the masquerade
    /// CIDR); returns the time it took.
    fn prefill(&mut self, n: u32) -> Result<Duration> {
        let map = self
            .ebpf
            .map_mut(map_names::CONNTRACK)
            .ok_or_else(|| anyhow!("map CONNTRACK missing"))?;
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
        let start = Instant::now();
        for i in 0..n {
            let key = FlowKey::new(
                proto::TCP,
                addr_in([10, 99], i % 65536).octets(),
                1024 + (i / 65536) as u16,
                REMOTE.octets(),
                443,
            );
            let value = FlowValue {
                outside_addr: UPLINK.octets(),
                outside_port: 1024 + (i % 60000) as u16,
                flags: flow_flags::SEEN_OUT | flow_flags::SEEN_IN,
                ..FlowValue::default()
            };
            ct.insert(&key, &value, 0)
                .with_context(|| format!("pre-filling CONNTRACK entry {i}"))?;
        }
        Ok(start.elapsed())
    }
}

/// `ROUTE_UPLINK` and `CONTAINERS` as the daemon writes them for one
/// routed container (see `ROUTED`), like netbpf/tests/routing.rs does.
fn fill_routing(ebpf: &mut Ebpf) -> Result<()> {
    let mut up: Array<&mut MapData, RouteUplink> = Array::try_from(
        ebpf.map_mut(map_names::ROUTE_UPLINK)
            .ok_or_else(|| anyhow!("map ROUTE_UPLINK missing"))?,
    )?;
    up.set(
        0,
        &RouteUplink {
            ifindex: UPLINK_IFINDEX,
            mac: ROUTE_UPLINK_MAC,
            _pad: [0; 2],
        },
        0,
    )?;
    let mut c: HashMap<&mut MapData, [u8; 4], ContainerEntry> = HashMap::try_from(
        ebpf.map_mut(map_names::CONTAINERS)
            .ok_or_else(|| anyhow!("map CONTAINERS missing"))?,
    )?;
    c.insert(
        &ROUTED.octets(),
        &ContainerEntry {
            ifindex: ROUTED_IFINDEX,
            host_mac: VETH_MAC,
            mac: ROUTE_UPLINK_MAC,
        },
        0,
    )?;
    Ok(())
}

/// Single-shot samples (repeat = 1) of `make(i)` for i in 0..n, each
/// checked for verdict `want`.
fn single_shots(
    dp: &KernelDp,
    prog: &str,
    n: u32,
    want: u32,
    path: &str,
    make: impl Fn(u32) -> Vec<u8>,
) -> Result<Vec<f64>> {
    // Build the packets first so the loop measures only the runs.
    let pkts: Vec<Vec<u8>> = (0..n).map(make).collect();
    let mut out = Vec::with_capacity(pkts.len());
    for pkt in &pkts {
        let (rc, ns, _) = dp.run(prog, pkt, 1)?;
        if rc != want {
            bail!("{path}: verdict {rc}, expected {want}: the bench is not measuring that path");
        }
        out.push(ns);
    }
    Ok(out)
}

/// Records a path's warm (`repeat`) time.
fn set_repeat(paths: &mut serde_json::Map<String, Value>, key: &str, ns: f64, repeat: u32) {
    if let Some(p) = paths.get_mut(key) {
        p["repeat_ns"] = json!(ns);
        p["repeat"] = json!(repeat & !1);
    }
}

fn dist(samples: &[f64]) -> Value {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "median_ns": percentile(&v, 50.0),
        "p10_ns": percentile(&v, 10.0),
        "p90_ns": percentile(&v, 90.0),
    })
}

/// The paths, in report order: (key, description).
const PATHS: &[(&str, &str)] = &[
    (
        "snat_new",
        "SNAT, new flow (egress SYN, new mapping + flow)",
    ),
    ("snat_established", "SNAT, established (egress ACK)"),
    ("reply_reverse", "reply reverse-translation (ingress ACK)"),
    (
        "dnat_new",
        "DNAT, new flow (ingress SYN to a published port)",
    ),
    ("dnat_established", "DNAT, established (ingress ACK)"),
    (
        "hairpin_not_needed",
        "inside ingress, no hairpin (container to outside)",
    ),
    ("miss_egress", "miss, egress (source not masqueraded)"),
    ("miss_ingress", "miss, ingress (host port, not published)"),
    (
        "routed_forward",
        "routed forward (uplink tc ingress to a routed container)",
    ),
    (
        "arp_reply",
        "ARP reply (XDP, request for a routed container)",
    ),
    ("arp_miss", "miss, XDP ARP (request for another address)"),
];

fn kernel_bench(quick: bool) -> Result<Value> {
    let samples: u32 = if quick { 2000 } else { 20000 };
    let repeat: u32 = if quick { 20_000 } else { 200_000 };
    let fills: [u32; 3] = [0, 10_000, 1_000_000];
    let mut tables = Vec::new();
    let mut ladder_out = Vec::new();
    let mut programs_out = Vec::new();
    for fill in fills {
        // Room for the pre-filled flows, the new flows of the two new-flow
        // paths and a margin (a full hash map would make inserts fail).
        let capacity = (fill + 2 * samples + 4096).max(262_144);
        let load_start = Instant::now();
        let mut dp = KernelDp::new(capacity)?;
        let load = load_start.elapsed();
        let prefill = dp.prefill(fill)?;
        eprintln!(
            "bench:   conntrack {fill} entries (capacity {capacity}): loaded in {:.2} s, filled in {:.2} s",
            load.as_secs_f64(),
            prefill.as_secs_f64()
        );
        let mut paths = serde_json::Map::new();

        // Paths that leave the packet unchanged: also with `repeat` (the
        // kernel reruns the program on the same skb, so this is only valid
        // when the program does not rewrite it).
        let miss_e = tcp_frame(OTHER, 5555, REMOTE, 80, ACK);
        let miss_i = tcp_frame(REMOTE, 80, UPLINK, 22, ACK);
        let hairpin = tcp_frame(C1, 40000, REMOTE, 443, ACK);
        let unchanged: [(&str, &str, &Vec<u8>, u32); 3] = [
            ("miss_egress", programs::EGRESS, &miss_e, TC_NEXT),
            ("miss_ingress", programs::INGRESS, &miss_i, TC_NEXT),
            ("hairpin_not_needed", programs::INSIDE, &hairpin, TC_NEXT),
        ];
        let mut repeat_ns = std::collections::HashMap::new();
        for (key, prog, pkt, want) in unchanged {
            let (rc, ns, _) = dp.run(prog, pkt, repeat)?;
            if rc != want {
                bail!("{key}: verdict {rc}, expected {want}");
            }
            repeat_ns.insert(key, ns);
            let shots = single_shots(&dp, prog, samples, want, key, |_| pkt.clone())?;
            paths.insert(
                key.to_owned(),
                json!({"single": dist(&shots), "repeat_ns": ns, "repeat": repeat}),
            );
        }

        // SNAT new flow: a distinct inside endpoint per packet.
        let shots = single_shots(&dp, programs::EGRESS, samples, TC_OK, "snat_new", |i| {
            tcp_frame(
                addr_in([10, 77], 256 + i),
                10000 + (i % 50000) as u16,
                REMOTE,
                443,
                SYN,
            )
        })?;
        paths.insert("snat_new".into(), json!({"single": dist(&shots)}));

        // SNAT established and its reply.
        let (rc, _, out) = dp.run(programs::EGRESS, &tcp_frame(C1, 40000, REMOTE, 443, SYN), 1)?;
        if rc != TC_OK || out.len() < 38 {
            bail!("snat_established: the opening SYN was not translated ({rc})");
        }
        let outside_port = u16::from_be_bytes([out[34], out[35]]);
        let est = tcp_frame(C1, 40000, REMOTE, 443, ACK);
        let shots = single_shots(
            &dp,
            programs::EGRESS,
            samples,
            TC_OK,
            "snat_established",
            |_| est.clone(),
        )?;
        paths.insert("snat_established".into(), json!({"single": dist(&shots)}));
        let reply = tcp_frame(REMOTE, 443, UPLINK, outside_port, ACK);
        let shots = single_shots(
            &dp,
            programs::INGRESS,
            samples,
            TC_OK,
            "reply_reverse",
            |_| reply.clone(),
        )?;
        paths.insert("reply_reverse".into(), json!({"single": dist(&shots)}));

        // DNAT new flow: a distinct client endpoint per SYN.
        let shots = single_shots(&dp, programs::INGRESS, samples, TC_OK, "dnat_new", |i| {
            tcp_frame(
                addr_in([198, 18], 1 + i),
                20000 + (i % 40000) as u16,
                UPLINK,
                PUBLISHED_PORT,
                SYN,
            )
        })?;
        paths.insert("dnat_new".into(), json!({"single": dist(&shots)}));
        let (rc, _, _) = dp.run(
            programs::INGRESS,
            &tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, SYN),
            1,
        )?;
        if rc != TC_OK {
            bail!("dnat_established: the opening SYN was not translated ({rc})");
        }
        let est = tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, ACK);
        let shots = single_shots(
            &dp,
            programs::INGRESS,
            samples,
            TC_OK,
            "dnat_established",
            |_| est.clone(),
        )?;
        paths.insert("dnat_established".into(), json!({"single": dist(&shots)}));

        // The same three established paths warm, with `repeat`: mirror
        // entries make the rewritten packet translate back.
        // SNAT: the flow (UPLINK:q -> REMOTE:443) leaves as C1:40000.
        dp.insert_flow(
            FlowKey::new(
                proto::TCP,
                UPLINK.octets(),
                outside_port,
                REMOTE.octets(),
                443,
            ),
            (C1, 40000),
            flow_flags::SEEN_OUT | flow_flags::SEEN_IN,
        )?;
        let ns = dp.ping_pong(
            programs::EGRESS,
            &tcp_frame(C1, 40000, REMOTE, 443, ACK),
            Counter::SnatPackets,
            repeat,
            "snat_established",
        )?;
        set_repeat(&mut paths, "snat_established", ns, repeat);
        // Reply: C1:40000 is also an outside endpoint of UPLINK:q.
        dp.insert_reverse(
            Endpoint::new(proto::TCP, C1.octets(), 40000),
            Endpoint::new(proto::TCP, UPLINK.octets(), outside_port),
        )?;
        let ns = dp.ping_pong(
            programs::INGRESS,
            &reply,
            Counter::ReversePackets,
            repeat,
            "reply_reverse",
        )?;
        set_repeat(&mut paths, "reply_reverse", ns, repeat);
        // DNAT: C1:4000 published (bound to that address) to UPLINK:8080,
        // with its flow.
        dp.insert_publish(C1, CONTAINER_PORT, (UPLINK, PUBLISHED_PORT))?;
        dp.insert_flow(
            FlowKey::new(
                proto::TCP,
                UPLINK.octets(),
                PUBLISHED_PORT,
                REMOTE.octets(),
                50000,
            ),
            (C1, CONTAINER_PORT),
            flow_flags::SEEN_IN | flow_flags::OPENED_IN | flow_flags::PUBLISHED,
        )?;
        let ns = dp.ping_pong(
            programs::INGRESS,
            &est,
            Counter::DnatPackets,
            repeat,
            "dnat_established",
        )?;
        set_repeat(&mut paths, "dnat_established", ns, repeat);

        // Routed forward (netbpf_route_in): the TTL only goes down, so no
        // mirror entry can undo a run; instead each call forwards a TTL-255
        // frame 254 times (see `KernelDp::routed_warm`), and there are as
        // many calls as make `repeat` runs in all.
        let calls = (repeat / ROUTED_RUNS_PER_CALL).max(16);
        let per_call = dp.routed_warm(calls)?;
        let fwd = with_ttl_macs(
            tcp_frame(PEER, 443, ROUTED, 40000, ACK),
            64,
            ROUTE_UPLINK_MAC,
            PEER_MAC,
        );
        let shots = single_shots(
            &dp,
            route_programs::ROUTE_IN,
            samples,
            TC_REDIRECT,
            "routed_forward",
            |_| fwd.clone(),
        )?;
        paths.insert(
            "routed_forward".into(),
            json!({
                "single": dist(&shots),
                "repeat_ns": median(&per_call),
                "repeat": calls * ROUTED_RUNS_PER_CALL,
                "repeat_calls": calls,
                "repeat_runs_per_call": ROUTED_RUNS_PER_CALL,
                "repeat_per_call": dist(&per_call),
            }),
        );

        // ARP (XDP netbpf_arp). A request for a routed container becomes a
        // reply, which the next run passes: `repeat` cannot time the
        // answer. It is timed single-shot, minus an XDP floor taken from
        // the ARP miss (a request for another address: unchanged, so
        // measured both ways) the same way as the tc floor below.
        let req = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], ROUTED);
        let want = arp_frame(PEER_MAC, 2, ROUTE_UPLINK_MAC, ROUTED, PEER_MAC, PEER);
        let (rc, _, out) = dp.run(route_programs::ARP, &req, 1)?;
        if rc != XDP_TX || out != want {
            bail!("arp_reply: verdict {rc} or a wrong reply: not measuring that path");
        }
        let miss = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER);
        let (rc, arp_miss_ns, out) = dp.run(route_programs::ARP, &miss, repeat)?;
        if rc != XDP_PASS || out != miss {
            bail!("arp_miss: verdict {rc}, expected {XDP_PASS} and the frame unchanged");
        }
        let shots = single_shots(
            &dp,
            route_programs::ARP,
            samples,
            XDP_PASS,
            "arp_miss",
            |_| miss.clone(),
        )?;
        paths.insert(
            "arp_miss".into(),
            json!({"single": dist(&shots), "repeat_ns": arp_miss_ns, "repeat": repeat}),
        );
        let before = dp.counter(Counter::ArpReplies)?;
        let shots = single_shots(
            &dp,
            route_programs::ARP,
            samples,
            XDP_TX,
            "arp_reply",
            |_| req.clone(),
        )?;
        if dp.counter(Counter::ArpReplies)? - before != u64::from(samples) {
            bail!("arp_reply: not every request was answered");
        }
        paths.insert("arp_reply".into(), json!({"single": dist(&shots)}));

        // The timer floor of a single shot: what a one-run measurement adds
        // to the program's own cost (entering the timed section, one
        // clock read, a cold first run), from the miss path measured both
        // ways.
        let miss_single = paths["miss_egress"]["single"]["median_ns"]
            .as_f64()
            .unwrap_or(0.0);
        let floor = (miss_single - repeat_ns["miss_egress"]).max(0.0);
        // The XDP program's own floor, from its miss path.
        let arp_miss_single = paths["arp_miss"]["single"]["median_ns"]
            .as_f64()
            .unwrap_or(0.0);
        let xdp_floor = (arp_miss_single - arp_miss_ns).max(0.0);
        for (key, _) in PATHS {
            let f = if key.starts_with("arp_") {
                xdp_floor
            } else {
                floor
            };
            if let Some(p) = paths.get_mut(*key) {
                let m = p["single"]["median_ns"].as_f64().unwrap_or(0.0);
                p["cost_ns"] = json!((m - f).max(0.0));
            }
        }
        // The ARP answer's warm figure is an estimate: its single shot
        // minus the XDP floor.
        if let Some(p) = paths.get_mut("arp_reply") {
            p["repeat_ns"] = p["cost_ns"].clone();
            p["repeat_estimated"] = json!(true);
        }
        // The cost ladder and the programs' sizes do not depend on the
        // table: once, with the empty one.
        if tables.is_empty() {
            ladder_out = ladder(&dp, repeat)?;
            programs_out = program_stats(&dp)?;
        }
        tables.push(json!({
            "conntrack_entries": fill,
            "capacity": capacity,
            "load_s": load.as_secs_f64(),
            "prefill_s": prefill.as_secs_f64(),
            "single_shot_floor_ns": floor,
            "xdp_single_shot_floor_ns": xdp_floor,
            "paths": paths,
        }));
    }
    Ok(json!({
        "method": "BPF_PROG_TEST_RUN on the loaded (not attached) programs, CONNTRACK \
                   pre-filled from userspace. repeat_ns: kernel-timed average of `repeat` runs \
                   on one skb; valid for paths that leave the packet unchanged (misses, no \
                   hairpin) and, for the established translations, made valid by mirror \
                   entries that translate the rewritten packet back (checked: the path's \
                   counter grew by `repeat` and the packet came back unchanged). single: \
                   repeat=1, one syscall per packet (new flows need a distinct tuple per \
                   run); cost_ns = its median minus the single-shot floor (miss_egress single \
                   median minus its repeat time). routed_forward: the TTL only goes down, so \
                   repeat = 254 on a TTL-255 frame per call (every run forwards; the routed \
                   container's MAC is the uplink's so the frame stays addressed to the uplink; \
                   checked: routed_in grew by 254 per call, TTL 1 and a valid checksum at the \
                   end), repeat_ns = median of the per-call averages. arp_reply: a reply is \
                   not a request, so repeat cannot time it; repeat_ns is an estimate, its \
                   single-shot median minus the XDP floor (arp_miss single median minus its \
                   repeat time). ladder: warm costs of cheap exits of the real programs, whose \
                   differences price one step (a helper, a map lookup). programs: the \
                   kernel's sizes of the loaded programs.",
        "samples_per_path": samples,
        "repeat": repeat,
        "tables": tables,
        "ladder": ladder_out,
        "programs": programs_out,
    }))
}

/// The warm cost ladder: cheap exits of the real programs on frames they
/// leave unchanged, timed with `repeat`. Each step adds one kind of work
/// to the one before, so differences price a helper or a map lookup.
const LADDER: &[(&str, &str)] = &[
    (
        "xdp_not_arp",
        "XDP netbpf_arp, IPv4 frame: bounds check, compare, XDP_PASS (no helper, no map)",
    ),
    (
        "xdp_arp_miss",
        "XDP netbpf_arp, request for another address: + CONTAINERS hash lookup (miss)",
    ),
    (
        "tc_route_not_ip",
        "tc netbpf_route_in, ARP frame: one bpf_skb_load_bytes (34 B), pass",
    ),
    (
        "tc_route_not_routed",
        "tc netbpf_route_in, IPv4 to another address: + CONTAINERS hash lookup (miss)",
    ),
    (
        "tc_route_other_mac",
        "tc netbpf_route_in, to a routed container, another MAC: + hit + ROUTE_UPLINK array lookup",
    ),
    (
        "tc_route_ttl1",
        "tc netbpf_route_in, TTL 1: + parse_tc + bpf_skb_load_bytes (TTL) + STATS add",
    ),
    (
        "tc_egress_not_ip",
        "tc netbpf_egress, ARP frame: direct-access Ethernet parse + STATS add (passed)",
    ),
    (
        "tc_ingress_not_ip",
        "tc netbpf_ingress, ARP frame: + skb->mark check",
    ),
    (
        "tc_ingress_spoofed",
        "tc netbpf_ingress, source in the masquerade CIDR: IPv4+TCP parse + MASQ_RULES LPM hit + STATS add (drop)",
    ),
];

fn ladder(dp: &KernelDp, repeat: u32) -> Result<Vec<Value>> {
    let arp_any = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER);
    let ip_to = |dst: Ipv4Addr, mac: [u8; 6], ttl: u8| {
        with_ttl_macs(tcp_frame(PEER, 443, dst, 40000, ACK), ttl, mac, PEER_MAC)
    };
    const TC_SHOT: u32 = 2;
    let cases: [(&str, &str, Vec<u8>, u32); 9] = [
        (
            "xdp_not_arp",
            route_programs::ARP,
            ip_to(ROUTED, ROUTE_UPLINK_MAC, 64),
            XDP_PASS,
        ),
        (
            "xdp_arp_miss",
            route_programs::ARP,
            arp_any.clone(),
            XDP_PASS,
        ),
        (
            "tc_route_not_ip",
            route_programs::ROUTE_IN,
            arp_any.clone(),
            TC_NEXT,
        ),
        (
            "tc_route_not_routed",
            route_programs::ROUTE_IN,
            ip_to(OTHER, ROUTE_UPLINK_MAC, 64),
            TC_NEXT,
        ),
        (
            "tc_route_other_mac",
            route_programs::ROUTE_IN,
            ip_to(ROUTED, [0x02, 9, 9, 9, 9, 9], 64),
            TC_NEXT,
        ),
        (
            "tc_route_ttl1",
            route_programs::ROUTE_IN,
            ip_to(ROUTED, ROUTE_UPLINK_MAC, 1),
            TC_NEXT,
        ),
        (
            "tc_egress_not_ip",
            programs::EGRESS,
            arp_any.clone(),
            TC_NEXT,
        ),
        ("tc_ingress_not_ip", programs::INGRESS, arp_any, TC_NEXT),
        (
            "tc_ingress_spoofed",
            programs::INGRESS,
            tcp_frame(C1, 40000, UPLINK, 22, ACK),
            TC_SHOT,
        ),
    ];
    // Rounds interleaved over the cases, median per case: the steps are a
    // few ns, less than the drift of a loaded machine over the ladder.
    const ROUNDS: usize = 5;
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (key, prog, pkt, want)) in cases.iter().enumerate() {
            let (rc, ns, got) = dp.run(prog, pkt, repeat)?;
            if rc != *want || got != *pkt {
                bail!("ladder {key}: verdict {rc}, expected {want} and the frame unchanged");
            }
            times[i].push(ns);
        }
    }
    let mut out = Vec::new();
    for ((key, ..), t) in cases.iter().zip(&times) {
        let desc = LADDER
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, d)| *d);
        out.push(json!({
            "key": key,
            "what": desc,
            "repeat_ns": median(t),
            "rounds_ns": t,
            "repeat": repeat,
        }));
    }
    Ok(out)
}

/// Verifier and JIT figures of the loaded programs.
fn program_stats(dp: &KernelDp) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for prog in [
        programs::EGRESS,
        programs::INGRESS,
        programs::INSIDE,
        route_programs::ROUTE_IN,
        route_programs::ARP,
    ] {
        let info = dp.info(prog)?;
        out.push(json!({
            "program": prog,
            "id": info.id(),
            "verified_insns": info.verified_instruction_count(),
            "xlated_bytes": info.size_translated(),
            "xlated_insns": info.size_translated().map(|b| b / 8),
            "jited_bytes": info.size_jitted(),
            "maps": info.map_ids().ok().flatten().map(|m| m.len()),
        }));
    }
    Ok(out)
}

/// Paths [`spin`] can run.
pub const SPIN_PATHS: &[&str] = &[
    "snat_established",
    "reply_reverse",
    "dnat_established",
    "hairpin_not_needed",
    "miss_egress",
    "miss_ingress",
    "routed_forward",
    "arp_miss",
];

/// Runs one warm path (as part 1 sets it up, empty conntrack) back to back
/// for `secs` seconds, for a profiler to sample: `perf record -e cpu-clock`
/// on its CPU, `bpftool prog show|dump|profile` on the printed ids. Returns
/// the mean kernel-timed ns per run.
pub fn spin(path: &str, secs: u64) -> Result<f64> {
    if !nix::unistd::geteuid().is_root() {
        bail!("loading BPF programs needs root");
    }
    let mut dp = KernelDp::new(262_144)?;
    // The established flows and their mirror entries, as in part 1.
    let (rc, _, out) = dp.run(programs::EGRESS, &tcp_frame(C1, 40000, REMOTE, 443, SYN), 1)?;
    if rc != TC_OK || out.len() < 38 {
        bail!("the opening SYN was not translated ({rc})");
    }
    let q = u16::from_be_bytes([out[34], out[35]]);
    dp.insert_flow(
        FlowKey::new(proto::TCP, UPLINK.octets(), q, REMOTE.octets(), 443),
        (C1, 40000),
        flow_flags::SEEN_OUT | flow_flags::SEEN_IN,
    )?;
    dp.insert_reverse(
        Endpoint::new(proto::TCP, C1.octets(), 40000),
        Endpoint::new(proto::TCP, UPLINK.octets(), q),
    )?;
    let (rc, _, _) = dp.run(
        programs::INGRESS,
        &tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, SYN),
        1,
    )?;
    if rc != TC_OK {
        bail!("the opening DNAT SYN was not translated ({rc})");
    }
    dp.insert_publish(C1, CONTAINER_PORT, (UPLINK, PUBLISHED_PORT))?;
    dp.insert_flow(
        FlowKey::new(
            proto::TCP,
            UPLINK.octets(),
            PUBLISHED_PORT,
            REMOTE.octets(),
            50000,
        ),
        (C1, CONTAINER_PORT),
        flow_flags::SEEN_IN | flow_flags::OPENED_IN | flow_flags::PUBLISHED,
    )?;
    let (prog, pkt, repeat) = match path {
        "snat_established" => (
            programs::EGRESS,
            tcp_frame(C1, 40000, REMOTE, 443, ACK),
            100_000,
        ),
        "reply_reverse" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 443, UPLINK, q, ACK),
            100_000,
        ),
        "dnat_established" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, ACK),
            100_000,
        ),
        "hairpin_not_needed" => (
            programs::INSIDE,
            tcp_frame(C1, 40000, REMOTE, 443, ACK),
            100_000,
        ),
        "miss_egress" => (
            programs::EGRESS,
            tcp_frame(OTHER, 5555, REMOTE, 80, ACK),
            100_000,
        ),
        "miss_ingress" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 80, UPLINK, 22, ACK),
            100_000,
        ),
        "routed_forward" => (
            route_programs::ROUTE_IN,
            with_ttl_macs(
                tcp_frame(PEER, 443, ROUTED, 40000, ACK),
                255,
                ROUTE_UPLINK_MAC,
                PEER_MAC,
            ),
            ROUTED_RUNS_PER_CALL,
        ),
        "arp_miss" => (
            route_programs::ARP,
            arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER),
            100_000,
        ),
        other => bail!("unknown path {other:?}; one of {}", SPIN_PATHS.join(", ")),
    };
    for name in [
        programs::EGRESS,
        programs::INGRESS,
        programs::INSIDE,
        route_programs::ROUTE_IN,
        route_programs::ARP,
    ] {
        eprintln!("bench: spin: {name} is program id {}", dp.info(name)?.id());
    }
    eprintln!(
        "bench: spin: {path} ({prog}) for {secs} s, pid {}",
        std::process::id()
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut total_ns) = (0u64, 0f64);
    while Instant::now() < deadline {
        let (_, ns, _) = dp.run(prog, &pkt, repeat)?;
        runs += u64::from(repeat);
        total_ns += ns * f64::from(repeat);
    }
    Ok(total_ns / runs.max(1) as f64)
}

// ---------------------------------------------------------------------------
// Part 3: install time

fn publish_toml_n(n: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&lab::publish_toml(
            "udp",
            &(u32::from(EXTRA_PORT_BASE) + i).to_string(),
            SocketAddrV4::new(C1, CONTAINER_PORT),
            None,
        ));
    }
    s
}

/// iptables-nft-restore input with `n` DNAT rules plus the measured port
/// (last, as a newly started container's rule would be).
fn iptables_rules(n: u32, uplink: Ipv4Addr, to: SocketAddrV4) -> String {
    let mut s = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:NBB - [0:0]\n");
    let _ = writeln!(s, "-A PREROUTING -d {uplink}/32 -j NBB");
    for i in 0..n {
        let port = u32::from(EXTRA_PORT_BASE) + i;
        let _ = writeln!(
            s,
            "-A NBB -p udp -m udp --dport {port} -j DNAT --to-destination {to}"
        );
    }
    let _ = writeln!(
        s,
        "-A NBB -p udp -m udp --dport {PUBLISHED_PORT} -j DNAT --to-destination {to}"
    );
    s.push_str("COMMIT\n");
    s
}

/// Runs `program` in `ns` with `input` on stdin; returns the wall time.
fn timed_stdin(ns: &Netns, program: &str, args: &[&str], input: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program} (cargo xtask setup installs it)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}

fn install_bench() -> Result<Value> {
    const N: u32 = 10_000;
    let toml = format!(
        "[uplink]\ninterface = \"eth0\"\naddress = \"{UPLINK}\"\n\
         [[masquerade]]\nsource = \"10.77.0.0/24\"\n{}",
        publish_toml_n(N)
    );
    let t = Instant::now();
    let config = Config::from_toml(&toml).context("config with 10k published ports")?;
    let parse = t.elapsed();
    let mut ebpf = datapath::load(&config)?;
    let t = Instant::now();
    datapath::fill_publish(&mut ebpf, &config, &[UPLINK])?;
    let fill = t.elapsed();
    drop(ebpf);

    let ns = Netns::create(&format!("nbb-i-{}", std::process::id()))?;
    let rules = iptables_rules(N - 1, UPLINK, SocketAddrV4::new(C1, CONTAINER_PORT));
    let ipt = timed_stdin(&ns, "iptables-nft-restore", &[], &rules)?;
    drop(ns);
    eprintln!(
        "bench:   10k ports: netbpf config parse {:.3} s + map fill {:.3} s; iptables-nft-restore {:.3} s",
        parse.as_secs_f64(),
        fill.as_secs_f64(),
        ipt.as_secs_f64()
    );
    Ok(json!({
        "ports": N,
        "netbpf_config_parse_s": parse.as_secs_f64(),
        "netbpf_map_fill_s": fill.as_secs_f64(),
        "iptables_nft_restore_s": ipt.as_secs_f64(),
        "method": "netbpf: Config::from_toml of 10k [[publish]] entries, then datapath::fill_publish \
                   into a freshly loaded object (in-process, release build). iptables: wall time of \
                   `iptables-nft-restore` (process start included) loading 10k DNAT rules into an \
                   empty namespace. The router bench also records the netbpf daemon's whole start \
                   (config, load, fill, attach) per variant.",
    }))
}

// ---------------------------------------------------------------------------
// Part 2: router cost

/// The router's CPU (receive processing is steered here) and the
/// generator's.
const ROUTER_CPU: usize = 1;
const GEN_CPU: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Iptables,
    Netbpf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Iptables => "iptables-nft",
            Kind::Netbpf => "netbpf",
        }
    }
}

/// Total microseconds CPU `cpu` has spent in cpuidle states (None without
/// cpuidle).
fn idle_us(cpu: usize) -> Option<u64> {
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
fn softirq_s(cpu: usize) -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&label))?;
    let ticks: u64 = line.split_whitespace().nth(7)?.parse().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A point on the CPUs' clocks.
#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    /// Router CPU's total cpuidle residency (µs).
    idle_us: Option<u64>,
    /// Softirq seconds of the router and the generator CPU.
    router_softirq: f64,
    gen_softirq: f64,
}

impl CpuMark {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            idle_us: idle_us(ROUTER_CPU),
            router_softirq: softirq_s(ROUTER_CPU).unwrap_or(f64::NAN),
            gen_softirq: softirq_s(GEN_CPU).unwrap_or(f64::NAN),
        }
    }

    fn wall_s(&self, later: &CpuMark) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }

    /// Busy seconds of the router CPU (wall minus cpuidle residency): any
    /// work, ours or not.
    fn busy_s(&self, later: &CpuMark) -> f64 {
        let wall = self.wall_s(later);
        match (self.idle_us, later.idle_us) {
            (Some(a), Some(b)) => (wall - b.saturating_sub(a) as f64 / 1e6).clamp(0.0, wall),
            _ => f64::NAN,
        }
    }

    fn router_softirq_s(&self, later: &CpuMark) -> f64 {
        later.router_softirq - self.router_softirq
    }

    fn gen_softirq_s(&self, later: &CpuMark) -> f64 {
        later.gen_softirq - self.gen_softirq
    }
}

/// A counter from /sys/class/net/DEV/statistics inside `ns`.
fn netdev_counter(ns: &Netns, dev: &str, counter: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/{counter}");
    let out = ns.exec("cat", &[&path])?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("reading {path} in {}", ns.name()))
}

/// Packets the generator's interface sent or dropped (a full receive
/// backlog on the router drops at the veth).
fn sent_counter(ns: &Netns) -> Result<u64> {
    Ok(netdev_counter(ns, "eth0", "tx_packets")? + netdev_counter(ns, "eth0", "tx_dropped")?)
}

fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
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

fn hex_list(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A trafgen packet: UDP from `src` (None: a random 198.18.0.0/16 address
/// and random source port per packet, so every packet is a new flow) to
/// `dst`, 64-byte frame.
fn trafgen_config(
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
struct Phase {
    sent: u64,
    delivered: u64,
    /// Router CPU softirq seconds in the window.
    softirq_s: f64,
    /// Its rate (s/s) in the idle window before.
    baseline_softirq_rate: f64,
    /// Generator CPU softirq seconds (RPS hand-off), for reference.
    gen_softirq_s: f64,
    /// Router CPU busy seconds (cpuidle), and its idle-window fraction.
    busy_s: f64,
    baseline_busy_frac: f64,
    wall_s: f64,
}

impl Phase {
    /// Router CPU ns per delivered packet: softirq time in the window minus
    /// the idle window's softirq rate over the same time.
    fn ns_per_packet(&self) -> f64 {
        let t = (self.softirq_s - self.baseline_softirq_rate * self.wall_s).max(0.0);
        if self.delivered == 0 {
            f64::NAN
        } else {
            t * 1e9 / self.delivered as f64
        }
    }

    /// The same from cpuidle residency (all work on the CPU): meaningful
    /// only when the CPU was mostly idle before.
    fn busy_ns_per_packet(&self) -> f64 {
        let busy = (self.busy_s - self.baseline_busy_frac * self.wall_s).max(0.0);
        if self.delivered == 0 {
            f64::NAN
        } else {
            busy * 1e9 / self.delivered as f64
        }
    }

    fn json(&self) -> Value {
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
struct Rig {
    lab: Lab,
    dst: SocketAddrV4,
    host_mac: [u8; 6],
    out_mac: [u8; 6],
    install_s: f64,
}

fn build_rig(opts: &Options, kind: Kind, ports: u32) -> Result<Rig> {
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
fn phase(
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
        let mut child = rig
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
        let deadline = Instant::now() + limit;
        let mut stopped = false;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if !stopped && Instant::now() > deadline {
                // Our own child, by its pid (ip netns exec execs taskset,
                // which execs trafgen: the same process).
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                stopped = true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        if !out.status.success() && !stopped {
            bail!(
                "trafgen failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
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
fn wait_quiet(c1: &Netns) -> Result<()> {
    wait_quiet_mark(c1).map(|_| ())
}

/// Waits until the container's receive counter stops moving (the router's
/// backlog drained); returns the CPU mark of the last moment it moved.
fn wait_quiet_mark(c1: &Netns) -> Result<CpuMark> {
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

fn router_bench(opts: &Options) -> Result<Value> {
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

// ---------------------------------------------------------------------------
// Report

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "–".to_owned()
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}")
    } else {
        "–".to_owned()
    }
}

/// The markdown summary; `plot` is the SVG's path relative to it.
pub fn summary(results: &Value, plot: &str) -> String {
    let mut s = String::new();
    let env = &results["environment_start"];
    let env_end = &results["environment_end"];
    let _ = writeln!(
        s,
        "# netbpf bench {}\n",
        results["started"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "- command: `{}` ({} mode)",
        results["command"].as_str().unwrap_or(""),
        if results["quick"].as_bool().unwrap_or(false) {
            "quick"
        } else {
            "full"
        }
    );
    let _ = writeln!(
        s,
        "- machine: {} × {}, {} MiB; kernel {}; clocksource {}; cpuidle {}",
        env["cpus"],
        env["cpu_model"].as_str().unwrap_or("?"),
        env["mem_mib"],
        env["kernel"].as_str().unwrap_or("?"),
        env["clocksource"].as_str().unwrap_or("?"),
        env["cpuidle_driver"].as_str().unwrap_or("none"),
    );
    let _ = writeln!(
        s,
        "- commit {}{}",
        env["git_commit"].as_str().unwrap_or("?"),
        if env["git_dirty"].as_bool().unwrap_or(false) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- load average at start `{}`, at end `{}`",
        env["loadavg"].as_str().unwrap_or("?"),
        env_end["loadavg"].as_str().unwrap_or("?")
    );
    if env["high_load"].as_bool().unwrap_or(false)
        || env_end["high_load"].as_bool().unwrap_or(false)
    {
        let _ = writeln!(
            s,
            "\n**WARNING: high load** (1-minute load average above a quarter of the CPUs at \
             start or end): other work shared the CPUs; treat the figures as noisy upper \
             bounds.\n"
        );
    }

    // Part 1.
    let k = &results["kernel"];
    let _ = writeln!(s, "\n## In-kernel cost per path (BPF_PROG_TEST_RUN)\n");
    if let Some(why) = k["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
    } else {
        let tables = k["tables"].as_array().cloned().unwrap_or_default();
        let mut header = String::from("| path |");
        let mut rule = String::from("|---|");
        for t in &tables {
            let _ = write!(header, " ct {} |", t["conntrack_entries"]);
            rule.push_str("---:|");
        }
        let _ = writeln!(
            s,
            "Warm, with `repeat` ({} runs on one packet; the rewriting paths ping-pong \
         between a flow and a mirror entry so that every run translates, checked with the \
         counters), ns per packet, by conntrack entries:\n",
            k["repeat"]
        );
        let _ = writeln!(s, "{header}\n{rule}");
        for (key, desc) in PATHS {
            if tables
                .first()
                .is_none_or(|t| t["paths"][*key]["repeat_ns"].is_null())
            {
                continue;
            }
            let estimated = tables
                .first()
                .is_some_and(|t| t["paths"][*key]["repeat_estimated"].as_bool() == Some(true));
            let mut line = format!("| {desc}{} |", if estimated { " †" } else { "" });
            for t in &tables {
                let _ = write!(
                    line,
                    " {} |",
                    fmt_ns(t["paths"][*key]["repeat_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "\nRouted forward: {} runs per call on a TTL-255 frame (the TTL only goes down), \
         median of the calls' averages. † estimate: the reply is not a request, so `repeat` \
         cannot time it; single-shot median minus the XDP floor (the ARP miss's single shot \
         minus its `repeat` time).",
            ROUTED_RUNS_PER_CALL
        );
        let _ = writeln!(
            s,
            "\nSingle-shot (repeat = 1, a distinct packet per run for new flows): median over {} \
         runs minus the single-shot floor (includes cold-cache effects of one run per \
         syscall):\n",
            k["samples_per_path"]
        );
        let _ = writeln!(s, "{header}\n{rule}");
        for (key, desc) in PATHS {
            let mut line = format!("| {desc} |");
            for t in &tables {
                let _ = write!(
                    line,
                    " {} |",
                    fmt_ns(t["paths"][*key]["cost_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
            let _ = writeln!(s, "{line}");
        }
        let mut line = String::from("| *single-shot floor subtracted* |");
        for t in &tables {
            let _ = write!(
                line,
                " {} |",
                fmt_ns(t["single_shot_floor_ns"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let _ = writeln!(s, "{line}");
        let mut line = String::from("| *XDP floor (ARP rows)* |");
        for t in &tables {
            let _ = write!(
                line,
                " {} |",
                fmt_ns(t["xdp_single_shot_floor_ns"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let _ = writeln!(s, "{line}");
        if let Some(ladder) = k["ladder"].as_array().filter(|l| !l.is_empty()) {
            let _ = writeln!(
                s,
                "\nCost ladder (warm, `repeat`, empty conntrack): cheap exits of the real \
             programs; the difference between consecutive rows of one program prices the \
             step.\n\n| step | ns |\n|---|---:|"
            );
            for l in ladder {
                let _ = writeln!(
                    s,
                    "| {} | {} |",
                    l["what"].as_str().unwrap_or("?"),
                    fmt_ns(l["repeat_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
        }
        if let Some(progs) = k["programs"].as_array().filter(|p| !p.is_empty()) {
            let _ = writeln!(
                s,
                "\n| program | verified insns | xlated insns | JIT bytes | maps |\n|---|---:|---:|---:|---:|"
            );
            for p in progs {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} |",
                    p["program"].as_str().unwrap_or("?"),
                    p["verified_insns"],
                    p["xlated_insns"],
                    p["jited_bytes"],
                    p["maps"]
                );
            }
        }
    }

    // Part 2.
    let r = &results["router"];
    let _ = writeln!(s, "\n## Router cost, netbpf vs iptables-nft\n");
    if let Some(why) = r["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
    } else {
        let _ = writeln!(
            s,
            "Router CPU (softirq time of the router CPU) per delivered packet; median \
             (min–max) over {} run(s), {} s per phase at {} pps.\n\n![plot]({plot})\n",
            r["runs"], r["seconds_per_phase"], r["rate_pps"]
        );
        let _ = writeln!(
            s,
            "| variant | published ports | established | new flow | install (netbpf: daemon start; iptables: restore) |\n|---|---:|---:|---:|---:|"
        );
        for a in r["summary"].as_array().cloned().unwrap_or_default() {
            let cell = |phase: &str| {
                let p = &a[phase];
                let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
                if p["n"].as_u64().unwrap_or(0) > 1 {
                    format!(
                        "{} ({}–{})",
                        fmt_ns(f("median")),
                        fmt_ns(f("min")),
                        fmt_ns(f("max"))
                    )
                } else {
                    fmt_ns(f("median"))
                }
            };
            let installs: Vec<f64> = r["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter(|row| {
                            row["variant"] == a["variant"]
                                && row["published_ports"] == a["published_ports"]
                        })
                        .filter_map(|row| row["install_s"].as_f64())
                        .collect()
                })
                .unwrap_or_default();
            let install = if a["variant"] == "plain" {
                "–".to_owned()
            } else {
                format!("{:.3} s", median(&installs))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {install} |",
                a["variant"].as_str().unwrap_or("?"),
                a["published_ports"],
                cell("established_ns"),
                cell("new_flow_ns"),
            );
        }
        let _ = writeln!(
            s,
            "\n| published ports | new flow netbpf/iptables | new flow (netbpf−plain)/(iptables−plain) | established netbpf/iptables |\n|---:|---:|---:|---:|"
        );
        for q in r["ratios"].as_array().cloned().unwrap_or_default() {
            let f = |a: &str, b: &str| fmt_ratio(q[a][b].as_f64().unwrap_or(f64::NAN));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                q["published_ports"],
                f("new_flow", "netbpf_over_iptables"),
                f("new_flow", "netbpf_extra_over_iptables_extra"),
                f("established", "netbpf_over_iptables"),
            );
        }
    }

    // Part 3.
    let i = &results["install"];
    if let Some(why) = i["skipped"].as_str() {
        let _ = writeln!(s, "\n## Install time\n\nSkipped: {why}.");
    } else {
        let _ = writeln!(s, "\n## Install time, {} published ports\n", i["ports"]);
        let _ = writeln!(
            s,
            "| what | time |\n|---|---:|\n| netbpf: parse config | {:.3} s |\n| netbpf: fill PUBLISH | {:.3} s |\n| iptables-nft-restore | {:.3} s |",
            i["netbpf_config_parse_s"].as_f64().unwrap_or(f64::NAN),
            i["netbpf_map_fill_s"].as_f64().unwrap_or(f64::NAN),
            i["iptables_nft_restore_s"].as_f64().unwrap_or(f64::NAN),
        );
    }

    // Part 4.
    flood::summary(&mut s, &results["flood"]);
    s
}

/// A log-scale bar chart of router CPU per new flow (or, without the
/// router bench, of the in-kernel cost per path).
pub fn plot(results: &Value) -> String {
    let mut bars: Vec<Bar> = Vec::new();
    let title;
    if let Some(summary) = results["router"]["summary"].as_array() {
        title = "Router CPU per new flow (log scale, median)";
        for a in summary {
            let colour = match a["variant"].as_str() {
                Some("netbpf") => "#2a7ab0",
                Some("iptables-nft") => "#c0504d",
                _ => "#888888",
            };
            bars.push((
                format!(
                    "{} {}",
                    a["variant"].as_str().unwrap_or("?"),
                    a["published_ports"]
                ),
                a["new_flow_ns"]["median"].as_f64().unwrap_or(f64::NAN),
                colour,
                String::new(),
            ));
        }
    } else {
        title = "In-kernel cost per path, empty conntrack (log scale)";
        if let Some(t) = results["kernel"]["tables"].get(0) {
            for (key, _) in PATHS {
                bars.push((
                    (*key).to_owned(),
                    t["paths"][*key]["cost_ns"].as_f64().unwrap_or(f64::NAN),
                    "#2a7ab0",
                    String::new(),
                ));
            }
        }
    }
    let (mut body, mut h) = if bars.is_empty() {
        (String::new(), 0.0)
    } else {
        chart(title, &bars, fmt_ns)
    };
    let flood_bars = flood::plot_bars(&results["flood"]);
    if !flood_bars.is_empty() {
        let (second, h2) = chart(
            "Flows in the table at the end of a SYN flood (log scale); legit connections that worked",
            &flood_bars,
            |v| format!("{v:.0}"),
        );
        let _ = write!(
            body,
            "<g transform=\"translate(0,{h:.1})\">\n{second}</g>\n"
        );
        h += h2;
    }
    let w = CHART_WIDTH;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

/// Width of the plot.
const CHART_WIDTH: f64 = 760.0;

/// One bar of a chart: label, value, colour, and a note after the value.
type Bar = (String, f64, &'static str, String);

/// A log-scale horizontal bar chart (SVG elements, no `<svg>`) and its
/// height; `fmt` labels the values.
fn chart(title: &str, bars: &[Bar], fmt: fn(f64) -> String) -> (String, f64) {
    let (w, bar_h, left, top) = (CHART_WIDTH, 26.0, 190.0, 40.0);
    let h = top + bar_h * bars.len() as f64 + 40.0;
    let finite: Vec<f64> = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = finite.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lmin, lmax) = (lo.log10().floor(), hi.log10().ceil());
    let span = w - left - 90.0;
    let x = |v: f64| left + (v.log10() - lmin) / (lmax - lmin).max(1.0) * span;
    let mut svg = format!("<text x=\"{left}\" y=\"20\" font-size=\"14\">{title}</text>\n");
    let mut e = lmin;
    while e <= lmax {
        let v = 10f64.powf(e);
        let xv = x(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{xv:.1}\" y1=\"{top}\" x2=\"{xv:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{xv:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            h - 30.0,
            h - 14.0,
            fmt(v)
        );
        e += 1.0;
    }
    for (i, (label, v, colour, note)) in bars.iter().enumerate() {
        let y = top + bar_h * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left - 8.0,
            y + bar_h * 0.65
        );
        if v.is_finite() && *v > 0.0 {
            let xv = x(*v);
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}{note}</text>",
                y + 3.0,
                (xv - left).max(1.0),
                bar_h - 6.0,
                xv + 4.0,
                y + bar_h * 0.65,
                fmt(*v)
            );
        }
    }
    (svg, h)
}
