//! Container routes across hosts with BGP, through BIRD 2.
//!
//! netbpf does not speak BGP itself. It drives BIRD:
//!
//! * **Announcing.** netbpf renders BIRD's configuration for its part into
//!   a file it owns (`[bgp] config`, by default `/etc/bird/netbpf.conf`):
//!   a static protocol `netbpf_containers` holding this host's routed
//!   containers as /32 blackhole routes (or the `[bgp] block` plus the
//!   /32s outside it), a filter that exports exactly those, and one BGP
//!   protocol per `[[bgp.peer]]`. BIRD's main config includes the file.
//!   When the main config (`[bgp] main_config`) does not exist, netbpf
//!   writes a complete one (router id, device and kernel protocols, the
//!   include) and owns it while its first line is [`MARKER`]; an existing
//!   file of the user's is never touched.
//! * **Reloading.** [`BgpSync`] (run by the daemon every routing sync)
//!   reads the routed containers from the pinned maps; when the set
//!   changes it rewrites the file and asks BIRD to `configure` through its
//!   control socket. BIRD reconfigures the static protocol in place and
//!   sends the updates and withdrawals: BGP sessions are not restarted.
//! * **Learning.** Routes BIRD learns from the peers are installed by
//!   BIRD's kernel protocol in the main routing table (`proto bird`). The
//!   datapath's `bpf_fib_lookup` reads that table: a packet from a routed
//!   container to another host's container gets the peer host as next hop
//!   on the uplink and is forwarded in the kernel, no NAT.
//! * **Observing.** [`status`] asks the control socket for the BGP
//!   protocols (`show protocols all`) and the routes (`show route ...`),
//!   parsed by [`parse_protocols`] and [`parse_routes`].
//!
//! The blackhole routes are only for export: the kernel protocol netbpf
//! writes installs BGP routes only, and should a user's kernel protocol
//! export them anyway, BIRD's kernel metric (32) loses to netbpf's own
//! `/32 dev veth` routes (metric 0).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read as _, Write as _},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use log::{info, warn};
use serde::Serialize;

use crate::config::{BgpConfig, Config, Ipv4Cidr};

/// First line of every file netbpf writes for BIRD. A main config that
/// starts with it is netbpf's to rewrite.
pub const MARKER: &str = "# Written by netbpf";

/// Name of the static protocol holding the announced routes.
pub const STATIC_PROTOCOL: &str = "netbpf_containers";

/// Name of the kernel protocol in a main config netbpf writes.
pub const KERNEL_PROTOCOL: &str = "netbpf_kernel";

/// How long a control-socket exchange may take.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of one answer read from BIRD's control socket (`show route`
/// of a full table is about 150 bytes a route: 16 MiB is some 100,000
/// routes, beyond what `[bgp] receive_limit` lets in by default).
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Longest line of an answer read from BIRD's control socket.
pub const MAX_REPLY_LINE: usize = 64 << 10;

/// Name of the import filter on every peer's session.
pub const IMPORT_FILTER: &str = "netbpf_learn";

/// Ranges never learned from a peer: "this network", loopback,
/// link-local, multicast and the reserved range up to the broadcast
/// address.
pub const SPECIAL_PURPOSE: [Ipv4Cidr; 4] = [
    Ipv4Cidr {
        addr: Ipv4Addr::new(0, 0, 0, 0),
        prefix_len: 8,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(127, 0, 0, 0),
        prefix_len: 8,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(169, 254, 0, 0),
        prefix_len: 16,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(224, 0, 0, 0),
        prefix_len: 3,
    },
];

