//! Routed mode: the container registered as a routed `[[container]]` at
//! its own address (the host answers ARP for it on the segment), instead
//! of NAT. The plugin runs in the lab's host namespace, as a runtime there
//! would run it (`netbpf --netns HOST cni`).

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf::lab::{self, Lab, PEER_ADDR, SERVICE_PORT, Transport, WhoamiServer, parse_whoami};
use serde_json::{Value, json};

use super::{
    Answer,
    common::{cli, exe},
    invoke_with,
};

/// `netbpf --netns HOST cni` for `command` on container `id`.
fn invoke_in(lab: &Lab, command: &str, id: &str, stdin: &Value) -> Answer {
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/run/netns/nbcn-none"),
        ("CNI_IFNAME", "eth0"),
    ];
    let args = ["--netns", lab.host.name(), "cni"];
    invoke_with(exe(), &args, &env, &stdin.to_string())
}

/// What `ptp` hands on: the host side of the veth first, then the
/// container's eth0 at `ip`/32.
fn routed_conf(lab: &Lab, ip: Ipv4Addr, host_veth: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "nbcn-routed",
        "type": "netbpf-cni",
        "mode": "routed",
        "pinDir": lab.pin_dir,
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": host_veth},
                {"name": "eth0", "sandbox": "/run/netns/nbcn-none"}
            ],
            "ips": [{"address": format!("{ip}/32"), "interface": 1}]
        }
    })
}

#[test]
fn routed_mode_makes_the_container_reachable_at_its_own_address() {
    require_root!();
    // One routed container wired like Calico's, not in the config.
    let mut lab = Lab::build_with(&format!("nbcnr-{}", std::process::id()), 0, 1).expect("lab");
    let c = &lab.routed[0];
    let (addr, veth) = (c.addr, c.host_veth.clone());
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT);
    let _server = WhoamiServer::spawn(&c.ns, Transport::Tcp, any, "r1 saw").expect("server");
    lab.start_daemon(exe(), "").expect("daemon");
    let peer = lab.peer.as_ref().expect("peer");
    let dst = SocketAddrV4::new(addr, SERVICE_PORT);
    assert!(lab::tcp_whoami(peer, dst).is_err(), "not routed yet");

    let conf = routed_conf(&lab, addr, &veth);
    let add = invoke_in(&lab, "ADD", "rt1", &conf);
    assert!(add.ok, "{}", add.stdout);
    let seen = lab::tcp_whoami(peer, dst).expect("routed by ADD");
    assert_eq!(
        *parse_whoami(&seen).expect("addr").ip(),
        PEER_ADDR,
        "no NAT"
    );
    let list = cli(&lab, &["containers", "list"]);
    assert!(
        list.contains(&addr.to_string()) && list.contains(&veth),
        "{list}"
    );
    assert!(invoke_in(&lab, "CHECK", "rt1", &conf).ok);

    // Masquerade makes no sense for a routed container; a result without
    // the host side of a veth (bridge's) cannot be routed.
    let mut masq = conf.clone();
    masq["masquerade"] = json!(true);
    assert_eq!(invoke_in(&lab, "ADD", "rt2", &masq).code(), 7);
    let mut no_host = conf.clone();
    no_host["prevResult"]["interfaces"] = json!([{"name": "eth0", "sandbox": "/x"}]);
    assert_eq!(invoke_in(&lab, "ADD", "rt2", &no_host).code(), 7);

    // DEL: no longer routed (once the peer forgets its ARP entry), twice
    // is fine.
    assert!(invoke_in(&lab, "DEL", "rt1", &conf).ok);
    let _ = peer.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(lab::tcp_whoami(peer, dst).is_err(), "unrouted by DEL");
    assert!(!cli(&lab, &["containers", "list"]).contains(&addr.to_string()));
    assert!(invoke_in(&lab, "DEL", "rt1", &conf).ok);
    assert_eq!(invoke_in(&lab, "CHECK", "rt1", &conf).code(), 101);
}
