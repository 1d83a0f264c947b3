//! One flood against one datapath: the lab, the trafgen sender, the counters before and after.

use std::{
    fs::{self},
    io::{BufRead, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::super::{
    install::{iptables_nat_rules, timed_stdin},
    measure::{GEN_CPU, hex_list, mac_of, netdev_counter, wait_trafgen},
    options::Options,
};
use crate::{
    lab::{self, Lab},
    maps::{self, NatMaps},
    netns::Netns,
};

use super::{Kind, plan::*, probe::*};

/// The trafgen template: a TCP SYN from `src` (None: a random 198.18/16
/// address) and a random port to `dst`, a 54-byte frame. No padding:
/// trafgen's `csumtcp` sums everything after the TCP header's offset, so
/// padding would make every checksum wrong (and netfilter would count each
/// SYN as invalid instead of tracking it).
pub(crate) fn syn_config(
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
pub(crate) fn nf_stats(ns: &Netns) -> Result<serde_json::Map<String, Value>> {
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
pub(crate) fn netbpf_stats(lab: &Lab) -> Result<serde_json::Map<String, Value>> {
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
pub(crate) fn delta(
    before: &serde_json::Map<String, Value>,
    after: &serde_json::Map<String, Value>,
) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in after {
        let b = before.get(k).and_then(Value::as_u64).unwrap_or(0);
        m.insert(k.clone(), json!(v.as_u64().unwrap_or(0).saturating_sub(b)));
    }
    Value::Object(m)
}

/// The lab for one variant, with servers running and an established
/// connection from the outside to the published port.
pub(crate) struct Rig {
    // Field order is drop order: connections and servers before the lab.
    pub(crate) established: TcpStream,
    pub(crate) _servers: Vec<Server>,
    pub(crate) lab: Lab,
    pub(crate) kind: Kind,
}

impl Rig {
    pub(crate) fn build(opts: &Options, kind: Kind) -> Result<Self> {
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
                let rules = iptables_nat_rules(PUBLISHED, to);
                timed_stdin(&lab.host, "iptables-nft-restore", &[], &rules)?;
            }
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

    pub(crate) fn stats(&self) -> Result<serde_json::Map<String, Value>> {
        match self.kind {
            Kind::Netbpf => netbpf_stats(&self.lab),
            _ => nf_stats(&self.lab.host),
        }
    }

    /// Whether the connection opened before the flood still echoes.
    pub(crate) fn established_alive(&self) -> bool {
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
    pub(crate) fn flood(&self, f: Flood) -> Result<(u64, f64)> {
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
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen (cargo xtask setup installs netsniff-ng)")?;
        // A slower receiver slows trafgen down; the flood lasts its time.
        wait_trafgen(
            child,
            start + Duration::from_secs(f.secs),
            Duration::from_millis(10),
        )?;
        let secs = start.elapsed().as_secs_f64();
        let tx1 = netdev_counter(&self.lab.outside, "eth0", "tx_packets")?;
        Ok((tx1.saturating_sub(tx0), secs))
    }
}

/// One flood against one variant.
pub(crate) fn run_flood(opts: &Options, kind: Kind, f: Flood) -> Result<Value> {
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
pub(crate) fn absorbed(rows: &[Value], kind: Kind, sources: Sources) -> Value {
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
