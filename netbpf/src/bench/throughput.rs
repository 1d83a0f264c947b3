//! Part 2's TCP throughput through the NAT: one iperf3 stream inbound
//! (outside → published port → container) and one outbound (container →
//! outside, masqueraded), for iptables-nft, netbpf through the stack and
//! netbpf's fast path, each on a lab built afresh (without the router
//! rows' count-and-drop receivers: TCP needs its ACKs).

use std::{
    net::SocketAddrV4,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    lab::{self, Lab},
    netns::Netns,
};

use super::{
    measure::GEN_CPU,
    options::Options,
    rig::{Direction, RigPlan, Variant, steer_to_router},
};

/// The port iperf3 listens on, in the container and on the outside.
const IPERF_PORT: u16 = 5201;

/// The host port published to the container's iperf3.
const PUBLISHED: u16 = 8080;

/// An iperf3 server we started; stopped (by its own pid) when dropped.
struct IperfServer(Child);

impl IperfServer {
    fn spawn(ns: &Netns) -> Result<Self> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (cargo xtask setup installs it)")?;
        Ok(Self(child))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        // `ip netns exec` execs iperf3: the child is the server itself.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one iperf3 client in `ns` against `to` for `secs`; retries while
/// the server is not listening yet. Returns iperf3's JSON.
fn client(ns: &Netns, to: SocketAddrV4, secs: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns
            .command("taskset")
            .args(["-c", &GEN_CPU.to_string(), "iperf3", "-J"])
            .args(["-c", &to.ip().to_string(), "-p", &to.port().to_string()])
            .args(["-t", &secs.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("running iperf3")?;
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() {
            return Ok(json);
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 to {to} failed: {}",
                json["error"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// One variant's lab: NAT of the published port and the containers.
fn build(opts: &Options, variant: Variant) -> Result<Lab> {
    let mut lab = Lab::build(&format!("nbb-t-{}", std::process::id()), 1)?;
    let c1 = &lab.containers[0];
    // The host's receive processing on the router CPU, as in the rows.
    steer_to_router(&lab.host, &["eth0", &c1.host_veth])?;
    let to = SocketAddrV4::new(c1.addr, IPERF_PORT);
    match variant {
        Variant::Iptables => {
            let rules = super::install::iptables_nat_rules(PUBLISHED, to);
            super::install::timed_stdin(&lab.host, "iptables-nft-restore", &[], &rules)?;
        }
        Variant::NetbpfStack | Variant::NetbpfTc | Variant::NetbpfFast | Variant::NetbpfNative => {
            let mut extra = lab::publish_toml("tcp", &PUBLISHED.to_string(), to, None);
            extra.push_str(variant.datapath_toml().unwrap_or_default());
            lab.start_daemon(&opts.netbpf_exe, &extra)?;
        }
        Variant::Plain | Variant::XdpFloor | Variant::Routed => {
            bail!("the throughput runs have no plain, floor or routed variant")
        }
    }
    Ok(lab)
}

/// One stream in `direction` on `lab`: iperf3's received rate.
fn stream(lab: &Lab, direction: Direction, secs: u64) -> Result<Value> {
    let c1 = &lab.containers[0].ns;
    let (server_ns, client_ns, to) = match direction {
        Direction::Inbound => (
            c1,
            &lab.outside,
            SocketAddrV4::new(lab::UPLINK_ADDR, PUBLISHED),
        ),
        Direction::Outbound => (
            &lab.outside,
            c1,
            SocketAddrV4::new(lab::OUTSIDE_ADDR, IPERF_PORT),
        ),
    };
    let _server = IperfServer::spawn(server_ns)?;
    let out = client(client_ns, to, secs)?;
    let end = &out["end"];
    Ok(json!({
        "received_bits_per_second": end["sum_received"]["bits_per_second"],
        "sent_bits_per_second": end["sum_sent"]["bits_per_second"],
        "retransmits": end["sum_sent"]["retransmits"],
        "seconds": secs,
    }))
}

/// Every NAT variant of `plans` and direction; a failure is recorded in
/// its entry rather than ending the bench.
pub(crate) fn throughput(opts: &Options, plans: &[RigPlan]) -> Value {
    let secs = if opts.quick { 2 } else { 5 };
    let mut rows = Vec::new();
    for variant in [
        Variant::Iptables,
        Variant::NetbpfStack,
        Variant::NetbpfTc,
        Variant::NetbpfFast,
        Variant::NetbpfNative,
    ] {
        if !plans.iter().any(|p| p.variant == variant) {
            continue;
        }
        let lab = match build(opts, variant) {
            Ok(lab) => lab,
            Err(e) => {
                rows.push(json!({"variant": variant.name(), "error": format!("{e:#}")}));
                continue;
            }
        };
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut row = match stream(&lab, direction, secs) {
                Ok(v) => v,
                Err(e) => json!({"error": format!("{e:#}")}),
            };
            row["variant"] = json!(variant.name());
            row["direction"] = json!(direction.name());
            eprintln!(
                "bench:   TCP {} {}: {}",
                variant.name(),
                direction.name(),
                match row["received_bits_per_second"].as_f64() {
                    Some(bps) => format!("{:.2} Gbit/s", bps / 1e9),
                    None => row["error"].as_str().unwrap_or("?").to_owned(),
                }
            );
            rows.push(row);
        }
    }
    json!({
        "method": "One iperf3 TCP stream (default settings) for the given seconds, client \
                   pinned to CPU 0, through the NAT on a lab built afresh per variant: inbound \
                   from the outside machine to host port 8080 published to the container's \
                   iperf3, outbound from the container to the outside machine's iperf3 \
                   (masqueraded). RPS steers the host's receive processing to CPU 1 as in the \
                   router rows; the server runs unpinned. The figure is iperf3's received rate.",
        "seconds": secs,
        "rows": rows,
    })
}
