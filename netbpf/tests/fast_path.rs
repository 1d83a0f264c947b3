//! End to end: translated traffic takes the fast path (its counters move)
//! and everything the fast path hands to the stack is still delivered:
//! first packets before the kernel knows a neighbour, TTL 1, a packet
//! larger than the container's MTU, ICMP errors, fragments; and that the
//! uplink's XDP program takes established inbound flows when their
//! checksums are complete, and leaves them to tc when they are not, in
//! generic mode (redirect) and in native mode (hand-off to tc). Real
//! daemon, real sockets, namespaces `nbt-fp<test>-<pid>` (`nbx<pid>` and
//! `nbnx<pid>` for the XDP tests) removed on drop.

#[macro_use]
mod common;

use common::{cli, exe, sa};

use std::{
    net::{SocketAddrV4, UdpSocket},
    time::Duration,
};

use netbpf::{
    lab::{
        self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
        publish_toml,
    },
    netns::Netns,
};

fn prefix(test: &str) -> String {
    format!("nbt-fp{test}-{}", std::process::id())
}

fn outside() -> SocketAddrV4 {
    SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT)
}

/// A counter from `netbpf stats --json`, by name.
fn counter(lab: &Lab, name: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&cli(lab, &["stats", "--json"])).expect("stats json");
    json["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// A one-container lab with whoami servers outside (TCP and UDP) and in
/// the container (UDP), the container's UDP server published on 5353, and
/// the daemon running.
fn lab(test: &str) -> (Lab, Vec<WhoamiServer>) {
    lab_with(test, "")
}

/// [`lab`] with `extra` config.
fn lab_with(test: &str, extra: &str) -> (Lab, Vec<WhoamiServer>) {
    lab_named(&prefix(test), extra)
}

/// [`lab_with`] with the namespaces named `{name}-*`.
fn lab_named(name: &str, extra: &str) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build(name, 1).expect("build lab");
    let c1 = lab.containers[0].addr;
    let servers = vec![
        WhoamiServer::spawn(&lab.outside, Transport::Tcp, outside(), "you are").expect("tcp"),
        WhoamiServer::spawn(&lab.outside, Transport::Udp, outside(), "you are").expect("udp"),
        WhoamiServer::spawn(
            &lab.containers[0].ns,
            Transport::Udp,
            sa(c1, SERVICE_PORT),
            "inside sees",
        )
        .expect("udp in c1"),
    ];
    let extra = format!(
        "{}\n{extra}",
        publish_toml("udp", "5353", sa(c1, SERVICE_PORT), None)
    );
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    (lab, servers)
}

/// Sends `size` bytes of UDP from `ns` to `to` until an answer comes (up
/// to five tries: a first try may teach the sender a smaller path MTU),
/// and returns the answer.
fn udp_exchange(ns: &netbpf::netns::Netns, to: SocketAddrV4, size: usize) -> String {
    ns.run(move || -> String {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        for _ in 0..5 {
            let _ = s.send_to(&vec![b'x'; size], to);
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        panic!("no answer from {to} to {size} bytes");
    })
    .expect("in namespace")
}

#[test]
fn translated_traffic_takes_the_fast_path_both_ways() {
    require_root!();
    let (lab, _servers) = lab("both");
    let c = &lab.containers[0];
    let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("tcp")).expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR, "masqueraded");
    assert!(counter(&lab, "fast_path_out") > 0, "SNAT on the fast path");
    assert!(
        counter(&lab, "fast_path_in") > 0,
        "replies on the fast path"
    );
    // A published port: the container sees the client's real address.
    let before = counter(&lab, "fast_path_in");
    let answer = udp_exchange(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 5353), 32);
    let seen = parse_whoami(&answer).expect("addr");
    assert_eq!(*seen.ip(), OUTSIDE_ADDR, "{answer}");
    assert!(
        counter(&lab, "fast_path_in") > before,
        "DNAT on the fast path"
    );
    assert!(counter(&lab, "fast_path_out") > 0);
}