/// BGP failures.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// Reading or writing a file, or talking to the socket.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// BIRD answered a command with an error.
    #[error("BIRD refused `{command}`: {code} {message}")]
    Bird {
        /// The command.
        command: String,
        /// BIRD's reply code (8000 and up).
        code: u16,
        /// BIRD's message.
        message: String,
    },
    /// The control socket said something that is not BIRD's protocol.
    #[error("unexpected answer on BIRD's control socket: {0:?}")]
    Protocol(String),
    /// An answer was longer than netbpf reads ([`MAX_REPLY_BYTES`], or a
    /// line longer than [`MAX_REPLY_LINE`]).
    #[error("BIRD's answer to `{command}` is longer than {limit} bytes: not read further")]
    TooLong {
        /// The command.
        command: String,
        /// The bound that was hit.
        limit: usize,
    },
    /// `configure` did not end with "Reconfigured".
    #[error("BIRD did not reconfigure: {code} {message}")]
    NotReconfigured {
        /// The final reply code.
        code: u16,
        /// The final message.
        message: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BgpError {
    let what = what.into();
    move |source| BgpError::Io { what, source }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// The prefixes announced for `containers`: the block (if any) first, then
/// every container outside it as a /32, in address order.
pub fn announced_prefixes(cfg: &BgpConfig, containers: &BTreeSet<Ipv4Addr>) -> Vec<Ipv4Cidr> {
    let mut out: Vec<Ipv4Cidr> = cfg.block.iter().copied().collect();
    out.extend(
        containers
            .iter()
            .filter(|a| !cfg.block.is_some_and(|b| b.contains(**a)))
            .map(|&addr| Ipv4Cidr {
                addr,
                prefix_len: 32,
            }),
    );
    out
}

/// Name of the BGP protocol for the peer at `addr` (stable across
/// reorderings of `[[bgp.peer]]`, so a reload does not restart sessions).
pub fn peer_protocol(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("netbpf_peer_{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}

/// The host's own networks, which routes learned from a peer must stay
/// out of: the uplink's subnets (`uplink_networks`, addresses with their
/// prefix lengths), the masquerade sources and the `[bgp] block`. Sorted,
/// host bits cleared, without duplicates.
pub fn own_networks(config: &Config, uplink_networks: &[Ipv4Cidr]) -> Vec<Ipv4Cidr> {
    let mut out: Vec<Ipv4Cidr> = uplink_networks.iter().map(Ipv4Cidr::network).collect();
    out.extend(config.masquerade.iter().map(|m| m.source.network()));
    out.extend(config.bgp.iter().filter_map(|b| b.block));
    out.sort_by_key(|c| (u32::from(c.addr), c.prefix_len));
    out.dedup();
    out
}

/// A BIRD prefix set matching `nets` and every longer prefix inside them:
/// `[ 10.0.0.0/24+, 10.77.0.0/24+ ]`.
fn prefix_set(nets: &[Ipv4Cidr]) -> String {
    let items: Vec<String> = nets.iter().map(|n| format!("{}+", n.network())).collect();
    format!("[ {} ]", items.join(", "))
}

/// The fragment netbpf owns (`[bgp] config`) for these containers. `own`
/// are the host's own networks ([`own_networks`]): nothing inside them is
/// learned from a peer.
pub fn render_fragment(
    cfg: &BgpConfig,
    own: &[Ipv4Cidr],
    containers: &BTreeSet<Ipv4Addr>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{MARKER} from the [bgp] table of its config.");
    s.push_str(
        "# Rewritten whenever routed containers come and go: do not edit.\n\
         # BIRD's main config includes it.\n\n",
    );
    s.push_str(
        "# This host's routed containers. Blackhole routes: they exist to be\n\
         # announced; netbpf itself routes the addresses to the containers.\n",
    );
    let _ = writeln!(s, "protocol static {STATIC_PROTOCOL} {{");
    s.push_str("  ipv4;\n");
    for p in announced_prefixes(cfg, containers) {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    s.push_str("}\n\n");
    s.push_str("# Announce netbpf's routes and nothing else.\n");
    s.push_str("filter netbpf_announce {\n");
    let _ = writeln!(s, "  if proto = \"{STATIC_PROTOCOL}\" then accept;");
    s.push_str("  reject;\n}\n\n");
    let _ = write!(
        s,
        "# Learn the other hosts' containers and nothing else: prefixes of\n\
         # /{min} or longer (import_min_len; never a default route or an\n\
         # aggregate), outside the special-purpose ranges and outside this\n\
         # host's own networks (the uplink's subnets, the masquerade sources,\n\
         # the block), which a peer must not take over.\n\
         filter {IMPORT_FILTER} {{\n\
         \x20 if net.len < {min} then reject;\n\
         \x20 if net ~ {special} then reject;\n",
        min = cfg.import_min_len,
        special = prefix_set(&SPECIAL_PURPOSE),
    );
    if !own.is_empty() {
        let _ = writeln!(s, "  if net ~ {} then reject;", prefix_set(own));
    }
    s.push_str("  accept;\n}\n");
    for peer in &cfg.peers {
        let kind = if peer.asn == cfg.local_as {
            "iBGP"
        } else {
            "eBGP"
        };
        let _ = write!(
            s,
            "\n# [[bgp.peer]] {addr} AS {asn} ({kind})\n\
             protocol bgp {name} {{\n\
             \x20 router id {rid};\n\
             \x20 local as {las};\n\
             \x20 neighbor {addr} as {asn};\n\
             \x20 direct;\n\
             \x20 graceful restart on;\n\
             \x20 connect retry time 5;\n\
             \x20 ipv4 {{\n\
             \x20   import filter {IMPORT_FILTER};\n\
             \x20   receive limit {limit} action block;\n\
             \x20   export filter netbpf_announce;\n\
             \x20   gateway direct;\n\
             \x20 }};\n\
             }}\n",
            addr = peer.address,
            asn = peer.asn,
            name = peer_protocol(peer.address),
            rid = cfg.router_id,
            las = cfg.local_as,
            limit = cfg.receive_limit,
        );
    }
    s
}

/// The complete main config netbpf writes when `[bgp] main_config` does
/// not exist: router id, interfaces, BGP routes into the kernel's main
/// table, and the include of the fragment.
pub fn render_main(cfg: &BgpConfig) -> String {
    format!(
        "{MARKER}: [bgp] main_config did not exist. netbpf rewrites this file at\n\
         # start while this line is first; remove the line to take the file over.\n\n\
         log syslog all;\n\
         router id {rid};\n\n\
         protocol device {{\n  scan time 10;\n}}\n\n\
         # Routes learned over BGP go into the kernel's main table, where\n\
         # netbpf's datapath (bpf_fib_lookup) finds them. Only those: the\n\
         # static routes for this host's containers are for announcing.\n\
         # persist: keep them in the kernel while BIRD restarts (start BIRD\n\
         # with -R so it waits for its peers before syncing the table).\n\
         protocol kernel {KERNEL_PROTOCOL} {{\n\
         \x20 persist;\n\
         \x20 graceful restart on;\n\
         \x20 ipv4 {{\n\
         \x20   import none;\n\
         \x20   export where source = RTS_BGP;\n\
         \x20 }};\n\
         }}\n\n\
         include \"{include}\";\n",
        rid = cfg.router_id,
        include = cfg.config.display(),
    )
}

/// Writes `text` to `path` through a temporary file and a rename, so BIRD
/// never reads half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), BgpError> {
    let tmp = path.with_extension("netbpf-tmp");
    std::fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))
}

/// What netbpf found at `[bgp] main_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainConfig {
    /// It did not exist, or was netbpf's: netbpf (re)wrote it.
    Written,
    /// The user's; it includes netbpf's fragment.
    UserIncludes,
    /// The user's; it does not include netbpf's fragment (nothing will be
    /// announced until it does).
    UserMissingInclude,
}

/// Writes the main config if it is missing or netbpf's own; otherwise
/// checks that it includes the fragment. Never modifies a user's file.
pub fn prepare_main_config(cfg: &BgpConfig) -> Result<MainConfig, BgpError> {
    let path = &cfg.main_config;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.starts_with(MARKER) => {
            let include = format!("\"{}\"", cfg.config.display());
            let included = text.lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with('#') && l.starts_with("include") && l.contains(&include)
            });
            Ok(if included {
                MainConfig::UserIncludes
            } else {
                MainConfig::UserMissingInclude
            })
        }
        Ok(_) => {
            write_atomic(path, &render_main(cfg))?;
            Ok(MainConfig::Written)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(path, &render_main(cfg))?;
            Ok(MainConfig::Written)
        }
        Err(e) => Err(BgpError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

// ---------------------------------------------------------------------------
// The control socket
// ---------------------------------------------------------------------------

/// One line of a BIRD reply: its code and text (continuation lines carry
/// the code of the line they continue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// Reply code: 0xxx done, 1xxx table data, 2xxx headings, 8xxx/9xxx errors.
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

/// Splits a raw line of BIRD's CLI protocol into (code, last line?, text).
/// `prev` is the code of the line before, for continuation lines.
pub fn parse_reply_line(line: &str, prev: u16) -> Result<(u16, bool, String), BgpError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let b = line.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        let code: u16 = line[..4]
            .parse()
            .map_err(|_| BgpError::Protocol(line.to_owned()))?;
        return Ok((code, b[4] == b' ', line[5..].to_owned()));
    }
    if let Some(rest) = line.strip_prefix(' ') {
        return Ok((prev, false, rest.to_owned()));
    }
    Err(BgpError::Protocol(line.to_owned()))
}

