//! Per-container-IP routing for IPv6 end to end (the programs' own
//! decisions are tested through BPF_PROG_TEST_RUN in
//! `prog_test_run/routing6.rs`), in namespaces (prefix `nbv6<x>-<pid>`,
//! removed on drop, also when a check fails): a peer on the uplink's
//! segment reaches dual-stack routed containers at their IPv6 addresses
//! with `ping -6` and a TCP client (`ncat -6`), no route but being
//! on-link, the host answering the Neighbour Solicitations for them in
//! XDP and the containers' own for their gateway (`fe80::1`).
//!
//! Needs root, `ping` and `ncat` (`cargo xtask setup` installs them), and
//! a kernel with XDP, tcx, `bpf_redirect` and `bpf_fib_lookup` for IPv6
//! (tested on 6.18).

#[macro_use]
mod common;

use common::{cli_output, exe};

use std::{
    io::Write,
    net::{Ipv6Addr, TcpListener},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use netbpf::{
    lab::{Container, Lab, PEER_ADDR6, SEGMENT_HOST_ADDR6, routed_addr6},
    netns::Netns,
};
use netbpf_common::{Counter, map_names};

const HOST6: Ipv6Addr = SEGMENT_HOST_ADDR6;
const PEER6: Ipv6Addr = PEER_ADDR6;
const PORT: u16 = 4000;

fn prefix(x: &str) -> String {
    format!("nbv6{x}-{}", std::process::id())
}

/// The routed container `i`'s IPv6 address (`2001:db8:1::101`, ...).
fn addr6(i: usize) -> Ipv6Addr {
    routed_addr6(i + 1)
}

/// `out`, which must be a success (`what` names it in the failure).
fn ok(what: &str, out: Result<Output, netbpf::netns::NetnsError>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Wires IPv6 into a lab built with routed containers, as `netbpf lab`
/// does ([`Lab::wire_ipv6`]): the uplink and the peer share
/// `2001:db8:1::/64`, the host forwards IPv6, each container has its
/// address as a /128 and a default route via `fe80::1` (Calico's wiring,
/// with netbpf answering for the gateway).
fn wire_ipv6(lab: &mut Lab) {
    lab.wire_ipv6().expect("wire IPv6");
}

/// Whether `f` holds within `bound`, tried every 200 ms.
fn eventually(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A TCP server on `[::]:PORT` in `c`'s namespace that writes "container
/// <addr>: you are <peer address>" to each client, on a thread that lives
/// as long as the test.
fn serve(c: &Container, addr: Ipv6Addr) {
    let listener =
        c.ns.run(|| TcpListener::bind((Ipv6Addr::UNSPECIFIED, PORT)))
            .expect("enter the container")
            .expect("bind [::]:4000");
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = writeln!(s, "container {addr}: you are {peer}");
        }
    });
}

