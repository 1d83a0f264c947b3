//! The few rtnetlink requests routing needs: an interface's MAC and veth
//! peer, the IPv4 neighbour table (dump and change notifications), and
//! host routes for container addresses; and the ports of a bridge, for
//! Docker's `enable_icc=false`.
//!
//! rtnetlink rather than parsing `ip -j` output: no dependency on iproute2
//! at run time, typed messages (`netlink-packet-route`), and the same socket
//! API for the dump and for the stream of changes the daemon follows.

use std::{io, net::IpAddr};

use aya::programs::XdpMode;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo as LinkInfoAttr, LinkLayerType, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `RTNLGRP_NEIGH`: the multicast group of neighbour table changes.
const RTNLGRP_NEIGH: u32 = 3;

/// Routing protocol number netbpf's host routes carry, so
/// `ip route show proto 0xb9` lists them (not in `/etc/iproute2/rt_protos`).
pub const ROUTE_PROTO: u8 = 0xb9;

/// rtnetlink failures.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// Socket I/O failed.
    #[error("rtnetlink {what}")]
    Io {
        /// The request.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("rtnetlink {what}: {source}")]
    Kernel {
        /// The request.
        what: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// A reply could not be decoded.
    #[error("rtnetlink {what}: undecodable reply: {detail}")]
    Decode {
        /// The request.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The interface has no usable Ethernet address.
    #[error("interface index {ifindex} has no Ethernet address")]
    NoMac {
        /// The interface.
        ifindex: u32,
    },
}

/// What routing needs to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Whether its link kind (`IFLA_INFO_KIND`) is `veth`.
    pub veth: bool,
    /// For a veth: the peer's ifindex (in the peer's namespace). For
    /// other stacked devices (vlan, macvlan): the lower device's.
    pub peer_ifindex: Option<u32>,
    /// For a veth whose peer lives in another namespace: that namespace's
    /// id as seen from here.
    pub peer_netnsid: Option<i32>,
}

impl LinkInfo {
    /// The XDP mode for an uplink: generic on a veth (a lab, or a host that
    /// is itself a container: native XDP_TX there only delivers when the peer
    /// has NAPI, GRO or an XDP program, which is not ours to set; generic XDP
    /// transmits through the stack and always works) and on stacked devices
    /// (vlan, macvlan report a lower link; the kernel has no native XDP for
    /// them), native otherwise. A veth is known by its link kind: its peer may
    /// have the same index in its own namespace, which the kernel reports as
    /// no peer at all.
    pub fn uplink_xdp_mode(&self) -> XdpMode {
        if self.veth || self.peer_ifindex.is_some() {
            XdpMode::Skb
        } else {
            XdpMode::Default
        }
    }
}

/// One interface of a link dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// Its index.
    pub ifindex: u32,
    /// Its name.
    pub name: String,
    /// The bridge (or bond) it is a port of (`IFLA_MASTER`).
    pub controller: Option<u32>,
}

/// One neighbour table entry (IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    /// Interface it is on.
    pub ifindex: u32,
    /// Its address.
    pub addr: IpAddr,
    /// Its MAC, if resolved.
    pub mac: Option<[u8; 6]>,
    /// Kernel `NUD_*` state bits.
    pub state: u16,
}

impl NeighEntry {
    /// Whether the entry holds a MAC the datapath may use: resolved
    /// (reachable, stale, delay, probe) or static (permanent, noarp), not
    /// incomplete or failed.
    pub fn usable(&self) -> bool {
        const NUD_INCOMPLETE: u16 = 0x01;
        const NUD_FAILED: u16 = 0x20;
        const NUD_NONE: u16 = 0x00;
        self.mac.is_some()
            && self.state & (NUD_INCOMPLETE | NUD_FAILED) == 0
            && self.state != NUD_NONE
    }
}

/// A change to the neighbour table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighEvent {
    /// Added or changed.
    New(NeighEntry),
    /// Removed.
    Del(NeighEntry),
}

/// An rtnetlink socket for requests.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RtnlError {
    move |source| RtnlError::Io { what, source }
}