/// A connection to BIRD's control socket.
pub struct BirdClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// BIRD's version from its greeting (e.g. `BIRD 2.0.12`).
    pub version: String,
}

impl BirdClient {
    /// Connects to `socket` and reads BIRD's greeting.
    pub fn connect(socket: &Path) -> Result<Self, BgpError> {
        let what = || format!("connecting to BIRD's control socket {}", socket.display());
        let stream = UnixStream::connect(socket).map_err(io_err(what()))?;
        stream
            .set_read_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err(what()))?;
        stream
            .set_write_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err(what()))?;
        let writer = stream.try_clone().map_err(io_err(what()))?;
        let mut client = BirdClient {
            reader: BufReader::new(stream),
            writer,
            version: String::new(),
        };
        let hello = client.read_reply("(greeting)")?;
        client.version = hello
            .last()
            .map(|l| l.text.trim_end_matches(" ready.").to_owned())
            .unwrap_or_default();
        Ok(client)
    }

    /// Reads one answer, at most [`MAX_REPLY_BYTES`] of it in lines of at
    /// most [`MAX_REPLY_LINE`] bytes: a peer that floods BIRD with routes
    /// cannot make netbpf hold an unbounded `show route` in memory.
    fn read_reply(&mut self, command: &str) -> Result<Vec<ReplyLine>, BgpError> {
        let mut lines = Vec::new();
        let mut prev = 0;
        let mut total = 0usize;
        let too_long = |limit| BgpError::TooLong {
            command: command.to_owned(),
            limit,
        };
        loop {
            let mut raw = String::new();
            let n = (&mut self.reader)
                .take(MAX_REPLY_LINE as u64 + 1)
                .read_line(&mut raw)
                .map_err(io_err(format!("reading BIRD's answer to `{command}`")))?;
            if n == 0 {
                return Err(BgpError::Protocol(format!(
                    "connection closed during the answer to `{command}`"
                )));
            }
            if n > MAX_REPLY_LINE {
                return Err(too_long(MAX_REPLY_LINE));
            }
            total += n;
            if total > MAX_REPLY_BYTES {
                return Err(too_long(MAX_REPLY_BYTES));
            }
            let (code, last, text) = parse_reply_line(&raw, prev)?;
            prev = code;
            lines.push(ReplyLine { code, text });
            if last {
                if code >= 8000 {
                    let message = lines.last().map(|l| l.text.clone()).unwrap_or_default();
                    return Err(BgpError::Bird {
                        command: command.to_owned(),
                        code,
                        message,
                    });
                }
                return Ok(lines);
            }
        }
    }

    /// Sends one command and returns every line of the answer. An answer
    /// ending in an error code (8000 and up) is [`BgpError::Bird`].
    pub fn command(&mut self, command: &str) -> Result<Vec<ReplyLine>, BgpError> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err(format!("sending `{command}` to BIRD")))?;
        self.read_reply(command)
    }
}

/// `birdc configure`: BIRD re-reads its config. Ok once it says
/// "Reconfigured" (0003) or that it is reconfiguring (0004, 0005).
pub fn reconfigure(socket: &Path) -> Result<(), BgpError> {
    let lines = BirdClient::connect(socket)?.command("configure")?;
    match lines.last() {
        Some(l) if matches!(l.code, 3..=5) => Ok(()),
        Some(l) => Err(BgpError::NotReconfigured {
            code: l.code,
            message: l.text.clone(),
        }),
        None => Err(BgpError::Protocol("empty answer to configure".into())),
    }
}

// ---------------------------------------------------------------------------
// The daemon's side: keep BIRD in step with the routed containers
// ---------------------------------------------------------------------------

/// Keeps the fragment and BIRD in step with the routed containers the
/// pinned maps hold (whoever added them: config, SIGHUP or the CLI).
pub struct BgpSync {
    cfg: BgpConfig,
    /// The host's own networks, kept out of what is learned.
    own: Vec<Ipv4Cidr>,
    pin_dir: PathBuf,
    /// The containers last written to the fragment.
    written: Option<BTreeSet<Ipv4Addr>>,
    /// Whether BIRD still has to be told (it was unreachable or refused).
    pending: bool,
    /// Whether the last attempt to reach BIRD failed (to log once).
    failing: bool,
}