#[test]
fn first_packets_before_the_neighbour_is_known_are_delivered() {
    require_root!();
    let (lab, _servers) = lab("neigh");
    let flush = lab
        .host
        .exec("ip", &["neigh", "flush", "all"])
        .expect("flush");
    assert!(flush.status.success());
    let c = &lab.containers[0];
    let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("tcp")).expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR);
    assert!(
        counter(&lab, "fast_path_no_neighbour") > 0,
        "the first packet went to the stack, which resolved the neighbour"
    );
    // Once it is known, the fast path takes over.
    let out = counter(&lab, "fast_path_out");
    lab::tcp_whoami(&c.ns, outside()).expect("tcp again");
    assert!(counter(&lab, "fast_path_out") > out);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_host() {
    require_root!();
    let (lab, _servers) = lab("ttl");
    let c = &lab.containers[0];
    let out =
        c.ns.exec(
            "traceroute",
            &[
                "-n",
                "-q",
                "1",
                "-w",
                "2",
                "-m",
                "1",
                &OUTSIDE_ADDR.to_string(),
            ],
        )
        .expect("traceroute");
    let text = String::from_utf8_lossy(&out.stdout);
    // Hop 1 is the host (the container's gateway), which the kernel
    // answers from because the fast path left the packet to it.
    let hop = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("no hop 1 in {text}"));
    assert!(
        hop.contains(&UPLINK_ADDR.to_string()),
        "time exceeded from the host (its first address): {text}"
    );
    assert!(counter(&lab, "fast_path_ttl") > 0);
}

#[test]
fn a_packet_larger_than_the_containers_mtu_is_delivered() {
    require_root!();
    let (lab, _servers) = lab("mtu");
    let c = &lab.containers[0];
    for (ns, dev) in [(&lab.host, c.host_veth.as_str()), (&c.ns, "eth0")] {
        let out = ns
            .exec("ip", &["link", "set", dev, "mtu", "1280"])
            .expect("mtu");
        assert!(out.status.success(), "{dev}: {out:?}");
    }
    // A small exchange first, so the host knows the container's MAC and
    // the big one meets the MTU check, not the neighbour check.
    udp_exchange(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 5353), 32);
    let answer = udp_exchange(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 5353), 1400);
    assert_eq!(
        *parse_whoami(&answer).expect("addr").ip(),
        OUTSIDE_ADDR,
        "{answer}"
    );
    assert!(
        counter(&lab, "fast_path_mtu") > 0,
        "the kernel fragmented it or told the sender the path MTU"
    );
}

#[test]
fn icmp_errors_and_fragments_are_delivered() {
    require_root!();
    let (lab, _servers) = lab("icmpfrag");
    let c = &lab.containers[0];
    // Port unreachable from outside, translated back to the container.
    let refused =
        c.ns.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            s.connect(SocketAddrV4::new(OUTSIDE_ADDR, 9))
                .expect("connect");
            let _ = s.send(b"anyone?");
            let mut buf = [0u8; 16];
            s.recv(&mut buf).err().map(|e| e.kind())
        })
        .expect("in namespace");
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    assert!(counter(&lab, "fast_path_icmp_error") > 0);
    // A datagram the container's stack fragments (3000 bytes, MTU 1500).
    let answer = udp_exchange(&c.ns, outside(), 3000);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), UPLINK_ADDR);
    assert!(counter(&lab, "fast_path_fragment") >= 2, "both fragments");
}

#[test]
fn with_the_fast_path_off_everything_goes_through_the_stack() {
    require_root!();
    let (lab, _servers) = lab_with("off", "[datapath]\nfast_path = false\n");
    let c = &lab.containers[0];
    let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("tcp")).expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR, "masqueraded");
    let answer = udp_exchange(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 5353), 32);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), OUTSIDE_ADDR);
    assert!(counter(&lab, "snat_packets") > 0 && counter(&lab, "dnat_packets") > 0);
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["stats", "--json"])).expect("stats json");
    for (name, value) in json["counters"].as_object().expect("counters") {
        if name.starts_with("fast_path") {
            assert_eq!(value.as_u64(), Some(0), "{name}");
        }
    }
}

/// Turns transmit checksum offload off on `ifname` in `ns`, as `ethtool
/// -K IF tx off` does (through the legacy `ETHTOOL_STXCSUM` ioctl, which
/// the kernel maps onto the device's features; ethtool itself is not
/// installed everywhere). The stack then sends complete checksums, as a
/// NIC delivers them.
fn tx_checksum_off(ns: &Netns, ifname: &str) {
    /// `struct ethtool_value`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let name = ifname.to_owned();
    let rc = ns
        .run(move || {
            let mut value = EthtoolValue {
                cmd: ETHTOOL_STXCSUM,
                data: 0,
            };
            // SAFETY: an all-zero ifreq is valid; the name fits (IFNAMSIZ)
            // and stays NUL-terminated; `value` outlives the ioctl.
            unsafe {
                let mut ifr: libc::ifreq = std::mem::zeroed();
                for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
                    *d = s as libc::c_char;
                }
                ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr);
                libc::close(fd);
                rc
            }
        })
        .expect("in namespace");
    assert_eq!(rc, 0, "tx checksum offload off on {ifname}");
}

