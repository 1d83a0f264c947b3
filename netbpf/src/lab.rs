//! The lab: a container host, containers that all listen on port 4000 and
//! an outside machine, all in network namespaces this module creates and
//! removes. `netbpf lab` (and so `cargo xtask run`) shows the masquerade
//! and published ports working in it; the end-to-end tests build the same
//! topology.
//!
//! ```text
//!  {prefix}-c1 10.77.0.2/32 eth0 ── veth-c1 ┐
//!  {prefix}-c2 10.77.0.3/32 eth0 ── veth-c2 ┤ {prefix}-host  eth0 203.0.113.1/24 ── eth0 203.0.113.2/24 {prefix}-out
//!  ...                                      ┘   (netbpf on eth0)
//! ```
//! Containers are wired the way Calico wires them: a /32 on their veth and
//! a default route via 169.254.1.1 `onlink`; the host routes each /32 to
//! its veth and answers the containers' ARP (proxy_arp for now).

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use log::info;

use crate::{
    maps::{self, NatMaps},
    netns::{self, Netns, NetnsError},
};

/// The uplink address of the lab host.
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The outside machine's address.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The port every server in the lab listens on.
pub const SERVICE_PORT: u16 = 4000;
/// The containers' subnet.
pub const CONTAINER_CIDR: &str = "10.77.0.0/24";
/// The segment subnet the peer and the routed containers share (the
/// seed's 10.0.1.0/24 picture): the host has [`SEGMENT_HOST_ADDR`] on its
/// uplink, the peer [`PEER_ADDR`], routed container `rN` `10.0.1.(100+N)`.
pub const SEGMENT_CIDR: &str = "10.0.1.0/24";
/// The host's address on the segment subnet (a second uplink address).
pub const SEGMENT_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// The peer's address: on the uplink's segment, no routes at all.
pub const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// `netbpf lab` publishes container `cN`'s [`SERVICE_PORT`] on host port
/// `DEMO_PUBLISH_BASE + N` (c1 → 8081, c2 → 8082, ...), TCP and UDP.
pub const DEMO_PUBLISH_BASE: u16 = 8080;

/// A `[[publish]]` table for [`Lab::config_toml`]'s `extra`: `proto`
/// ("tcp" or "udp") host `port` (a number or a range "A-B") to `to`,
/// answering only on `address` if given.
pub fn publish_toml(
    proto: &str,
    port: &str,
    to: SocketAddrV4,
    address: Option<Ipv4Addr>,
) -> String {
    let port = if port.contains('-') {
        format!("\"{port}\"")
    } else {
        port.to_owned()
    };
    let mut s = format!("\n[[publish]]\nproto = \"{proto}\"\nport = {port}\nto = \"{to}\"\n");
    if let Some(a) = address {
        s.push_str(&format!("address = \"{a}\"\n"));
    }
    s
}

/// Lab failures.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// I/O on a file, socket or process.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The daemon did not come up.
    #[error("the netbpf daemon did not start: {0}")]
    Daemon(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// A container in the lab.
#[derive(Debug)]
pub struct Container {
    /// Its namespace.
    pub ns: Netns,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Host side of its veth.
    pub host_veth: String,
}

/// How the host's uplink is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// One veth to the outside machine.
    Outside,
    /// A bridge joining the host, the outside machine and a peer.
    Segment,
    /// One veth to a peer, made straight into both namespaces.
    DirectPeer,
}

/// The lab topology. Dropping it stops the daemon and removes every
/// namespace, pin and file it made.
pub struct Lab {
    /// Prefix of every namespace name.
    pub prefix: String,
    /// Containers first, so they are removed before the host.
    pub containers: Vec<Container>,
    /// Routed containers (`[[container]]`, 10.0.1.101...), if any.
    pub routed: Vec<Container>,
    /// A machine on the uplink's segment (present with routed containers).
    pub peer: Option<Netns>,
    /// The segment: a bridge joining the host's uplink, the outside
    /// machine and the peer (present with routed containers; otherwise the
    /// host and the outside machine share a veth pair).
    pub segment: Option<Netns>,
    /// The outside machine.
    pub outside: Netns,
    /// The container host (netbpf runs here).
    pub host: Netns,
    /// Where the daemon pins its maps.
    pub pin_dir: PathBuf,
    /// Scratch directory (config file, daemon log).
    pub dir: PathBuf,
    daemon: Option<Child>,
}