impl BgpSync {
    /// Prepares the main config (see [`prepare_main_config`]) and writes
    /// the fragment for the containers in the maps pinned at `pin_dir`;
    /// `own` are the host's own networks ([`own_networks`]), which nothing
    /// learned from a peer may fall into.
    pub fn start(cfg: &BgpConfig, own: Vec<Ipv4Cidr>, pin_dir: &Path) -> Result<Self, BgpError> {
        match prepare_main_config(cfg)? {
            MainConfig::Written => info!(
                "bgp: wrote BIRD's main config {} (it includes {})",
                cfg.main_config.display(),
                cfg.config.display()
            ),
            MainConfig::UserIncludes => info!(
                "bgp: {} includes netbpf's {}",
                cfg.main_config.display(),
                cfg.config.display()
            ),
            MainConfig::UserMissingInclude => warn!(
                "bgp: {} does not include \"{}\": add `include \"{}\";` to it, or BIRD announces nothing of netbpf's",
                cfg.main_config.display(),
                cfg.config.display(),
                cfg.config.display()
            ),
        }
        let own_list: Vec<String> = own.iter().map(Ipv4Cidr::to_string).collect();
        info!(
            "bgp: learning prefixes of /{} or longer, at most {} per peer, none inside {}",
            cfg.import_min_len,
            cfg.receive_limit,
            own_list.join(" ")
        );
        let mut sync = BgpSync {
            cfg: cfg.clone(),
            own,
            pin_dir: pin_dir.to_path_buf(),
            written: None,
            pending: false,
            failing: false,
        };
        sync.sync();
        Ok(sync)
    }

    /// Re-reads the routed containers; when they changed, rewrites the
    /// fragment and reloads BIRD. Problems are logged (and retried on the
    /// next call), never fatal: BIRD may start after netbpf.
    pub fn sync(&mut self) {
        let containers: BTreeSet<Ipv4Addr> = match crate::containers::list(&self.pin_dir) {
            Ok(rows) => rows.into_iter().map(|r| r.address).collect(),
            Err(e) => {
                log::debug!("bgp: reading the routed containers: {e}");
                return;
            }
        };
        self.apply(containers);
    }

    /// Like [`BgpSync::sync`] with the container set given.
    pub fn apply(&mut self, containers: BTreeSet<Ipv4Addr>) {
        if self.written.as_ref() != Some(&containers) {
            let text = render_fragment(&self.cfg, &self.own, &containers);
            if let Err(e) = write_atomic(&self.cfg.config, &text) {
                warn!("bgp: {}", error_chain(&e));
                return;
            }
            info!(
                "bgp: {} announcing {} prefix(es) for {} routed container(s)",
                self.cfg.config.display(),
                announced_prefixes(&self.cfg, &containers).len(),
                containers.len()
            );
            self.written = Some(containers);
            self.pending = true;
        }
        if !self.pending {
            return;
        }
        match reconfigure(&self.cfg.socket) {
            Ok(()) => {
                if self.failing {
                    info!("bgp: BIRD reachable again and reconfigured");
                }
                self.pending = false;
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    warn!("bgp: BIRD not reconfigured (retrying): {}", error_chain(&e));
                }
                self.failing = true;
            }
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// A BGP protocol (session) as BIRD reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// BIRD's protocol name (`netbpf_peer_...` for netbpf's peers).
    pub name: String,
    /// Whether netbpf configured it.
    pub netbpf: bool,
    /// The neighbour's address.
    pub neighbor: Option<String>,
    /// The neighbour's AS.
    pub neighbor_as: Option<u32>,
    /// Our AS on this session.
    pub local_as: Option<u32>,
    /// Protocol state: `up`, `start`, `down`, ...
    pub state: String,
    /// BGP state: `Established`, `Active`, `Connect`, `Idle`, ...
    pub bgp_state: String,
    /// Since when (BIRD's clock).
    pub since: String,
    /// BIRD's info column (and the last error, if any).
    pub info: String,
    /// The last error BIRD recorded for the session.
    pub last_error: Option<String>,
    /// Routes imported from the peer.
    pub imported: Option<u64>,
    /// Routes exported to the peer.
    pub exported: Option<u64>,
}

/// One route as `show route` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// The prefix, e.g. `10.10.2.1/32`.
    pub prefix: String,
    /// `unicast`, `blackhole`, `unreachable`, ...
    pub kind: String,
    /// The protocol it came from.
    pub protocol: String,
    /// Whether it is the best (exported) route for its prefix.
    pub primary: bool,
    /// Next hop, for unicast routes.
    pub via: Option<String>,
    /// Interface of the next hop.
    pub interface: Option<String>,
}

/// `netbpf bgp status`: BIRD's sessions and the routes announced and learned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BgpStatus {
    /// The control socket asked.
    pub socket: String,
    /// BIRD's greeting (its version).
    pub bird: String,
    /// Every BGP protocol.
    pub peers: Vec<PeerStatus>,
    /// Routes of [`STATIC_PROTOCOL`]: what this host announces.
    pub announced: Vec<RouteStatus>,
    /// Routes learned over BGP.
    pub learned: Vec<RouteStatus>,
}

