//! Fragmented UDP end to end (RFC 4787 REQ-13a/14): datagrams larger than
//! the MTU cross the NAT both ways, through masquerade and through a
//! published port. Namespaces are `nbt-frag-<pid>`, removed on drop.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::require_root;
use netbpf::{
    lab::{Lab, OUTSIDE_ADDR, UPLINK_ADDR},
    netns::Netns,
};

/// A UDP echo server in `ns` on `addr`, stopped when the flag is set.
fn echo(ns: &Netns, addr: SocketAddrV4, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let sock = ns
        .run(move || UdpSocket::bind(addr))
        .expect("netns")
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], peer);
            }
        }
    })
}

/// Sends `size` bytes from a socket made in `ns` to `dst` and returns what
/// came back and from where.
fn round_trip(ns: &Netns, dst: SocketAddrV4, size: usize) -> (Vec<u8>, std::net::SocketAddr) {
    let sock = ns
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("netns")
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send_to(&data, dst).expect("send");
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(&buf[..n], &data[..], "the datagram came back intact");
            return (buf[..n].to_vec(), from);
        }
    }
    panic!("no {size}-byte answer from {dst}");
}

#[test]
fn large_udp_datagrams_cross_the_nat_both_ways() {
    if !require_root("large_udp_datagrams_cross_the_nat_both_ways") {
        return;
    }
    let mut lab = Lab::build(&format!("nbt-frag-{}", std::process::id()), 1).expect("lab");
    let stop = Arc::new(AtomicBool::new(false));
    let out_echo = echo(
        &lab.outside,
        SocketAddrV4::new(OUTSIDE_ADDR, 7),
        stop.clone(),
    );
    let c1_echo = echo(
        &lab.containers[0].ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7),
        stop.clone(),
    );
    lab.start_daemon(
        Path::new(env!("CARGO_BIN_EXE_netbpf")),
        "[[publish]]\nproto = \"udp\"\nport = 7007\nto = \"10.77.0.2:7\"\n",
    )
    .expect("daemon");
    // Masquerade: container → outside and back, 3 fragments each way.
    let (_, from) = round_trip(
        &lab.containers[0].ns,
        SocketAddrV4::new(OUTSIDE_ADDR, 7),
        4000,
    );
    assert_eq!(from.to_string(), format!("{OUTSIDE_ADDR}:7"));
    // Published port: outside → container and back.
    let (_, from) = round_trip(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 7007), 4000);
    assert_eq!(from.to_string(), format!("{UPLINK_ADDR}:7007"));
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        stats.get(netbpf_common::Counter::FragmentsTranslated) >= 8,
        "{:?}",
        stats.counters
    );
    stop.store(true, Ordering::Relaxed);
    let _ = out_echo.join();
    let _ = c1_echo.join();
}
