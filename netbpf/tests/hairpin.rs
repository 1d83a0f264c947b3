//! Hairpinning end to end (RFC 4787 REQ-9/9a, RFC 5382 REQ-8): containers
//! reach published ports and each other's mappings through the host's
//! outside address, and the server sees the client's outside endpoint.
//! Namespaces are `nbt-hp*-<pid>`, removed on drop.

#[macro_use]
mod common;

use common::exe;

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use netbpf::lab::{
    self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
};

const PUBLISHED: u16 = 8081;

/// Two containers; c1's port 4000 published on 8081 (TCP and UDP), whoami
/// servers on c1 and on the outside machine, daemon running.
fn hairpin_lab(name: &str) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build(&format!("nbt-{name}-{}", std::process::id()), 2).expect("lab");
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT);
    let out = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    let c1 = &lab.containers[0].ns;
    let servers = vec![
        WhoamiServer::spawn(c1, Transport::Tcp, any, "c1 saw").expect("c1 tcp"),
        WhoamiServer::spawn(c1, Transport::Udp, any, "c1 saw").expect("c1 udp"),
        WhoamiServer::spawn(&lab.outside, Transport::Tcp, out, "outside saw").expect("tcp"),
        WhoamiServer::spawn(&lab.outside, Transport::Udp, out, "outside saw").expect("udp"),
    ];
    let publish = format!(
        "[[publish]]\nproto = \"tcp\"\nport = {PUBLISHED}\nto = \"10.77.0.2:{SERVICE_PORT}\"\n\
         [[publish]]\nproto = \"udp\"\nport = {PUBLISHED}\nto = \"10.77.0.2:{SERVICE_PORT}\"\n"
    );
    lab.start_daemon(exe(), &publish).expect("daemon");
    (lab, servers)
}

fn published() -> SocketAddrV4 {
    SocketAddrV4::new(UPLINK_ADDR, PUBLISHED)
}

#[test]
fn containers_reach_a_published_port_through_the_host_address() {
    require_root!();
    let (lab, _servers) = hairpin_lab("hptcp");
    for c in &lab.containers {
        // TCP, from the other container and from c1 itself.
        let seen = parse_whoami(&lab::tcp_whoami(&c.ns, published()).expect("tcp hairpin"))
            .expect("answer");
        assert_eq!(
            *seen.ip(),
            UPLINK_ADDR,
            "{}: the server sees the host's address",
            c.addr
        );
    }
    // UDP with a fixed source port: the server sees the client's outside
    // endpoint, the same one the outside machine sees (REQ-9a with EIM).
    let c2 = &lab.containers[1].ns;
    let to_outside = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    let mapped = parse_whoami(&lab::udp_whoami(c2, 7000, to_outside).expect("udp out")).unwrap();
    let seen = parse_whoami(&lab::udp_whoami(c2, 7000, published()).expect("udp hairpin")).unwrap();
    assert_eq!(
        seen, mapped,
        "hairpinned UDP carries the external address and port"
    );
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(stats.get(netbpf_common::Counter::HairpinPackets) > 0);
}

#[test]
fn a_container_reaches_another_containers_mapping() {
    require_root!();
    let (lab, _servers) = hairpin_lab("hpudp");
    let to_outside = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    // c1 opens a UDP mapping (as a STUN client would) and learns it.
    let c1_sock = lab.containers[0]
        .ns
        .run(|| UdpSocket::bind("0.0.0.0:7100"))
        .expect("netns")
        .expect("bind");
    c1_sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 512];
    let mut c1_mapped = None;
    for _ in 0..5 {
        c1_sock.send_to(b"whoami", to_outside).unwrap();
        if let Ok((n, _)) = c1_sock.recv_from(&mut buf) {
            c1_mapped = parse_whoami(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    let c1_mapped = c1_mapped.expect("c1's mapping");
    // c2 learns its own mapping for port 7200 the same way.
    let c2 = &lab.containers[1].ns;
    let c2_mapped = parse_whoami(&lab::udp_whoami(c2, 7200, to_outside).unwrap()).unwrap();
    // c2 sends to c1's mapping through the host's address (hole punching).
    let c2_sock = c2.run(|| UdpSocket::bind("0.0.0.0:7200")).unwrap().unwrap();
    let mut got = None;
    for _ in 0..5 {
        c2_sock.send_to(b"punch", c1_mapped).unwrap();
        if let Ok((n, from)) = c1_sock.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (data, from) = got.expect("c1 receives c2's datagram");
    assert_eq!(data, b"punch");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(c2_mapped),
        "c1 sees c2's outside endpoint"
    );
}
