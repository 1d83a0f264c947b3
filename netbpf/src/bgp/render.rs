//! The BIRD configuration netbpf writes: the announced prefixes, the peers, the import filter and limits.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use crate::config::{BgpConfig, Config, Ipv4Cidr};

use super::{error::*, names::*, session::*};

/// First line of every file netbpf writes for BIRD. A main config that
/// starts with it is netbpf's to rewrite.
pub const MARKER: &str = "# Written by netbpf";

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
pub(crate) fn prefix_set(nets: &[Ipv4Cidr]) -> String {
    let items: Vec<String> = nets.iter().map(|n| format!("{}+", n.network())).collect();
    format!("[ {} ]", items.join(", "))
}

/// The fragment netbpf owns (`[bgp] config`) for these containers
/// (`containers6`: their IPv6 addresses, announced as /128s on each
/// session's IPv6 channel). `own` are the host's own networks
/// ([`own_networks`]): nothing inside them is learned from a peer.
pub fn render_fragment(
    cfg: &BgpConfig,
    own: &[Ipv4Cidr],
    containers: &BTreeSet<Ipv4Addr>,
    containers6: &BTreeSet<Ipv6Addr>,
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
    let _ = writeln!(s, "protocol static {STATIC_PROTOCOL6} {{");
    s.push_str("  ipv6;\n");
    for a in containers6 {
        let _ = writeln!(s, "  route {a}/128 blackhole;");
    }
    s.push_str("}\n\n");
    s.push_str("# Announce netbpf's routes and nothing else.\n");
    let _ = writeln!(s, "filter {ANNOUNCE_FILTER} {{");
    let _ = writeln!(s, "  if proto = \"{STATIC_PROTOCOL}\" then accept;");
    let _ = writeln!(s, "  if proto = \"{STATIC_PROTOCOL6}\" then accept;");
    s.push_str("  reject;\n}\n\n");
    if cfg.cluster_id.is_some() {
        let _ = write!(
            s,
            "# A route reflector: its iBGP sessions also carry the routes learned\n\
             # over BGP. BIRD applies RFC 4456's rules: a client's routes go to\n\
             # every iBGP neighbour, a non-client's only to the clients.\n\
             filter {REFLECT_FILTER} {{\n\
             \x20 if proto = \"{STATIC_PROTOCOL}\" then accept;\n\
             \x20 if proto = \"{STATIC_PROTOCOL6}\" then accept;\n\
             \x20 if source = RTS_BGP then accept;\n\
             \x20 reject;\n}}\n\n"
        );
    }
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
    s.push_str("  accept;\n}\n\n");
    let _ = write!(
        s,
        "# The same for IPv6: prefixes of /{IMPORT_MIN_LEN6} or longer, outside the\n\
         # special-purpose ranges.\n\
         filter {IMPORT_FILTER6} {{\n\
         \x20 if net.len < {IMPORT_MIN_LEN6} then reject;\n\
         \x20 if net ~ [ {special} ] then reject;\n\
         \x20 accept;\n}}\n",
        special = SPECIAL_PURPOSE6
            .iter()
            .map(|p| format!("{p}+"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if any_multihop(cfg) {
        let _ = write!(
            s,
            "\n# A multihop session's next hop is resolved through BIRD's table\n\
             # (gateway recursive): the connected subnets go there.\n\
             protocol direct {DIRECT_PROTOCOL} {{\n  ipv4;\n}}\n"
        );
    }
    for peer in &cfg.peers {
        s.push_str(&render_session(cfg, peer));
    }
    s
}

/// The complete main config netbpf writes when `[bgp] main_config` does
/// not exist: router id, interfaces, BGP routes into the kernel's main
/// table, and the include of the fragment.
pub fn render_main(cfg: &BgpConfig) -> String {
    // A multihop peer's next hop may be behind a route of the kernel's
    // (a router's loopback via the segment's gateway): BIRD learns them
    // to resolve it. They stay in BIRD (only BGP routes are exported).
    let (learn, import) = if any_multihop(cfg) {
        (
            "  learn;\n",
            "    import all;  # the kernel's routes: they resolve multihop next hops\n",
        )
    } else {
        ("", "    import none;\n")
    };
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
         {learn}\
         \x20 ipv4 {{\n\
         {import}\
         \x20   export where source = RTS_BGP;\n\
         \x20 }};\n\
         }}\n\n\
         # The same for the IPv6 routes (the containers' /128s).\n\
         protocol kernel {KERNEL_PROTOCOL6} {{\n\
         \x20 persist;\n\
         \x20 graceful restart on;\n\
         \x20 ipv6 {{\n\
         \x20   import none;\n\
         \x20   export where source = RTS_BGP;\n\
         \x20 }};\n\
         }}\n\n\
         include \"{include}\";\n",
        rid = cfg.router_id,
        include = cfg.config.display(),
    )
}

/// Mode of a file netbpf writes for BIRD.
pub const BIRD_FILE_MODE: u32 = 0o644;

/// Mode of a fragment holding an MD5 password: not world-readable (BIRD
/// reads it as root, or as its group when the group is given to it).
pub const SECRET_FILE_MODE: u32 = 0o640;

/// The mode the fragment of `cfg` is written with.
pub fn fragment_mode(cfg: &BgpConfig) -> u32 {
    if any_password(cfg) {
        SECRET_FILE_MODE
    } else {
        BIRD_FILE_MODE
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so BIRD
/// never reads half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), BgpError> {
    write_atomic_mode(path, text, BIRD_FILE_MODE)
}

/// [`write_atomic`] with the file's `mode`, set before any byte is
/// written (a secret is never readable by others, even briefly), and the
/// group of the file it replaces.
pub fn write_atomic_mode(path: &Path, text: &str, mode: u32) -> Result<(), BgpError> {
    use std::{
        io::Write as _,
        os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    };
    let tmp = path.with_extension("netbpf-tmp");
    let what = || format!("writing {}", tmp.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(what()))?;
    // The umask may have taken bits away: the mode is the one asked for.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(what()))?;
    // The group stays the one the file had (BIRD's, given by the user so
    // that a BIRD running as its own user reads a private fragment).
    // Best effort: a writer that may not give that group (not root, not
    // in it) still writes the file, with its own group as before.
    if let (Ok(old), Ok(new)) = (std::fs::metadata(path), f.metadata()) {
        use std::os::unix::fs::MetadataExt as _;
        if old.gid() != new.gid() {
            let _ = std::os::unix::fs::fchown(&f, None, Some(old.gid()));
        }
    }
    f.write_all(text.as_bytes()).map_err(io_err(what()))?;
    drop(f);
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