/// Sends `n` UDP datagrams from one socket in `ns` to `to` (one flow),
/// each answered, and returns the last answer.
fn udp_flow(ns: &Netns, to: SocketAddrV4, n: usize) -> String {
    udp_sizes(ns, to, &vec![32; n])
}

/// A lab (namespaces `<prefix><pid>`) publishing TCP 8080 to the first
/// container's whoami server (running, in the returned servers), with
/// `extra` appended to the config.
fn xdp_lab(prefix: &str, extra: &str) -> (Lab, Vec<WhoamiServer>) {
    // The lab's first container (checked below): the config names it
    // before the lab exists.
    let c1 = std::net::Ipv4Addr::new(10, 77, 0, 2);
    let name = format!("{prefix}{}", std::process::id());
    let toml = publish_toml("tcp", "8080", sa(c1, SERVICE_PORT), None) + extra;
    let (lab, mut servers) = lab_named(&name, &toml);
    let c = &lab.containers[0];
    assert_eq!(c.addr, c1);
    servers.push(
        WhoamiServer::spawn(
            &c.ns,
            Transport::Tcp,
            sa(c.addr, SERVICE_PORT),
            "inside sees",
        )
        .expect("tcp in c1"),
    );
    (lab, servers)
}

/// Established inbound flows of each kind, each checked to arrive
/// translated and to move the counter `name` ("`what`" in the messages):
/// a reply to a masqueraded flow (SYN-ACK, the greeting, FIN); a
/// published UDP port (the first datagram opens the flow at tc, the
/// second finds it the long way and writes its reply half at tc, the rest
/// count); a published TCP port from ncat (the SYN opens the flow, the
/// handshake's ACK writes its reply half, the ACK of the greeting and the
/// FIN count).
fn established_flows_count(lab: &Lab, published_udp: SocketAddrV4, name: &str, what: &str) {
    let c = &lab.containers[0];
    let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("tcp")).expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR, "masqueraded");
    let after_masq = counter(lab, name);
    assert!(after_masq > 0, "replies to the masquerade {what}");
    let answer = udp_flow(&lab.outside, published_udp, 4);
    assert_eq!(
        *parse_whoami(&answer).expect("addr").ip(),
        OUTSIDE_ADDR,
        "client address kept: {answer}"
    );
    let after_udp = counter(lab, name);
    assert!(after_udp >= after_masq + 2, "DNAT for UDP {what}");
    // ncat exits when idle for a second (the server keeps the connection
    // open), with status 1.
    let out = lab
        .outside
        .command("ncat")
        .args(["-i", "1", "--recv-only", &UPLINK_ADDR.to_string(), "8080"])
        .output()
        .expect("ncat");
    let text = String::from_utf8_lossy(&out.stdout);
    let seen = parse_whoami(text.trim()).unwrap_or_else(|| panic!("ncat said {out:?}"));
    assert_eq!(*seen.ip(), OUTSIDE_ADDR, "client address kept: {text}");
    assert!(counter(lab, name) > after_udp, "DNAT for TCP {what}");
}

#[test]
fn established_inbound_flows_take_the_xdp_path() {
    require_root!();
    let (lab, _servers) = xdp_lab("nbx", "");
    let published_udp = SocketAddrV4::new(UPLINK_ADDR, 5353);
    // The outside's stack leaves checksums to its veth (CHECKSUM_PARTIAL):
    // XDP cannot see that state, recognises the seed and leaves those
    // packets to tc, which delivers them.
    let answer = udp_flow(&lab.outside, published_udp, 3);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), OUTSIDE_ADDR);
    assert!(
        counter(&lab, "xdp_pass_checksum") > 0,
        "offloaded checksums left to tc"
    );
    assert_eq!(counter(&lab, "xdp_fast_in"), 0);

    // Complete checksums, as from a NIC: XDP takes established flows.
    tx_checksum_off(&lab.outside, "eth0");
    established_flows_count(&lab, published_udp, "xdp_fast_in", "took XDP");
    assert!(counter(&lab, "fast_path_in") >= counter(&lab, "xdp_fast_in"));
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["stats", "--json"])).expect("stats json");
    for (name, value) in json["counters"].as_object().expect("counters") {
        if name.starts_with("drop_") {
            assert_eq!(value.as_u64(), Some(0), "{name}");
        }
    }
}

