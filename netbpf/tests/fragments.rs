//! Fragmented UDP end to end (RFC 4787 REQ-13a/14): datagrams larger than
//! the MTU cross the NAT both ways, through masquerade and through a
//! published port. Namespaces are `nbt-frag-<pid>`, removed on drop.

#[macro_use]
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
    require_root!();
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

/// Sends `payload` as a UDP datagram from `src:sport` to `dst:dport` in
/// IPv4 fragments of at most `chunk` payload bytes, last fragment first,
/// through a raw socket made in `ns` (the kernel sends IP_HDRINCL packets
/// as they are).
fn send_fragments_reversed(
    ns: &Netns,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    chunk: usize,
) {
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = common::l4_checksum(*src.ip(), *dst.ip(), common::UDP, &udp);
    udp[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    let mut frags = Vec::new();
    let mut off = 0;
    while off < udp.len() {
        let end = (off + chunk).min(udp.len());
        let more = end < udp.len();
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + end - off) as u16).to_be_bytes());
        ip.extend_from_slice(&0x5a5au16.to_be_bytes());
        let frag = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[64, common::UDP, 0, 0]);
        ip.extend_from_slice(&src.ip().octets());
        ip.extend_from_slice(&dst.ip().octets());
        let c = common::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&udp[off..end]);
        frags.push(ip);
        off = end;
    }
    frags.reverse();
    let to = SocketAddrV4::new(*dst.ip(), 0);
    ns.run(move || -> std::io::Result<()> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        s.set_header_included_v4(true)?;
        for f in &frags {
            s.send_to(f, &std::net::SocketAddr::V4(to).into())?;
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })
    .expect("netns")
    .expect("send fragments");
}

#[test]
fn fragments_arriving_before_their_first_fragment_are_delivered() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-frago-{}", std::process::id()), 1).expect("lab");
    // The container counts what it receives and answers with the length.
    let got = lab.containers[0]
        .ns
        .run(|| UdpSocket::bind("0.0.0.0:7"))
        .expect("netns")
        .expect("bind");
    got.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    lab.start_daemon(
        Path::new(env!("CARGO_BIN_EXE_netbpf")),
        "[[publish]]\nproto = \"udp\"\nport = 7007\nto = \"10.77.0.2:7\"\n",
    )
    .expect("daemon");
    // The outside needs the host's MAC before raw sends can go out.
    let _ = lab
        .outside
        .exec("ping", &["-c", "1", "-W", "1", "203.0.113.1"]);
    let payload: Vec<u8> = (0..3000).map(|i| (i % 253) as u8).collect();
    send_fragments_reversed(
        &lab.outside,
        SocketAddrV4::new(OUTSIDE_ADDR, 40404),
        SocketAddrV4::new(UPLINK_ADDR, 7007),
        &payload,
        1208,
    );
    let mut buf = vec![0u8; 65536];
    let (n, from) = got
        .recv_from(&mut buf)
        .expect("the datagram reached the container");
    assert_eq!(&buf[..n], &payload[..], "reassembled intact");
    assert_eq!(
        from.to_string(),
        format!("{OUTSIDE_ADDR}:40404"),
        "client address kept"
    );
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        stats.get(netbpf_common::Counter::FragmentsHeld) >= 2,
        "{:?}",
        stats.counters
    );
    assert!(stats.get(netbpf_common::Counter::FragmentsReplayed) >= 2);
}