/// Parses the answer to `show protocols all`, keeping the BGP protocols.
pub fn parse_protocols(lines: &[ReplyLine]) -> Vec<PeerStatus> {
    let mut out: Vec<PeerStatus> = Vec::new();
    let mut bgp = false;
    for l in lines {
        match l.code {
            1002 => {
                let t: Vec<&str> = l.text.split_whitespace().collect();
                bgp = t.get(1) == Some(&"BGP");
                if bgp {
                    let name = t.first().copied().unwrap_or_default().to_owned();
                    out.push(PeerStatus {
                        netbpf: name.starts_with("netbpf_peer_"),
                        name,
                        state: t.get(3).copied().unwrap_or_default().to_owned(),
                        since: t.get(4).copied().unwrap_or_default().to_owned(),
                        info: t.get(5..).map(|r| r.join(" ")).unwrap_or_default(),
                        ..Default::default()
                    });
                }
            }
            1006 if bgp => {
                let Some(p) = out.last_mut() else { continue };
                let text = l.text.trim();
                let Some((key, value)) = text.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match key.trim() {
                    "BGP state" => p.bgp_state = value.to_owned(),
                    "Neighbor address" => p.neighbor = Some(value.to_owned()),
                    "Neighbor AS" => p.neighbor_as = value.parse().ok(),
                    "Local AS" => p.local_as = value.parse().ok(),
                    "Last error" => p.last_error = Some(value.to_owned()),
                    "Routes" if p.imported.is_none() => {
                        for part in value.split(',') {
                            let mut w = part.split_whitespace();
                            let (Some(n), Some(what)) = (w.next(), w.next()) else {
                                continue;
                            };
                            match what {
                                "imported" => p.imported = n.parse().ok(),
                                "exported" => p.exported = n.parse().ok(),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for p in &mut out {
        if p.bgp_state.is_empty() {
            // Down protocols have no details: the info column says it.
            p.bgp_state = p.info.split_whitespace().next().unwrap_or("").to_owned();
        }
    }
    out
}

/// Parses the answer to a `show route ...` command (without `all`).
pub fn parse_routes(lines: &[ReplyLine]) -> Vec<RouteStatus> {
    let mut out: Vec<RouteStatus> = Vec::new();
    let mut prefix = String::new();
    for l in lines.iter().filter(|l| l.code == 1007) {
        let text = l.text.trim();
        if text.is_empty() || text.starts_with("Table ") {
            continue;
        }
        let mut words = text.split_whitespace().peekable();
        if text.starts_with("via ") || text.starts_with("dev ") {
            let Some(r) = out.last_mut() else { continue };
            while let Some(w) = words.next() {
                match w {
                    "via" => r.via = words.next().map(str::to_owned),
                    "on" | "dev" => r.interface = words.next().map(str::to_owned),
                    _ => {}
                }
            }
            continue;
        }
        if words.peek().is_some_and(|w| w.contains('/')) {
            prefix = words.next().unwrap_or_default().to_owned();
        }
        let kind = words.next().unwrap_or_default().to_owned();
        let mut protocol = String::new();
        let mut primary = false;
        let mut rest = String::new();
        for w in words {
            if let Some(p) = w.strip_prefix('[')
                && protocol.is_empty()
            {
                protocol = p.trim_end_matches(']').to_owned();
            } else if w == "*" {
                primary = true;
            }
            rest.push_str(w);
            rest.push(' ');
        }
        // Routes printed on one line: "unicast [...] * (100) via X on Y" is
        // BIRD 1's shape; BIRD 2 puts the next hop on the next line.
        let mut r = RouteStatus {
            prefix: prefix.clone(),
            kind,
            protocol,
            primary,
            via: None,
            interface: None,
        };
        let mut w = rest.split_whitespace();
        while let Some(x) = w.next() {
            match x {
                "via" => r.via = w.next().map(str::to_owned),
                "on" | "dev" => r.interface = w.next().map(str::to_owned),
                _ => {}
            }
        }
        out.push(r);
    }
    out
}

/// Asks BIRD at `socket` for its BGP sessions and routes.
pub fn status(socket: &Path) -> Result<BgpStatus, BgpError> {
    let mut c = BirdClient::connect(socket)?;
    let peers = parse_protocols(&c.command("show protocols all")?);
    let announced = match c.command(&format!("show route protocol {STATIC_PROTOCOL}")) {
        Ok(lines) => parse_routes(&lines),
        // No such protocol: netbpf's fragment is not loaded.
        Err(BgpError::Bird { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let learned = parse_routes(&c.command("show route where source = RTS_BGP")?);
    Ok(BgpStatus {
        socket: socket.display().to_string(),
        bird: c.version.clone(),
        peers,
        announced,
        learned,
    })
}

impl BgpStatus {
    /// Column headers of the peers table.
    pub const PEER_HEADER: [&'static str; 7] = [
        "PROTOCOL",
        "NEIGHBOR",
        "AS",
        "STATE",
        "SINCE",
        "ROUTES IN/OUT",
        "INFO",
    ];
    /// Column headers of the routes tables.
    pub const ROUTE_HEADER: [&'static str; 5] = ["PREFIX", "KIND", "VIA", "PROTOCOL", "BEST"];

    /// The status as text tables.
    pub fn render(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
        let peers: Vec<Vec<String>> = self
            .peers
            .iter()
            .map(|p| {
                let mut info = p.info.clone();
                if let Some(e) = &p.last_error
                    && !info.contains(e.as_str())
                {
                    info = format!("{info} (last error: {e})").trim().to_owned();
                }
                vec![
                    p.name.clone(),
                    opt(&p.neighbor),
                    p.neighbor_as.map_or_else(|| "-".into(), |n| n.to_string()),
                    if p.bgp_state.is_empty() {
                        p.state.clone()
                    } else {
                        p.bgp_state.clone()
                    },
                    p.since.clone(),
                    format!("{}/{}", num(p.imported), num(p.exported)),
                    info,
                ]
            })
            .collect();
        let routes = |rs: &[RouteStatus]| -> Vec<Vec<String>> {
            rs.iter()
                .map(|r| {
                    vec![
                        r.prefix.clone(),
                        r.kind.clone(),
                        match (&r.via, &r.interface) {
                            (Some(v), Some(i)) => format!("{v} on {i}"),
                            (Some(v), None) => v.clone(),
                            (None, Some(i)) => format!("dev {i}"),
                            (None, None) => "-".into(),
                        },
                        r.protocol.clone(),
                        if r.primary { "*".into() } else { String::new() },
                    ]
                })
                .collect()
        };
        let established = self
            .peers
            .iter()
            .filter(|p| p.bgp_state == "Established")
            .count();
        let mut s = format!(
            "BGP sessions ({} at {}): {established} of {} established\n",
            self.bird,
            self.socket,
            self.peers.len()
        );
        s.push_str(&crate::table::render(&Self::PEER_HEADER, &peers));
        let _ = writeln!(
            s,
            "\nAnnounced ({STATIC_PROTOCOL}): {} prefix(es)",
            self.announced.len()
        );
        s.push_str(&crate::table::render(
            &Self::ROUTE_HEADER,
            &routes(&self.announced),
        ));
        let _ = writeln!(s, "\nLearned over BGP: {} route(s)", self.learned.len());
        s.push_str(&crate::table::render(
            &Self::ROUTE_HEADER,
            &routes(&self.learned),
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BgpPeer;

    fn cfg(block: Option<&str>) -> BgpConfig {
        BgpConfig {
            local_as: 64512,
            router_id: Ipv4Addr::new(10, 0, 0, 11),
            socket: "/tmp/x.ctl".into(),
            config: "/etc/bird/netbpf.conf".into(),
            main_config: "/etc/bird/bird.conf".into(),
            block: block.map(|b| b.parse().unwrap()),
            import_min_len: 32,
            receive_limit: 16384,
            peers: vec![
                BgpPeer {
                    address: Ipv4Addr::new(10, 0, 0, 12),
                    asn: 64512,
                },
                BgpPeer {
                    address: Ipv4Addr::new(10, 0, 0, 1),
                    asn: 65000,
                },
            ],
        }
    }

    fn set(addrs: &[&str]) -> BTreeSet<Ipv4Addr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn prefixes_are_slash_32s_or_the_block_plus_outsiders() {
        let c = set(&["10.10.1.2", "10.10.1.1", "10.20.0.1"]);
        let p: Vec<String> = announced_prefixes(&cfg(None), &c)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(p, ["10.10.1.1/32", "10.10.1.2/32", "10.20.0.1/32"]);
        let p: Vec<String> = announced_prefixes(&cfg(Some("10.10.1.0/24")), &c)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(p, ["10.10.1.0/24", "10.20.0.1/32"]);
        // The block is announced even with no container in it.
        assert_eq!(
            announced_prefixes(&cfg(Some("10.10.1.0/24")), &BTreeSet::new()).len(),
            1
        );
    }

    #[test]
    fn fragment_has_static_routes_filter_and_one_protocol_per_peer() {
        let f = render_fragment(&cfg(None), &[], &set(&["10.10.1.1", "10.10.1.2"]));
        assert!(f.starts_with(MARKER), "{f}");
        assert!(f.contains("protocol static netbpf_containers {\n  ipv4;\n  route 10.10.1.1/32 blackhole;\n  route 10.10.1.2/32 blackhole;\n}"), "{f}");
        assert!(f.contains("if proto = \"netbpf_containers\" then accept;"));
        assert!(f.contains("protocol bgp netbpf_peer_10_0_0_12 {"), "{f}");
        assert!(f.contains("  neighbor 10.0.0.12 as 64512;"), "{f}");
        assert!(f.contains("(iBGP)") && f.contains("(eBGP)"), "{f}");
        assert!(f.contains("  neighbor 10.0.0.1 as 65000;"), "{f}");
        assert_eq!(f.matches("export filter netbpf_announce;").count(), 2);
        assert_eq!(f.matches("router id 10.0.0.11;").count(), 2);
        assert_eq!(f.matches("local as 64512;").count(), 2);
        // Braces balance (BIRD would refuse the file otherwise).
        assert_eq!(f.matches('{').count(), f.matches('}').count());
        // No containers: a valid, empty static protocol.
        let f = render_fragment(&cfg(None), &[], &BTreeSet::new());
        assert!(f.contains("protocol static netbpf_containers {\n  ipv4;\n}"));
    }

    fn cidrs(nets: &[&str]) -> Vec<Ipv4Cidr> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn imports_are_filtered_to_other_hosts_containers_and_limited() {
        let own = cidrs(&["10.0.0.0/24", "10.77.0.0/24"]);
        let f = render_fragment(&cfg(None), &own, &BTreeSet::new());
        // One filter, used by every session, with a receive limit.
        assert!(f.contains("filter netbpf_learn {\n"), "{f}");
        assert_eq!(f.matches("import filter netbpf_learn;").count(), 2, "{f}");
        assert_eq!(
            f.matches("receive limit 16384 action block;").count(),
            2,
            "{f}"
        );
        assert!(!f.contains("import all"), "{f}");
        // /32 only by default: the default route and aggregates fail here.
        assert!(f.contains("  if net.len < 32 then reject;\n"), "{f}");
        assert!(
            f.contains(
                "  if net ~ [ 0.0.0.0/8+, 127.0.0.0/8+, 169.254.0.0/16+, 224.0.0.0/3+ ] then reject;\n"
            ),
            "{f}"
        );
        // Nothing inside the host's own networks.
        assert!(
            f.contains("  if net ~ [ 10.0.0.0/24+, 10.77.0.0/24+ ] then reject;\n  accept;\n}"),
            "{f}"
        );
        assert_eq!(f.matches('{').count(), f.matches('}').count());
        // The configured policy.
        let mut c = cfg(Some("10.10.1.0/24"));
        c.import_min_len = 24;
        c.receive_limit = 100;
        let f = render_fragment(&c, &[], &BTreeSet::new());
        assert!(f.contains("  if net.len < 24 then reject;\n"), "{f}");
        assert!(f.contains("receive limit 100 action block;"), "{f}");
        // No own networks: no empty set (BIRD refuses `[ ]`).
        assert!(!f.contains("[  ]") && !f.contains("[ ]"), "{f}");
    }

    #[test]
    fn own_networks_are_the_uplink_subnets_masquerade_sources_and_block() {
        let config = crate::config::Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
             [bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\nblock = \"10.10.1.0/24\"\n\
             [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n",
        )
        .unwrap();
        let own = own_networks(
            &config,
            &cidrs(&["10.0.0.11/24", "192.0.2.7/28", "10.0.0.99/24"]),
        );
        let own: Vec<String> = own.iter().map(Ipv4Cidr::to_string).collect();
        assert_eq!(
            own,
            [
                "10.0.0.0/24",
                "10.10.1.0/24",
                "10.77.0.0/24",
                "192.0.2.0/28"
            ]
        );
    }

    #[test]
    fn oversized_answers_are_not_read_into_memory() {
        // One line past the bound.
        let long: &'static str =
            Box::leak(format!("1007-{}\n0000 \n", "x".repeat(MAX_REPLY_LINE)).into_boxed_str());
        let (path, t) = fake_bird(vec![long]);
        let e = BirdClient::connect(&path)
            .unwrap()
            .command("show route")
            .unwrap_err();
        assert!(matches!(e, BgpError::TooLong { .. }), "{e:?}");
        // The fake's write fails once netbpf hangs up.
        let _ = t.join();
        let _ = std::fs::remove_file(&path);
        // Many short lines past the total bound.
        let line = " 10.10.2.1/32 unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]\n";
        let n = MAX_REPLY_BYTES / line.len() + 2;
        let many: &'static str =
            Box::leak(format!("1007-Table master4:\n{}0000 \n", line.repeat(n)).into_boxed_str());
        let (path, t) = fake_bird(vec![many]);
        let e = status_routes(&path).unwrap_err();
        assert!(
            matches!(e, BgpError::TooLong { limit, .. } if limit == MAX_REPLY_BYTES),
            "{e:?}"
        );
        let _ = t.join();
        let _ = std::fs::remove_file(&path);
    }

    fn status_routes(path: &Path) -> Result<Vec<ReplyLine>, BgpError> {
        BirdClient::connect(path)?.command("show route where source = RTS_BGP")
    }

    #[test]
    fn main_config_includes_the_fragment_and_exports_bgp_only() {
        let m = render_main(&cfg(None));
        assert!(m.starts_with(MARKER));
        assert!(m.contains("router id 10.0.0.11;"));
        assert!(m.contains("export where source = RTS_BGP;"));
        assert!(m.contains("include \"/etc/bird/netbpf.conf\";"));
        assert_eq!(m.matches('{').count(), m.matches('}').count());
    }

    #[test]
    fn main_config_is_written_only_when_missing_or_ours() {
        let dir = std::env::temp_dir().join(format!("netbpf-bgp-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = cfg(None);
        c.main_config = dir.join("bird.conf");
        c.config = dir.join("netbpf.conf");
        assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::Written);
        let ours = std::fs::read_to_string(&c.main_config).unwrap();
        assert!(ours.contains(&format!("include \"{}\";", c.config.display())));
        // Ours again: rewritten (e.g. with a new router id).
        c.router_id = Ipv4Addr::new(10, 0, 0, 99);
        assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::Written);
        assert!(
            std::fs::read_to_string(&c.main_config)
                .unwrap()
                .contains("router id 10.0.0.99;")
        );
        // A user's file is never touched.
        let user = "router id 1.2.3.4;\n# include \"x\";\n";
        std::fs::write(&c.main_config, user).unwrap();
        assert_eq!(
            prepare_main_config(&c).unwrap(),
            MainConfig::UserMissingInclude
        );
        let user = format!("{user}include \"{}\";\n", c.config.display());
        std::fs::write(&c.main_config, &user).unwrap();
        assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::UserIncludes);
        assert_eq!(std::fs::read_to_string(&c.main_config).unwrap(), user);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reply_lines_parse() {
        assert_eq!(
            parse_reply_line("0001 BIRD 2.0.12 ready.\n", 0).unwrap(),
            (1, true, "BIRD 2.0.12 ready.".into())
        );
        assert_eq!(
            parse_reply_line("1007-Table master4:\n", 0).unwrap(),
            (1007, false, "Table master4:".into())
        );
        assert_eq!(
            parse_reply_line(" \tvia 10.0.0.12 on eth0\n", 1007).unwrap(),
            (1007, false, "\tvia 10.0.0.12 on eth0".into())
        );
        assert!(parse_reply_line("garbage", 0).is_err());
    }

    /// Lines as BIRD 2.0.12 sent them (captured from a real session).
    fn reply(raw: &str) -> Vec<ReplyLine> {
        let mut prev = 0;
        raw.lines()
            .map(|l| {
                let (code, _, text) = parse_reply_line(l, prev).unwrap();
                prev = code;
                ReplyLine { code, text }
            })
            .collect()
    }

    const PROTOCOLS: &str = "2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     02:41:15.281  
1006-
1002-netbpf_peer_10_0_0_12 BGP        ---        up     02:41:19.098  Established   
1006-  Router ID:      10.0.0.11
   BGP state:          Established
     Neighbor address: 10.0.0.12
     Neighbor AS:      64512
     Local AS:         64512
     Neighbor ID:      10.0.0.12
   Channel ipv4
     State:          UP
     Routes:         2 imported, 3 exported, 2 preferred
     Route change stats:     received   rejected   filtered    ignored   accepted
 
1002-netbpf_peer_10_0_0_13 BGP        ---        start  02:41:19.098  Active        Socket: Connection refused
1006-  Router ID:      10.0.0.11
   BGP state:          Active
     Neighbor address: 10.0.0.13
     Neighbor AS:      64512
     Local AS:         64512
     Connect delay:    2.101/5
     Last error:       Socket: Connection refused
   Channel ipv4
     State:          DOWN
 
0000 ";

    #[test]
    fn protocols_parse() {
        let p = parse_protocols(&reply(PROTOCOLS));
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(
            p[0],
            PeerStatus {
                name: "netbpf_peer_10_0_0_12".into(),
                netbpf: true,
                neighbor: Some("10.0.0.12".into()),
                neighbor_as: Some(64512),
                local_as: Some(64512),
                state: "up".into(),
                bgp_state: "Established".into(),
                since: "02:41:19.098".into(),
                info: "Established".into(),
                last_error: None,
                imported: Some(2),
                exported: Some(3),
            }
        );
        assert_eq!(p[1].bgp_state, "Active");
        assert_eq!(p[1].state, "start");
        assert_eq!(p[1].info, "Active Socket: Connection refused");
        assert_eq!(
            p[1].last_error.as_deref(),
            Some("Socket: Connection refused")
        );
        assert_eq!(p[1].imported, None);
    }

    const ROUTES: &str = "1007-Table master4:
 10.10.1.1/32         blackhole [netbpf_containers 02:41:15.281] * (200)
 10.10.2.1/32         unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]
 \tvia 10.0.0.12 on eth0
                      unicast [netbpf_peer_10_0_0_13 02:41:19.400] (100) [i]
 \tvia 10.0.0.13 on eth0
0000 ";

    #[test]
    fn routes_parse() {
        let r = parse_routes(&reply(ROUTES));
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(
            r[0],
            RouteStatus {
                prefix: "10.10.1.1/32".into(),
                kind: "blackhole".into(),
                protocol: "netbpf_containers".into(),
                primary: true,
                via: None,
                interface: None,
            }
        );
        assert_eq!(r[1].via.as_deref(), Some("10.0.0.12"));
        assert_eq!(r[1].interface.as_deref(), Some("eth0"));
        assert!(r[1].primary);
        // An alternative route for the same prefix.
        assert_eq!(r[2].prefix, "10.10.2.1/32");
        assert_eq!(r[2].protocol, "netbpf_peer_10_0_0_13");
        assert!(!r[2].primary);
        assert_eq!(r[2].via.as_deref(), Some("10.0.0.13"));
    }

    /// A fake BIRD on a socket: greeting, then canned answers in order.
    fn fake_bird(answers: Vec<&'static str>) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        use std::os::unix::net::UnixListener;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("netbpf-fake-bird-{}-{n}.ctl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut got = Vec::new();
            for a in answers {
                let mut cmd = String::new();
                r.read_line(&mut cmd).unwrap();
                got.push(cmd.trim().to_owned());
                w.write_all(a.as_bytes()).unwrap();
            }
            got
        });
        (path, t)
    }

    #[test]
    fn reconfigure_accepts_reconfigured_and_reports_errors() {
        let (path, t) = fake_bird(vec![
            "0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n",
        ]);
        reconfigure(&path).unwrap();
        assert_eq!(t.join().unwrap(), ["configure"]);
        let (path, t) = fake_bird(vec![
            "0002-Reading configuration from /etc/bird/bird.conf\n8002 /etc/bird/netbpf.conf:3:1 syntax error\n",
        ]);
        let e = reconfigure(&path).unwrap_err();
        assert!(matches!(e, BgpError::Bird { code: 8002, .. }), "{e:?}");
        assert!(e.to_string().contains("syntax error"), "{e}");
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn status_asks_for_protocols_and_routes() {
        let (path, t) = fake_bird(vec![
            "2002-Name       Proto      Table      State  Since         Info\n1002-netbpf_peer_10_0_0_12 BGP        ---        up     02:41:19.098  Established   \n1006-  BGP state:          Established\n     Neighbor address: 10.0.0.12\n0000 \n",
            "1007-Table master4:\n 10.10.1.1/32         blackhole [netbpf_containers 02:41:15.281] * (200)\n0000 \n",
            "1007-Table master4:\n 10.10.2.1/32         unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]\n \tvia 10.0.0.12 on eth0\n0000 \n",
        ]);
        let s = status(&path).unwrap();
        assert_eq!(
            t.join().unwrap(),
            [
                "show protocols all",
                "show route protocol netbpf_containers",
                "show route where source = RTS_BGP"
            ]
        );
        assert_eq!(s.bird, "BIRD 2.0.12");
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.announced[0].prefix, "10.10.1.1/32");
        assert_eq!(s.learned[0].via.as_deref(), Some("10.0.0.12"));
        let text = s.render();
        assert!(text.contains("1 of 1 established"), "{text}");
        assert!(text.contains("10.0.0.12 on eth0"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["peers"][0]["bgp_state"], "Established");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unreachable_socket_is_an_io_error_naming_it() {
        let e = status(Path::new("/nonexistent/netbpf-bird.ctl")).unwrap_err();
        assert!(matches!(e, BgpError::Io { .. }));
        assert!(
            e.to_string().contains("/nonexistent/netbpf-bird.ctl"),
            "{e}"
        );
    }
}