/// Sends one UDP datagram of each of `sizes` bytes from one socket in `ns`
/// to `to` (one flow), each answered (up to five tries: a first try may
/// teach the sender a smaller path MTU), and returns the last answer.
fn udp_sizes(ns: &Netns, to: SocketAddrV4, sizes: &[usize]) -> String {
    let sizes = sizes.to_vec();
    ns.run(move || -> String {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let mut last = String::new();
        for size in sizes {
            let answered = (0..5).any(|_| {
                let _ = s.send_to(&vec![b'x'; size], to);
                match s.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        last = String::from_utf8_lossy(&buf[..len]).into_owned();
                        true
                    }
                    Err(_) => false,
                }
            });
            assert!(answered, "no answer from {to} to {size} bytes");
        }
        last
    })
    .expect("in namespace")
}

/// The uplink's XDP attachment as `ip link` shows it: `xdp` (native) or
/// `xdpgeneric`.
fn xdp_attachment(lab: &Lab) -> String {
    let out = lab
        .host
        .exec("ip", &["-d", "link", "show", "dev", "eth0"])
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.starts_with("prog/xdp"))
        .map(|w| w.trim_start_matches("prog/").to_owned())
        .unwrap_or_else(|| panic!("no XDP program on eth0: {text}"))
}

#[test]
fn established_inbound_flows_take_the_native_xdp_path_through_tc() {
    require_root!();
    let (lab, _servers) = xdp_lab("nbnx", "\n[datapath]\nxdp_mode = \"native\"\n");
    let c = &lab.containers[0];
    assert_eq!(
        xdp_attachment(&lab),
        "xdp",
        "native (driver) mode on the veth"
    );
    let published_udp = SocketAddrV4::new(UPLINK_ADDR, 5353);
    // Offloaded checksums (the outside's veth): left to tc, delivered.
    let answer = udp_flow(&lab.outside, published_udp, 3);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), OUTSIDE_ADDR);
    assert!(counter(&lab, "xdp_pass_checksum") > 0);
    assert_eq!(counter(&lab, "xdp_handoff_in"), 0);

    // Complete checksums, as from a NIC: XDP translates established
    // flows and tc sends them on; nothing is redirected from XDP.
    tx_checksum_off(&lab.outside, "eth0");
    established_flows_count(&lab, published_udp, "xdp_handoff_in", "was handed off");

    // Fallbacks still deliver: a next hop the kernel forgot (XDP and tc
    // leave the packet to the stack, which resolves it) ...
    let flush = lab
        .host
        .exec("ip", &["neigh", "flush", "all"])
        .expect("flush");
    assert!(flush.status.success());
    let answer = udp_flow(&lab.outside, published_udp, 2);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), OUTSIDE_ADDR);
    // ... and a datagram larger than the container's MTU.
    for (ns, dev) in [(&lab.host, c.host_veth.as_str()), (&c.ns, "eth0")] {
        let out = ns
            .exec("ip", &["link", "set", dev, "mtu", "1280"])
            .expect("mtu");
        assert!(out.status.success(), "{dev}: {out:?}");
    }
    // The hop XDP and tc remember (`FAST_HOPS`) holds the old MTU for up
    // to two seconds; after that the FIB answers with the new one.
    std::thread::sleep(Duration::from_millis(2500));
    // One flow: two small datagrams (tc opens it and writes its reply
    // half), then one larger than the MTU, which XDP finds established
    // and leaves to tc and the stack.
    let answer = udp_sizes(&lab.outside, published_udp, &[32, 32, 1400]);
    assert_eq!(*parse_whoami(&answer).expect("addr").ip(), OUTSIDE_ADDR);
    assert!(counter(&lab, "xdp_pass_mtu") > 0, "too big for XDP's hop");

    assert_eq!(
        counter(&lab, "xdp_fast_in"),
        0,
        "native XDP redirects nothing"
    );
    assert_eq!(
        counter(&lab, "xdp_pass_no_metadata"),
        0,
        "veth has metadata"
    );
    assert!(counter(&lab, "fast_path_in") >= counter(&lab, "xdp_handoff_in"));
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["stats", "--json"])).expect("stats json");
    for (name, value) in json["counters"].as_object().expect("counters") {
        if name.starts_with("drop_") {
            assert_eq!(value.as_u64(), Some(0), "{name}");
        }
    }
}