impl Lab {
    /// Builds the topology with `n` containers under namespace prefix
    /// `prefix` (which must be unique to the caller).
    pub fn build(prefix: &str, n: usize) -> Result<Self, LabError> {
        Self::build_with(prefix, n, 0)
    }

    /// Builds the topology with `n` masqueraded containers and `routed`
    /// routed containers. With routed containers the uplink's link is a
    /// bridge (in namespace `{prefix}-seg`) that also holds a peer machine
    /// (`{prefix}-peer`, [`PEER_ADDR`]/24 and nothing else), and the host's
    /// uplink also gets [`SEGMENT_HOST_ADDR`]/24.
    pub fn build_with(prefix: &str, n: usize, routed: usize) -> Result<Self, LabError> {
        let wiring = if routed == 0 {
            Wiring::Outside
        } else {
            Wiring::Segment
        };
        Self::build_wired(prefix, n, routed, wiring)
    }

    /// Builds `routed` routed containers with a peer machine
    /// (`{prefix}-peer`, [`PEER_ADDR`]/24) wired straight to the host's
    /// uplink by one veth made directly into the two fresh namespaces, so
    /// that both ends have the same index (2) in their own namespace. The
    /// outside machine exists but is not wired.
    pub fn build_direct_peer(prefix: &str, routed: usize) -> Result<Self, LabError> {
        Self::build_wired(prefix, 0, routed, Wiring::DirectPeer)
    }

    fn build_wired(
        prefix: &str,
        n: usize,
        routed: usize,
        wiring: Wiring,
    ) -> Result<Self, LabError> {
        let host = Netns::create(&format!("{prefix}-host"))?;
        let outside = Netns::create(&format!("{prefix}-out"))?;
        let dir = std::env::temp_dir().join(prefix);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut lab = Lab {
            prefix: prefix.to_owned(),
            containers: Vec::new(),
            routed: Vec::new(),
            peer: None,
            segment: None,
            outside,
            host,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(prefix),
            dir,
            daemon: None,
        };
        // Leftovers of an earlier run under the same prefix.
        let _ = maps::unpin_all(&lab.pin_dir);

        match wiring {
            Wiring::Outside => netns::veth(&lab.host, "eth0", &lab.outside, "eth0")?,
            Wiring::Segment => lab.build_segment()?,
            Wiring::DirectPeer => {
                let peer = Netns::create(&format!("{prefix}-peer"))?;
                netns::veth(&lab.host, "eth0", &peer, "eth0")?;
                peer.ip(&["addr", "add", &format!("{PEER_ADDR}/24"), "dev", "eth0"])?;
                lab.peer = Some(peer);
            }
        }
        let up = format!("{UPLINK_ADDR}/24");
        let out = format!("{OUTSIDE_ADDR}/24");
        lab.host.ip(&["addr", "add", &up, "dev", "eth0"])?;
        if wiring != Wiring::DirectPeer {
            lab.outside.ip(&["addr", "add", &out, "dev", "eth0"])?;
        }
        if lab.peer.is_some() {
            // Second, so the uplink's first address (the masquerade
            // address) stays UPLINK_ADDR.
            let seg_host = format!("{SEGMENT_HOST_ADDR}/24");
            lab.host.ip(&["addr", "add", &seg_host, "dev", "eth0"])?;
        }
        // The outside machine is the host's internet: default route to it.
        lab.host
            .ip(&["route", "add", "default", "via", &OUTSIDE_ADDR.to_string()])?;
        lab.host.sysctl("net.ipv4.ip_forward=1")?;
        for i in 1..=n {
            lab.add_container(i)?;
        }
        for i in 1..=routed {
            lab.add_routed(i)?;
        }
        Ok(lab)
    }