/// What `ncat -6` run in `from` reads from `addr`'s TCP server.
fn ncat6(from: &Netns, addr: Ipv6Addr) -> String {
    let out = from
        .exec(
            "ncat",
            &[
                "-6",
                "--recv-only",
                "-w",
                "3",
                &addr.to_string(),
                &PORT.to_string(),
            ],
        )
        .expect("ncat");
    assert!(
        out.status.success(),
        "ncat -6 {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn peer_reaches_routed_containers_at_their_ipv6_addresses() {
    require_root!();
    let mut lab = Lab::build_direct_peer(&prefix("p"), 2).expect("build lab");
    wire_ipv6(&mut lab);
    for (i, c) in lab.routed.iter().enumerate() {
        serve(c, addr6(i));
    }
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let peer = lab.peer.as_ref().expect("peer");

    // ping -6: the peer resolves the container's address (answered in XDP
    // with the uplink's MAC), the container its gateway (answered on its
    // veth). The first tries may fall while the containers' link-local
    // addresses finish duplicate address detection.
    let c0 = addr6(0).to_string();
    let ping = |n: &str| {
        peer.exec("ping", &["-6", "-c", n, "-W", "1", &c0])
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(20), || ping("1")),
        "ping -6 {c0} never answered; daemon log:\n{}",
        lab.daemon_log()
    );
    assert!(ping("3"), "three pings in a row");

    // Hop limit 1: netbpf leaves it to the kernel, which answers Time
    // Exceeded from the host's address (ping exits non-zero).
    let expired = peer
        .command("ping")
        .args(["-6", "-c", "1", "-W", "2", "-t", "1", &c0])
        .output()
        .expect("ping -t 1");
    let text = String::from_utf8_lossy(&expired.stdout);
    assert!(
        text.contains(&format!("From {HOST6}")) && text.contains("Time exceeded"),
        "{text}"
    );

    // TCP from the peer, to each container: the container sees the peer's
    // own address (no NAT).
    for i in 0..lab.routed.len() {
        let seen = ncat6(peer, addr6(i));
        assert_eq!(seen, format!("container {}: you are {PEER6}", addr6(i)));
    }
    // Container to container over IPv6, on this host.
    let seen = ncat6(&lab.routed[0].ns, addr6(1));
    assert_eq!(
        seen,
        format!("container {}: you are {}", addr6(1), addr6(0))
    );

    // The peer learnt the containers at the host's uplink MAC.
    let host_mac = ok("host link", lab.host.ip(&["-o", "link", "show", "eth0"]));
    let host_mac = String::from_utf8_lossy(&host_mac.stdout)
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("host MAC")
        .to_owned();
    let neigh = ok(
        "peer neighbours",
        peer.ip(&["-6", "neigh", "show", "dev", "eth0"]),
    );
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{c0} ")) && l.contains(&host_mac)),
        "{c0} at {host_mac} in {neigh}"
    );

    // Enough traffic for the neighbour map to have learnt the peer (the
    // first replies went through the kernel, which resolved it).
    assert!(ping("3"), "pings once the peer is a known neighbour");
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        stats.get(Counter::NdpReplies) >= 2,
        "NDP answered by netbpf"
    );
    assert!(stats.get(Counter::RoutedIn) > 0, "forwarded in by netbpf");
    assert!(stats.get(Counter::RoutedOut) > 0, "forwarded out by netbpf");
    assert!(
        stats.get(Counter::RoutedLocal) > 0,
        "container to container"
    );

    // The CLI shows the peer among the neighbours.
    let out = cli_output(&lab, &["neigh", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        rows.as_array()
            .expect("array")
            .iter()
            .any(|r| r["address"] == PEER6.to_string()),
        "the peer is a known IPv6 neighbour: {rows:#}"
    );
}

#[test]
fn a_container_cannot_send_from_another_ipv6_address() {
    require_root!();
    let mut lab = Lab::build_direct_peer(&prefix("s"), 1).expect("build lab");
    wire_ipv6(&mut lab);
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let peer = lab.peer.as_ref().expect("peer");
    let c = &lab.routed[0];
    // The container takes an address that is not its own and pings from it.
    ok(
        "spoofed address",
        c.ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::99/128",
            "dev",
            "eth0",
            "nodad",
        ]),
    );
    let c0 = addr6(0).to_string();
    assert!(
        eventually(Duration::from_secs(20), || peer
            .exec("ping", &["-6", "-c", "1", "-W", "1", &c0])
            .map(|o| o.status.success())
            .unwrap_or(false)),
        "the container's own address works"
    );
    // `exec` fails on a non-zero exit: ping's when nothing came back.
    let answered =
        c.ns.exec(
            "ping",
            &[
                "-6",
                "-c",
                "2",
                "-W",
                "1",
                "-I",
                "2001:db8:1::99",
                &PEER6.to_string(),
            ],
        )
        .is_ok_and(|o| o.status.success());
    assert!(!answered, "a spoofed source gets nowhere");
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        stats.get(Counter::DropSpoofed) >= 2,
        "counted as drop_spoofed"
    );
}

