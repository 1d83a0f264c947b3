//! netbpf as the CNI plugin of a real runtime (issue 18): Debian's podman
//! (CNI backend, everything private, in the lab's host namespace) on a
//! conflist of `bridge` (no ipMasq) + `host-local` + netbpf, no `portmap`.
//! `podman run -p` is published with the client's address kept, the
//! container goes out masqueraded, `podman rm -f` unpublishes, two
//! containers keep their own mappings, and GC after a runtime that
//! crashed between ADD and DEL drops what it left. Namespaces are
//! `nbcnp-<pid>-*`; everything is removed on drop, also when the test
//! fails.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
mod podman;

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    process::{Command, Stdio},
};

use common::{cli, exe};
use netbpf::lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami};
use podman::Podman;

/// Whether podman and the CNI plugins are here; says why not, and fails
/// instead of skipping under CI.
fn require() -> bool {
    if !common::require_root("podman tests") {
        return false;
    }
    let missing = podman::missing();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (cargo xtask setup installs them)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}, and CI must not skip the podman tests");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// `netbpf cni` as a runtime calls it; whether it succeeded, and stdout.
fn plugin(command: &str, stdin: &serde_json::Value) -> (bool, String) {
    let mut child = Command::new(exe())
        .arg("cni")
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "crashed0")
        .env("CNI_NETNS", "/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugin");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.to_string().as_bytes())
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("plugin output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn reach(lab: &Lab, port: u16) -> Result<String, String> {
    lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, port)).map_err(|e| e.to_string())
}

#[test]
fn podman_run_p_is_published_masqueraded_unpublished_and_collected() {
    if !require() {
        return;
    }
    let prefix = format!("nbcnp-{}", std::process::id());
    let mut lab = Lab::build(&prefix, 0).expect("lab");
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    let mut servers =
        vec![WhoamiServer::spawn(&lab.outside, Transport::Udp, out, "outside saw").expect("udp")];
    lab.start_daemon(exe(), "").expect("daemon");
    let pm = Podman::new(&lab.host, &lab.dir.join("podman"), exe(), &lab.pin_dir);
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000);

    // Two containers, each with its own mapping.
    let id1 = pm.run("c1", &["-p", "8080:4000"]);
    let id2 = pm.run("c2", &["-p", "8081:4000/tcp"]);
    let ns1 = pm.netns("c1", &format!("{prefix}-c1"));
    let ns2 = pm.netns("c2", &format!("{prefix}-c2"));
    servers.push(WhoamiServer::spawn(&ns1, Transport::Tcp, any, "c1 saw").expect("c1"));
    servers.push(WhoamiServer::spawn(&ns2, Transport::Tcp, any, "c2 saw").expect("c2"));
    let list = cli(&lab, &["nat", "list"]);
    for id in [&id1, &id2] {
        assert!(list.contains(&format!("cni:{id}/eth0")), "{list}");
    }
    for (port, who) in [(8080, "c1 saw 203.0.113.2:"), (8081, "c2 saw 203.0.113.2:")] {
        let seen = reach(&lab, port).unwrap_or_else(|e| panic!("port {port}: {e}\n{list}"));
        assert!(seen.starts_with(who), "the client's address kept: {seen}");
    }
    // Out through the uplink, as the host.
    let seen = lab::udp_whoami(&ns1, 6300, out).expect("c1 reaches the outside");
    let seen = parse_whoami(&seen).expect("address");
    assert_eq!(*seen.ip(), UPLINK_ADDR, "masqueraded by netbpf, not bridge");
    let c1_addr = pm.addr("c1", podman::NETWORK);
    assert!(list.contains(&format!("{c1_addr}/32")), "{list}");

    // podman rm -f: its DEL removes c1's mapping and masquerade only.
    drop(ns1);
    pm.podman(&["rm", "-f", "-t", "0", "c1"]);
    assert!(reach(&lab, 8080).is_err(), "unpublished by podman rm -f");
    let list = cli(&lab, &["nat", "list"]);
    assert!(!list.contains(&id1), "{list}");
    assert!(!list.contains(&format!("{c1_addr}/32")), "{list}");
    assert!(reach(&lab, 8081).is_ok(), "c2 keeps its mapping");

    // A runtime that crashed between ADD and DEL: GC with the attachments
    // podman still has drops what it left, and keeps c2's.
    let mut crashed = pm.gc_conf(&lab.pin_dir);
    crashed["runtimeConfig"] = serde_json::json!({"portMappings": [{"hostPort": 8082, "containerPort": 4000, "protocol": "tcp"}]});
    crashed["prevResult"] =
        serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.89.7.200/24"}]});
    let (ok, stdout) = plugin("ADD", &crashed);
    assert!(ok, "{stdout}");
    assert!(cli(&lab, &["nat", "list"]).contains("cni:crashed0/eth0"));
    let (ok, stdout) = plugin("GC", &pm.gc_conf(&lab.pin_dir));
    assert!(ok, "{stdout}");
    let list = cli(&lab, &["nat", "list"]);
    assert!(
        !list.contains("crashed0") && !list.contains("8082"),
        "{list}"
    );
    assert!(list.contains(&id2), "{list}");

    drop(ns2);
    pm.podman(&["rm", "-f", "-t", "0", "c2"]);
    let list = cli(&lab, &["nat", "list"]);
    assert!(!list.contains("cni:"), "nothing left behind: {list}");
    drop(servers);
}

#[test]
fn podman_run_on_ptp_in_routed_mode_is_reached_at_its_own_address() {
    if !require() {
        return;
    }
    let prefix = format!("nbcnq-{}", std::process::id());
    // A lab whose uplink is on a segment with a peer (its routed
    // container r1 is not used).
    let mut lab = Lab::build_with(&prefix, 0, 1).expect("lab");
    lab.start_daemon(exe(), "").expect("daemon");
    let pm = Podman::new(&lab.host, &lab.dir.join("podman"), exe(), &lab.pin_dir);
    let id = pm.run_on(podman::ROUTED_NETWORK, "r", &[]);
    let addr = pm.addr("r", podman::ROUTED_NETWORK);
    let ns = pm.netns("r", &format!("{prefix}-pr"));
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000);
    let server = WhoamiServer::spawn(&ns, Transport::Tcp, any, "r saw").expect("server");
    let peer = lab.peer.as_ref().expect("peer");
    let dst = SocketAddrV4::new(addr, 4000);
    let list = cli(&lab, &["containers", "list"]);
    let seen = lab::tcp_whoami(peer, dst)
        .unwrap_or_else(|e| panic!("the peer reaches {addr}: {e}\n{list}\n{}", lab.daemon_log()));
    assert_eq!(
        *parse_whoami(&seen).expect("addr").ip(),
        lab::PEER_ADDR,
        "no NAT"
    );
    assert!(list.contains(&addr.to_string()), "{list}");
    drop(server);
    drop(ns);
    pm.podman(&["rm", "-f", "-t", "0", &id]);
    assert!(
        !cli(&lab, &["containers", "list"]).contains(&addr.to_string()),
        "unrouted by podman rm"
    );
}