    /// The bridge joining host, outside and peer, and the peer.
    fn build_segment(&mut self) -> Result<(), LabError> {
        let seg = Netns::create(&format!("{}-seg", self.prefix))?;
        let peer = Netns::create(&format!("{}-peer", self.prefix))?;
        seg.ip(&["link", "add", "br0", "type", "bridge"])?;
        seg.ip(&["link", "set", "br0", "up"])?;
        for (ns, port) in [
            (&self.host, "p-host"),
            (&self.outside, "p-out"),
            (&peer, "p-peer"),
        ] {
            netns::veth(&seg, port, ns, "eth0")?;
            seg.ip(&["link", "set", port, "master", "br0"])?;
        }
        peer.ip(&["addr", "add", &format!("{PEER_ADDR}/24"), "dev", "eth0"])?;
        self.segment = Some(seg);
        self.peer = Some(peer);
        Ok(())
    }

    /// Routed container `rI`: wired like the others (a /32, default via
    /// 169.254.1.1 onlink), but without proxy_arp and without a host route:
    /// netbpf answers its ARP and installs the route.
    fn add_routed(&mut self, i: usize) -> Result<(), LabError> {
        let ns = Netns::create(&format!("{}-r{i}", self.prefix))?;
        let addr = Ipv4Addr::new(10, 0, 1, 100 + i as u8);
        let host_veth = format!("veth-r{i}");
        netns::veth(&self.host, &host_veth, &ns, "eth0")?;
        netns::wire_calico(&ns, addr)?;
        self.routed.push(Container {
            ns,
            addr,
            host_veth,
        });
        Ok(())
    }

    /// `[[container]]` tables for every routed container.
    pub fn routed_toml(&self) -> String {
        let all: Vec<usize> = (0..self.routed.len()).collect();
        self.routed_toml_for(&all)
    }

    /// `[[container]]` tables for the routed containers at `indexes`.
    pub fn routed_toml_for(&self, indexes: &[usize]) -> String {
        indexes
            .iter()
            .filter_map(|&i| self.routed.get(i))
            .map(|c| {
                format!(
                    "\n[[container]]\naddress = \"{}\"\ninterface = \"{}\"\n",
                    c.addr, c.host_veth
                )
            })
            .collect()
    }

    /// Rewrites the running daemon's config file with `extra` (see
    /// [`Lab::config_toml`]); send SIGHUP to apply what can be reloaded.
    pub fn rewrite_config(&self, extra: &str) -> Result<(), LabError> {
        let config = self.dir.join("netbpf.toml");
        fs::write(&config, self.config_toml(extra))
            .map_err(io_err(format!("writing {}", config.display())))
    }