impl Rtnl {
    /// Opens a socket in the current network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io_err("socket"))?;
        socket.bind_auto().map_err(io_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_err("connect"))?;
        Ok(Self { socket, seq: 1 })
    }

    /// Sends `msg` and collects the replies until the dump ends, the ACK
    /// arrives, or (for a plain GET) the one answer.
    fn request(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(io_err(what))?;
        let multi = flags & NLM_F_DUMP == NLM_F_DUMP;
        let acked = flags & NLM_F_ACK != 0;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(io_err(what))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| RtnlError::Decode {
                        what,
                        detail: e.to_string(),
                    })?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number != self.seq {
                    off += len.max(1);
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            return Err(RtnlError::Kernel {
                                what,
                                source: io::Error::from_raw_os_error(-code.get()),
                            });
                        }
                    },
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if !multi && !acked {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// The MAC and veth peer of interface `ifindex`, in this namespace or
    /// (with `netnsid`) in the namespace with that id.
    pub fn link(&mut self, ifindex: u32, netnsid: Option<i32>) -> Result<LinkInfo, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        if let Some(id) = netnsid {
            msg.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        let replies = self.request("get link", RouteNetlinkMessage::GetLink(msg), 0)?;
        let Some(RouteNetlinkMessage::NewLink(link)) = replies.into_iter().next() else {
            return Err(RtnlError::NoMac { ifindex });
        };
        let mut info = LinkInfo {
            mac: [0; 6],
            veth: false,
            peer_ifindex: None,
            peer_netnsid: None,
        };
        let mut have_mac = false;
        for attr in link.attributes {
            match attr {
                LinkAttribute::Address(a) if a.len() == 6 => {
                    info.mac.copy_from_slice(&a);
                    have_mac = true;
                }
                LinkAttribute::Link(i) if i != 0 => info.peer_ifindex = Some(i),
                LinkAttribute::LinkNetNsId(id) => info.peer_netnsid = Some(id),
                LinkAttribute::LinkInfo(infos) => {
                    info.veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfoAttr::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        // The kernel leaves IFLA_LINK out when it equals the device's own
        // index, as it does for a veth whose peer has the same index in its
        // own namespace (both ends made straight into fresh namespaces are
        // index 2): only the link kind tells that it is a veth. For other
        // devices an own-index link means no lower device.
        if info.veth {
            info.peer_ifindex = info.peer_ifindex.or(Some(ifindex));
        } else if info.peer_ifindex == Some(ifindex) {
            info.peer_ifindex = None;
        }
        if !have_mac {
            return Err(RtnlError::NoMac { ifindex });
        }
        Ok(info)
    }

    /// The link-layer type of interface `ifindex` (`ifi_type` in the link
    /// header: `ARPHRD_ETHER` for Ethernet, veth, bridges; `ARPHRD_NONE`
    /// for WireGuard and tun; `ARPHRD_PPP`, ...).
    pub fn link_layer_type(&mut self, ifindex: u32) -> Result<LinkLayerType, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let replies = self.request("get link", RouteNetlinkMessage::GetLink(msg), 0)?;
        match replies.into_iter().next() {
            Some(RouteNetlinkMessage::NewLink(link)) => Ok(link.header.link_layer_type),
            _ => Err(RtnlError::Decode {
                what: "get link",
                detail: format!("no link message for interface index {ifindex}"),
            }),
        }
    }

    /// The MAC at the other end of veth `ifindex` (the container's).
    pub fn veth_peer_mac(&mut self, ifindex: u32) -> Result<Option<[u8; 6]>, RtnlError> {
        let info = self.link(ifindex, None)?;
        let Some(peer) = info.peer_ifindex else {
            return Ok(None);
        };
        Ok(Some(self.link(peer, info.peer_netnsid)?.mac))
    }

    /// Every interface of this namespace with its name and controller
    /// (a bridge's ports have the bridge's index). Read over netlink, not
    /// `/sys`, which may be another namespace's.
    pub fn links(&mut self) -> Result<Vec<LinkEntry>, RtnlError> {
        let replies = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => {
                    let mut entry = LinkEntry {
                        ifindex: link.header.index,
                        name: String::new(),
                        controller: None,
                    };
                    for attr in link.attributes {
                        match attr {
                            LinkAttribute::IfName(n) => entry.name = n,
                            LinkAttribute::Controller(c) if c != 0 => entry.controller = Some(c),
                            _ => {}
                        }
                    }
                    Some(entry)
                }
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 and IPv6 neighbour table entry.
    pub fn neighbours(&mut self) -> Result<Vec<NeighEntry>, RtnlError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Unspec;
        let replies = self.request(
            "dump neighbours",
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neigh_entry(&n),
                _ => None,
            })
            .collect())
    }

    /// Routes `addr/32` (or an IPv6 `addr/128`) to `ifindex` (replacing a
    /// route to it), so the host's own stack reaches the container.
    pub fn replace_host_route(
        &mut self,
        addr: impl Into<IpAddr>,
        ifindex: u32,
    ) -> Result<(), RtnlError> {
        let msg = host_route(addr.into(), ifindex);
        self.request(
            "add route",
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    /// Removes netbpf's route to `addr/32` (`/128`) via `ifindex`; a
    /// missing route is not an error.
    pub fn delete_host_route(
        &mut self,
        addr: impl Into<IpAddr>,
        ifindex: u32,
    ) -> Result<(), RtnlError> {
        let msg = host_route(addr.into(), ifindex);
        match self.request(
            "delete route",
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_ACK,
        ) {
            Err(RtnlError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// The route message for `addr/32 dev ifindex scope link proto netbpf`
/// (IPv6: `addr/128 dev ifindex proto netbpf`; IPv6 routes have no
/// scope of their own).
fn host_route(addr: IpAddr, ifindex: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let (family, len, scope, dst) = match addr {
        IpAddr::V4(a) => (
            AddressFamily::Inet,
            32,
            RouteScope::Link,
            RouteAddress::Inet(a),
        ),
        IpAddr::V6(a) => (
            AddressFamily::Inet6,
            128,
            RouteScope::Universe,
            RouteAddress::Inet6(a),
        ),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Other(ROUTE_PROTO);
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Destination(dst),
        RouteAttribute::Oif(ifindex),
    ];
    msg
}

/// The IPv4 or IPv6 entry in a neighbour message, if it is one.
fn neigh_entry(n: &NeighbourMessage) -> Option<NeighEntry> {
    if n.header.family != AddressFamily::Inet && n.header.family != AddressFamily::Inet6 {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a));
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(l);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some(NeighEntry {
        ifindex: n.header.ifindex,
        addr: addr?,
        mac,
        state: u16::from(n.header.state),
    })
}

/// A non-blocking socket subscribed to neighbour table changes.
pub struct NeighMonitor {
    socket: Socket,
}

impl NeighMonitor {
    /// Subscribes (in the current network namespace). Subscribe before
    /// dumping the table, so no change falls between the two.
    pub fn open() -> Result<Self, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io_err("socket"))?;
        socket.bind_auto().map_err(io_err("bind"))?;
        socket
            .add_membership(RTNLGRP_NEIGH)
            .map_err(io_err("subscribe to neighbour changes"))?;
        socket
            .set_non_blocking(true)
            .map_err(io_err("non-blocking"))?;
        Ok(Self { socket })
    }

    /// The socket's file descriptor, for polling.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// Every change queued now (empty when none).
    pub fn drain(&mut self) -> Result<Vec<NeighEvent>, RtnlError> {
        let mut out = Vec::new();
        loop {
            let data = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(source) => {
                    return Err(RtnlError::Io {
                        what: "neighbour changes",
                        source,
                    });
                }
            };
            let mut off = 0;
            while off < data.len() {
                let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                else {
                    break;
                };
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                        out.extend(neigh_entry(&n).map(NeighEvent::New));
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
                        out.extend(neigh_entry(&n).map(NeighEvent::Del));
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

impl std::os::fd::AsRawFd for NeighMonitor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd()
    }
}
