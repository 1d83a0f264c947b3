//! Part 3: the time to install 10k published ports, netbpf against iptables-nft-restore.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    config::Config,
    datapath::{self},
    lab::{self},
    netns::Netns,
};

use super::packets::*;

// ---------------------------------------------------------------------------
// Part 3: install time

pub(crate) fn publish_toml_n(n: u32) -> String {
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
pub(crate) fn iptables_rules(n: u32, uplink: Ipv4Addr, to: SocketAddrV4) -> String {
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

/// The `iptables-nft-restore` input that does what a Docker host's NAT
/// does for one published TCP port: DNAT of `published` on the uplink
/// address to `to`, masquerade of the lab's containers out of `eth0`.
pub(crate) fn iptables_nat_rules(published: u16, to: SocketAddrV4) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -d {up}/32 -p tcp -m tcp --dport {published} -j DNAT --to-destination {to}\n\
         -A POSTROUTING -s {cidr} -o eth0 -j MASQUERADE\nCOMMIT\n",
        up = lab::UPLINK_ADDR,
        cidr = lab::CONTAINER_CIDR,
    )
}

/// Runs `program` in `ns` with `input` on stdin; returns the wall time.
pub(crate) fn timed_stdin(
    ns: &Netns,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<Duration> {
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

pub(crate) fn install_bench() -> Result<Value> {
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
