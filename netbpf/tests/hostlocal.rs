//! Published ports reached from the NAT host itself (issue 4, Docker's nat
//! OUTPUT chain): cgroup socket hooks redirect connect()/sendmsg() in the
//! daemon's namespace, and the application still sees the address it
//! asked for. Namespaces are `nbt-hl-<pid>`, removed on drop; the hooks sit
//! on the cgroup v2 root but act only on sockets of the lab's host
//! namespace.

#[macro_use]
mod common;

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use netbpf::{
    lab::{Lab, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami},
    netns::Netns,
};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn tcp_from(ns: &Netns, dst: SocketAddrV4) -> std::io::Result<(String, SocketAddr)> {
    ns.run(move || -> std::io::Result<(String, SocketAddr)> {
        let s = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let peer = s.peer_addr()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok((line.trim().to_owned(), peer))
    })
    .map_err(std::io::Error::other)?
}

fn udp_from(ns: &Netns, dst: SocketAddrV4) -> std::io::Result<(String, SocketAddr)> {
    ns.run(move || -> std::io::Result<(String, SocketAddr)> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            s.send_to(b"whoami", dst)?;
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                return Ok((String::from_utf8_lossy(&buf[..n]).trim().to_owned(), from));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer",
        ))
    })
    .map_err(std::io::Error::other)?
}

#[test]
fn the_host_reaches_published_ports_on_its_own_addresses() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-hl-{}", std::process::id()), 1).expect("lab");
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT);
    let c1 = &lab.containers[0].ns;
    let _tcp = WhoamiServer::spawn(c1, Transport::Tcp, any, "c1 saw").expect("tcp");
    let _udp = WhoamiServer::spawn(c1, Transport::Udp, any, "c1 saw").expect("udp");
    let publish = "[[publish]]\nproto = \"tcp\"\nport = 8081\nto = \"10.77.0.2:4000\"\n\
                   [[publish]]\nproto = \"udp\"\nport = 8081\nto = \"10.77.0.2:4000\"\n\
                   [[publish]]\nproto = \"tcp\"\nport = 8090\nto = \"10.77.0.2:4000\"\naddress = \"127.0.0.1\"\n";
    lab.start_daemon(Path::new(env!("CARGO_BIN_EXE_netbpf")), publish)
        .expect("daemon");

    for addr in [LOCALHOST, UPLINK_ADDR] {
        let dst = SocketAddrV4::new(addr, 8081);
        let (line, peer) = tcp_from(&lab.host, dst).expect("tcp from the host");
        assert!(line.starts_with("c1 saw"), "{dst}: {line}");
        assert_eq!(
            peer,
            SocketAddr::V4(dst),
            "getpeername shows what was dialled"
        );
        let (line, from) = udp_from(&lab.host, dst).expect("udp from the host");
        assert!(line.starts_with("c1 saw"), "{dst}: {line}");
        assert_eq!(
            from,
            SocketAddr::V4(dst),
            "replies come from what was dialled"
        );
    }
    // Bound to loopback: reachable on 127.0.0.1 only. A listener of the
    // host's own on port 8090 answers everything else, so each check below
    // names who answered: an error (nothing redirected, but nothing
    // reached either) would not tell a working datapath from none.
    let _host = WhoamiServer::spawn(
        &lab.host,
        Transport::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8090),
        "host saw",
    )
    .expect("host listener");
    let (line, _) = tcp_from(&lab.host, SocketAddrV4::new(LOCALHOST, 8090)).expect("8090 local");
    assert!(line.starts_with("c1 saw"), "{line}");
    let (line, _) =
        tcp_from(&lab.host, SocketAddrV4::new(UPLINK_ADDR, 8090)).expect("8090 on the uplink");
    assert!(line.starts_with("host saw"), "not redirected: {line}");
    let (line, _) =
        tcp_from(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 8090)).expect("8090 from outside");
    assert!(
        line.starts_with("host saw"),
        "not published outside: {line}"
    );
    // Other namespaces' sockets are left alone: their 127.0.0.1 is theirs.
    let _theirs = WhoamiServer::spawn(
        &lab.outside,
        Transport::Tcp,
        SocketAddrV4::new(LOCALHOST, 8081),
        "outside's own",
    )
    .expect("outside listener");
    let (line, _) = tcp_from(&lab.outside, SocketAddrV4::new(LOCALHOST, 8081))
        .expect("outside's own 127.0.0.1:8081");
    assert!(line.starts_with("outside's own"), "left alone: {line}");

    // A real client: ncat on the host, to localhost.
    // (The server holds the connection open: -i ends ncat once it idles.)
    let out = lab
        .host
        .command("ncat")
        .args(["--recv-only", "-w", "3", "-i", "1", "127.0.0.1", "8081"])
        .output()
        .expect("ncat");
    let text = String::from_utf8_lossy(&out.stdout);
    let seen = parse_whoami(text.trim()).expect("answer");
    assert_eq!(
        *seen.ip(),
        UPLINK_ADDR,
        "the container sees the host: {text}"
    );
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(stats.get(netbpf_common::Counter::HostSocketRedirects) >= 5);
}