    /// Sends `signal` to the daemon, if it runs.
    pub fn signal_daemon(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.daemon {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    fn add_container(&mut self, i: usize) -> Result<(), LabError> {
        let ns = Netns::create(&format!("{}-c{i}", self.prefix))?;
        let addr = Ipv4Addr::new(10, 77, 0, 1 + i as u8);
        let host_veth = format!("veth-c{i}");
        netns::veth(&self.host, &host_veth, &ns, "eth0")?;
        let a = addr.to_string();
        netns::wire_calico(&ns, addr)?;
        self.host
            .ip(&["route", "add", &format!("{a}/32"), "dev", &host_veth])?;
        self.host
            .sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp=1"))?;
        self.containers.push(Container {
            ns,
            addr,
            host_veth,
        });
        Ok(())
    }

    /// The config the lab runs netbpf with; `extra` is appended verbatim.
    pub fn config_toml(&self, extra: &str) -> String {
        format!(
            "[uplink]\ninterface = \"eth0\"\n\n[[masquerade]]\nsource = \"{CONTAINER_CIDR}\"\n{extra}"
        )
    }

    /// Starts `exe daemon` in the host namespace with [`Lab::config_toml`]
    /// and waits until its maps are pinned.
    pub fn start_daemon(&mut self, exe: &Path, extra_toml: &str) -> Result<(), LabError> {
        self.start_daemon_with(exe, extra_toml, &[])
    }

    /// [`Lab::start_daemon`] with extra `daemon` arguments.
    pub fn start_daemon_with(
        &mut self,
        exe: &Path,
        extra_toml: &str,
        daemon_args: &[&str],
    ) -> Result<(), LabError> {
        let config = self.dir.join("netbpf.toml");
        fs::write(&config, self.config_toml(extra_toml))
            .map_err(io_err(format!("writing {}", config.display())))?;
        let log_path = self.dir.join("daemon.log");
        let log = fs::File::create(&log_path).map_err(io_err("creating the daemon log"))?;
        let log2 = log.try_clone().map_err(io_err("duplicating the log fd"))?;
        // `--netns` rather than `ip netns exec`: the latter gives the daemon
        // its own mount namespace, where its pins would be invisible to us.
        let child = std::process::Command::new(exe)
            .arg("--netns")
            .arg(self.host.name())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--gc-interval")
            .arg("1")
            .args(daemon_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err("starting the daemon"))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Maps are pinned as soon as they are created; the daemon is ready
        // once it says it runs (everything attached).
        let marker = "running; Ctrl-C or SIGTERM stops";
        while Instant::now() < deadline {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains(marker) {
                return Ok(());
            }
            if let Some(child) = self.daemon.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.daemon = None;
                return Err(LabError::Daemon(format!(
                    "exited with {status}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(LabError::Daemon(format!(
            "not running after 20 s: {}",
            fs::read_to_string(&log_path).unwrap_or_default()
        )))
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (no clean-up at all) and waits for it;
    /// returns its log.
    pub fn kill_daemon(&mut self) -> Result<String, LabError> {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default())
    }

    /// Stops the daemon with SIGTERM and waits for it; returns its log.
    pub fn stop_daemon(&mut self) -> Result<String, LabError> {
        if let Some(child) = self.daemon.take() {
            terminate(child);
        }
        Ok(fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default())
    }

    /// The daemon's maps.
    pub fn nat_maps(&self) -> Result<NatMaps, maps::MapsError> {
        NatMaps::open_pinned(&self.pin_dir)
    }
}

/// Stops a daemon child with SIGTERM, waiting up to 10 s before SIGKILL.
pub fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop_daemon();
        let _ = maps::unpin_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.dir);
        // Namespaces are removed by their own Drop.
    }
}

