//! What the lab's machines run and send: whoami servers, their clients
//! (IPv4 or IPv6), ping over ICMP and ICMPv6.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
    },
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns::Netns;

use super::error::*;

/// A server that answers every TCP connection or UDP datagram with the
/// address it saw the client as ("whoami"), prefixed by a greeting.
pub struct WhoamiServer {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Transport of a [`WhoamiServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl WhoamiServer {
    /// Starts a server in `ns` on `addr` answering `greeting peer\n`. An
    /// IPv6 `addr` takes IPv6 only, so `[::]` and `0.0.0.0` can both
    /// have the same port.
    pub fn spawn(
        ns: &Netns,
        transport: Transport,
        addr: impl Into<SocketAddr>,
        greeting: &str,
    ) -> Result<Self, LabError> {
        let addr = addr.into();
        let stop = Arc::new(AtomicBool::new(false));
        let greeting = greeting.to_owned();
        let flag = stop.clone();
        // Bind inside the namespace, then serve from a plain thread (the
        // socket stays in the namespace it was created in).
        let thread = match transport {
            Transport::Tcp => {
                let listener = ns
                    .run(move || tcp_listener(addr))?
                    .map_err(io_err(format!("listening on tcp {addr}")))?;
                thread::spawn(move || serve_tcp(listener, &greeting, &flag))
            }
            Transport::Udp => {
                let socket = ns
                    .run(move || -> io::Result<UdpSocket> {
                        let s = socket(addr, socket2::Type::DGRAM)?;
                        s.bind(&addr.into())?;
                        let s: UdpSocket = s.into();
                        s.set_read_timeout(Some(Duration::from_millis(50)))?;
                        Ok(s)
                    })?
                    .map_err(io_err(format!("binding udp {addr}")))?;
                thread::spawn(move || serve_udp(socket, &greeting, &flag))
            }
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            addr,
        })
    }
}

impl Drop for WhoamiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A socket of `kind` for `addr`'s family; IPv6 only if `addr` is IPv6.
fn socket(addr: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// A TCP listener on `addr` in the calling thread's namespace: address
/// reuse, a backlog of 4096, non-blocking so that the serving loop can see
/// its stop flag between accepts.
pub(crate) fn tcp_listener(addr: impl Into<SocketAddr>) -> io::Result<TcpListener> {
    let addr = addr.into();
    let s = socket(addr, socket2::Type::STREAM)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

pub(crate) fn serve_tcp(listener: TcpListener, greeting: &str, stop: &AtomicBool) {
    let mut open = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                // One write, one segment.
                let _ = stream.write_all(format!("{greeting} {peer}\n").as_bytes());
                // Keep it open until the client closes, so concurrent
                // connections really are concurrent.
                let _ = stream.set_nonblocking(true);
                open.push(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Reap connections the clients closed.
                let mut buf = [0u8; 64];
                open.retain_mut(|s| !matches!(s.read(&mut buf), Ok(0)));
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

pub(crate) fn serve_udp(socket: UdpSocket, greeting: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{greeting} {peer}\n").as_bytes(), peer);
        }
    }
}

/// Parses a whoami answer ("greeting... a.b.c.d:port") into the address.
pub fn parse_whoami(line: &str) -> Option<SocketAddrV4> {
    line.split_whitespace().last()?.parse().ok()
}

/// The address a whoami answer ("greeting... address:port") shows, as
/// written (either family).
pub fn whoami_seen(line: &str) -> &str {
    line.split_whitespace().last().unwrap_or(line)
}

/// Connects over TCP from inside `ns` to `dst` and returns the whoami line.
pub fn tcp_whoami(ns: &Netns, dst: impl Into<SocketAddr>) -> Result<String, LabError> {
    let dst = dst.into();
    ns.run(move || -> io::Result<String> {
        let stream = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })?
    .map_err(io_err(format!("tcp to {dst} from {}", ns.name())))
}

/// Sends one UDP datagram from inside `ns` (from `src_port`, 0 = any) to
/// `dst` and returns the whoami answer.
pub fn udp_whoami(
    ns: &Netns,
    src_port: u16,
    dst: impl Into<SocketAddr>,
) -> Result<String, LabError> {
    let dst = dst.into();
    let src = match dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, src_port)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, src_port)),
    };
    ns.run(move || -> io::Result<String> {
        let socket = UdpSocket::bind(src)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        // UDP may lose the first datagram while ARP resolves: retry.
        for _ in 0..6 {
            socket.send_to(b"whoami", dst)?;
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no UDP answer"))
    })?
    .map_err(io_err(format!("udp to {dst} from {}", ns.name())))
}

/// Sends ICMP echo requests from inside `ns` to `dst` with identifier `id`
/// until one is answered (at most 5 tries); returns the reply's source.
pub fn ping(ns: &Netns, dst: Ipv4Addr, id: u16) -> Result<Ipv4Addr, LabError> {
    ns.run(move || match echo(IpAddr::V4(dst), id)? {
        IpAddr::V4(src) => Ok(src),
        IpAddr::V6(_) => Err(io::Error::other("an IPv6 reply to IPv4")),
    })?
    .map_err(io_err(format!("ping {dst} from {}", ns.name())))
}

/// Sends ICMPv6 echo requests from inside `ns` to `dst` with identifier
/// `id` until one is answered (at most 5 tries); returns the reply's
/// source.
pub fn ping6(ns: &Netns, dst: Ipv6Addr, id: u16) -> Result<Ipv6Addr, LabError> {
    ns.run(move || match echo(IpAddr::V6(dst), id)? {
        IpAddr::V6(src) => Ok(src),
        IpAddr::V4(_) => Err(io::Error::other("an IPv4 reply to IPv6")),
    })?
    .map_err(io_err(format!("ping -6 {dst} from {}", ns.name())))
}

/// [`ping`] and [`ping6`] in the calling thread's namespace: echo
/// requests (ICMP type 8, or ICMPv6 128) with identifier `id` over a raw
/// socket until one is answered (type 0, or 129); the reply's source.
/// IPv4's raw socket receives the IP header too and needs the ICMP
/// checksum; IPv6's receives the message alone, and the kernel fills in
/// the ICMPv6 checksum (it covers the pseudo-header only the kernel
/// knows).
fn echo(dst: IpAddr, id: u16) -> io::Result<IpAddr> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto, request, reply) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    s.set_read_timeout(Some(Duration::from_millis(400)))?;
    for seq in 1..=5u16 {
        let mut req = [
            request, 0, 0, 0, 0, 0, 0, 0, b'n', b'e', b't', b'b', b'p', b'f', 0, 0,
        ];
        req[4..6].copy_from_slice(&id.to_be_bytes());
        req[6..8].copy_from_slice(&seq.to_be_bytes());
        if dst.is_ipv4() {
            let sum = internet_checksum(&req);
            req[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        s.send_to(&req, &SocketAddr::new(dst, 0).into())?;
        let deadline = Instant::now() + Duration::from_millis(400);
        while Instant::now() < deadline {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                break;
            };
            // SAFETY: recv_from initialised the first n bytes.
            let pkt: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            let at = if dst.is_ipv4() {
                usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4
            } else {
                0
            };
            let icmp = pkt.get(at..).unwrap_or(&[]);
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
                && let Some(src) = from.as_socket().map(|a| a.ip())
            {
                return Ok(src);
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    !netbpf_common::csum_fold(u64::from(sum))
}