#[test]
fn containers_del_and_add_with_ipv6_on_a_running_daemon() {
    require_root!();
    let mut lab = Lab::build_direct_peer(&prefix("a"), 1).expect("build lab");
    wire_ipv6(&mut lab);
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let peer = lab.peer.as_ref().expect("peer");
    let c = &lab.routed[0];
    let c0 = addr6(0).to_string();
    let ping = || {
        peer.exec("ping", &["-6", "-c", "1", "-W", "1", &c0])
            .is_ok_and(|o| o.status.success())
    };
    assert!(eventually(Duration::from_secs(20), ping), "reachable first");
    let cli_ok = |args: &[&str]| {
        let out = cli_output(&lab, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    cli_ok(&["containers", "del", "--address", &c.addr.to_string()]);
    let _ = peer.ip(&["-6", "neigh", "flush", "dev", "eth0"]);
    assert!(!ping(), "unreachable once removed");
    cli_ok(&[
        "containers",
        "add",
        "--address",
        &c.addr.to_string(),
        "--interface",
        &c.host_veth,
        "--ipv6",
        &c0,
    ]);
    assert!(eventually(Duration::from_secs(10), ping), "reachable again");
    let out = cli_ok(&["containers", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["ipv6"], c0, "{rows:#}");
    // An address a router does not forward is refused.
    let out = cli_output(
        &lab,
        &[
            "containers",
            "add",
            "--address",
            "10.0.1.199",
            "--interface",
            &c.host_veth,
            "--ipv6",
            "fe80::5",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ipv6: fe80::5 is not a unicast address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A datapath started by a netbpf from before IPv6 routing has no IPv6
/// maps pinned (made here by removing their pins from a running one):
/// `containers list` and `del` work without them, `add --ipv6` says what
/// to do, and a restarted daemon (which pins the IPv6 maps) takes it.
#[test]
fn containers_cli_on_a_datapath_without_ipv6_maps() {
    require_root!();
    let mut lab = Lab::build_direct_peer(&prefix("o"), 2).expect("build lab");
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    for name in [
        map_names::CONTAINERS6,
        map_names::CONTAINER_IFS6,
        map_names::NEIGHBOURS6,
    ] {
        std::fs::remove_file(netbpf::maps::pin_path(&lab.pin_dir, name))
            .unwrap_or_else(|e| panic!("unpin {name}: {e}"));
    }
    let run = |lab: &Lab, args: &[&str]| {
        let out = cli_output(lab, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), out.stdout, err)
    };
    let (ok_list, stdout, err) = run(&lab, &["containers", "list", "--json"]);
    assert!(ok_list, "list without the IPv6 maps: {err}");
    let rows: serde_json::Value = serde_json::from_slice(&stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["ipv6"].is_null()), "{rows:?}");

    let (addr, veth) = (
        lab.routed[1].addr.to_string(),
        lab.routed[1].host_veth.clone(),
    );
    let (ok_del, _, err) = run(&lab, &["containers", "del", "--address", &addr]);
    assert!(ok_del, "del without the IPv6 maps: {err}");

    let add6 = [
        "containers",
        "add",
        "--address",
        &addr,
        "--interface",
        &veth,
        "--ipv6",
        "2001:db8:1::102",
    ];
    let (ok_add6, _, err) = run(&lab, &add6);
    assert!(!ok_add6, "add --ipv6 needs the IPv6 maps");
    assert!(
        err.contains("the running datapath predates IPv6 routing")
            && err.contains("restart `netbpf daemon`"),
        "{err}"
    );
    // Nothing was half-added: the address is free for a plain add.
    let (ok_add, _, err) = run(&lab, &add6[..6]);
    assert!(ok_add, "add without --ipv6: {err}");
    let (_, stdout, _) = run(&lab, &["containers", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows:#}");

    // The advice holds: a restarted daemon pins the IPv6 maps again.
    lab.stop_daemon().expect("stop");
    lab.start_daemon(exe(), &extra).expect("daemon restarts");
    let (ok_del, _, err) = run(&lab, &["containers", "del", "--address", &addr]);
    assert!(ok_del, "{err}");
    let (ok_add6, _, err) = run(&lab, &add6);
    assert!(ok_add6, "add --ipv6 after the restart: {err}");
}