/// A server that answers every TCP connection or UDP datagram with the
/// address it saw the client as ("whoami"), prefixed by a greeting.
pub struct WhoamiServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddrV4,
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
    /// Starts a server in `ns` on `addr` answering `greeting peer\n`.
    pub fn spawn(
        ns: &Netns,
        transport: Transport,
        addr: SocketAddrV4,
        greeting: &str,
    ) -> Result<Self, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let greeting = greeting.to_owned();
        let flag = stop.clone();
        // Bind inside the namespace, then serve from a plain thread (the
        // socket stays in the namespace it was created in).
        let thread = match transport {
            Transport::Tcp => {
                let listener = ns
                    .run(move || -> io::Result<TcpListener> {
                        let s = socket2::Socket::new(
                            socket2::Domain::IPV4,
                            socket2::Type::STREAM,
                            None,
                        )?;
                        s.set_reuse_address(true)?;
                        s.bind(&SocketAddr::V4(addr).into())?;
                        s.listen(4096)?;
                        s.set_nonblocking(true)?;
                        Ok(s.into())
                    })?
                    .map_err(io_err(format!("listening on tcp {addr}")))?;
                thread::spawn(move || serve_tcp(listener, &greeting, &flag))
            }
            Transport::Udp => {
                let socket = ns
                    .run(move || -> io::Result<UdpSocket> {
                        let s = UdpSocket::bind(addr)?;
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

fn serve_tcp(listener: TcpListener, greeting: &str, stop: &AtomicBool) {
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

fn serve_udp(socket: UdpSocket, greeting: &str, stop: &AtomicBool) {
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

/// Connects over TCP from inside `ns` to `dst` and returns the whoami line.
pub fn tcp_whoami(ns: &Netns, dst: SocketAddrV4) -> Result<String, LabError> {
    ns.run(move || -> io::Result<String> {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })?
    .map_err(io_err(format!("tcp to {dst} from {}", ns.name())))
}

/// Sends one UDP datagram from inside `ns` (from `src_port`, 0 = any) to
/// `dst` and returns the whoami answer.
pub fn udp_whoami(ns: &Netns, src_port: u16, dst: SocketAddrV4) -> Result<String, LabError> {
    ns.run(move || -> io::Result<String> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, src_port))?;
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
    ns.run(move || -> io::Result<Ipv4Addr> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        s.set_read_timeout(Some(Duration::from_millis(400)))?;
        for seq in 1..=5u16 {
            let mut req = [
                8u8, 0, 0, 0, 0, 0, 0, 0, b'n', b'e', b't', b'b', b'p', b'f', 0, 0,
            ];
            req[4..6].copy_from_slice(&id.to_be_bytes());
            req[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = internet_checksum(&req);
            req[2..4].copy_from_slice(&sum.to_be_bytes());
            s.send_to(&req, &SocketAddr::V4(SocketAddrV4::new(dst, 0)).into())?;
            let deadline = Instant::now() + Duration::from_millis(400);
            while Instant::now() < deadline {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
                let Ok(n) = s.recv(&mut buf) else { break };
                // SAFETY: recv initialised the first n bytes.
                let pkt: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
                let icmp = pkt.get(ihl..).unwrap_or(&[]);
                if icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == id.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                {
                    return Ok(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"))
    })?
    .map_err(io_err(format!("ping {dst} from {}", ns.name())))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Runs the demo: builds the lab, starts the daemon with each container's
/// port 4000 published, shows each container reaching the outside through
/// the masquerade and the outside reaching each container through its
/// published port, the NAT rules and the conntrack table that did it, then
/// shows live counters until Ctrl-C (or stops there, with `once`).
pub async fn run_demo(exe: &Path, prefix: &str, once: bool) -> anyhow::Result<()> {
    println!("netbpf lab: building namespaces {prefix}-* (the host's own network is not touched)");
    let mut lab = Lab::build_with(prefix, 3, 5)?;
    let mut _servers = Vec::new();
    for transport in [Transport::Tcp, Transport::Udp] {
        _servers.push(WhoamiServer::spawn(
            &lab.outside,
            transport,
            SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT),
            "outside: you are",
        )?);
        for c in &lab.routed {
            _servers.push(WhoamiServer::spawn(
                &c.ns,
                transport,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                &format!("routed container {}: hello,", c.addr),
            )?);
        }
        for (i, c) in lab.containers.iter().enumerate() {
            _servers.push(WhoamiServer::spawn(
                &c.ns,
                transport,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                &format!("container c{} ({}): hello,", i + 1, c.addr),
            )?);
        }
    }
    let mut publish = String::new();
    let mut published = Vec::new();
    for (i, c) in lab.containers.iter().enumerate() {
        let port = DEMO_PUBLISH_BASE + 1 + i as u16;
        let to = SocketAddrV4::new(c.addr, SERVICE_PORT);
        for proto in ["tcp", "udp"] {
            publish.push_str(&publish_toml(proto, &port.to_string(), to, None));
        }
        published.push((i + 1, port, to));
    }
    println!(
        "  host {prefix}-host: uplink eth0 {UPLINK_ADDR}/24, containers {CONTAINER_CIDR} (each listening on tcp+udp :{SERVICE_PORT})"
    );
    println!("  outside {prefix}-out: {OUTSIDE_ADDR}, whoami server on tcp+udp :{SERVICE_PORT}");
    publish.push_str(&lab.routed_toml());
    println!(
        "  peer {prefix}-peer: {PEER_ADDR}/24 on the uplink's segment, no routes; routed containers {}",
        lab.routed
            .iter()
            .map(|c| c.addr.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    lab.start_daemon(exe, &publish)?;
    println!(
        "  netbpf daemon attached to {prefix}-host/eth0, maps pinned in {}; config: {}",
        lab.pin_dir.display(),
        lab.dir.join("netbpf.toml").display()
    );
    println!();
    println!("The Docker way, outbound: every container reaches the outside as {UPLINK_ADDR}");
    let dst = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    let seen = |line: String| parse_whoami(&line).map(|a| a.to_string()).unwrap_or(line);
    for (i, c) in lab.containers.iter().enumerate() {
        let tcp = tcp_whoami(&c.ns, dst)?;
        let udp = udp_whoami(&c.ns, 0, dst)?;
        let icmp = ping(&c.ns, OUTSIDE_ADDR, 0x4c00 + i as u16)?;
        println!(
            "  c{} {:<10} tcp → outside saw {:<21} udp → {:<21} ping → reply from {icmp}",
            i + 1,
            c.addr,
            seen(tcp),
            seen(udp),
        );
    }
    println!();
    println!(
        "The Docker way, inbound: the outside reaches each container through a published port, and the container sees the client's real address"
    );
    for (n, port, to) in &published {
        let host = SocketAddrV4::new(UPLINK_ADDR, *port);
        let tcp = tcp_whoami(&lab.outside, host)?;
        let udp = udp_whoami(&lab.outside, 0, host)?;
        println!(
            "  {host} → c{n} {to}   tcp → c{n} saw {:<21} udp → c{n} saw {}",
            seen(tcp),
            seen(udp),
        );
    }
    println!();
    if let Some(peer) = &lab.peer {
        println!(
            "The Calico way: the peer reaches each routed container at its own IP (the host answers ARP for it)"
        );
        for c in &lab.routed {
            let dst = SocketAddrV4::new(c.addr, SERVICE_PORT);
            let tcp = tcp_whoami(peer, dst)?;
            let udp = udp_whoami(peer, 0, dst)?;
            println!(
                "  {dst:<16} tcp → {} saw {:<16} udp → saw {}",
                c.addr,
                seen(tcp),
                seen(udp)
            );
        }
        let neigh = peer.ip(&["-4", "neigh", "show", "dev", "eth0"])?;
        println!();
        println!("The peer's ARP table (every container at the host's uplink MAC):");
        print!("{}", indent(&String::from_utf8_lossy(&neigh.stdout)));
        println!();
        println!("The routed containers (netbpf containers list):");
        // Read inside the host namespace, so interface names resolve there.
        let pin_dir = lab.pin_dir.clone();
        let rows = lab.host.run(move || crate::containers::list(&pin_dir))??;
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
        print!(
            "{}",
            indent(&crate::table::render(
                &crate::containers::ContainerRow::HEADER,
                &cells
            ))
        );
        println!();
        println!("The neighbour map (netbpf neigh list):");
        let pin_dir = lab.pin_dir.clone();
        let rows = lab.host.run(move || crate::neigh::list(&pin_dir))??;
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
        print!(
            "{}",
            indent(&crate::table::render(
                &crate::neigh::NeighRow::HEADER,
                &cells
            ))
        );
        println!();
    }
    println!("The NAT rules (netbpf nat list):");
    print!(
        "{}",
        indent(&crate::rows::NatRules::read(&lab.pin_dir)?.render())
    );
    println!();
    println!("The conntrack table that made it happen (netbpf conntrack list):");
    let nat = lab.nat_maps()?;
    let rows = crate::conntrack::list(&nat, &crate::config::Timeouts::default())?;
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
    print!(
        "{}",
        indent(&crate::table::render(
            &crate::conntrack::FlowRow::HEADER,
            &cells
        ))
    );
    println!();
    if once {
        info!("lab: done (--once)");
    } else {
        println!("Live counters (netbpf stats), per second; Ctrl-C removes the lab.");
        let snapshot = || -> anyhow::Result<crate::live::Snapshot> {
            Ok(crate::live::Snapshot {
                flows: nat.flows()?.len(),
                counters: maps::read_stats(&lab.pin_dir)?.counters,
            })
        };
        let mut live = crate::live::Live::new();
        let mut before = snapshot()?;
        let mut taken = Instant::now();
        // The totals so far, then what changes.
        live.start(&before)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let now = snapshot()?;
                    live.show(&before, &now, taken.elapsed())?;
                    before = now;
                    taken = Instant::now();
                }
            }
        }
    }
    drop(nat);
    let log = lab.stop_daemon()?;
    if log.contains("ERROR") {
        println!("daemon log:\n{log}");
    }
    drop(lab);
    println!("lab removed: namespaces, pins and files are gone");
    Ok(())
}

/// Indents every line of `text` by two spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
