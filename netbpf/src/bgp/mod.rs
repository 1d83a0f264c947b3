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

mod bird;
mod error;
mod names;
mod render;
mod session;
mod status;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use log::{info, warn};

use crate::config::{BgpConfig, Ipv4Cidr};
pub use bird::*;
pub use error::*;
pub use names::*;
pub use render::*;
pub use session::{any_multihop, any_password};
pub use status::*;

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
    /// The containers (IPv4 and IPv6 addresses) last written to the
    /// fragment.
    written: Option<(BTreeSet<Ipv4Addr>, BTreeSet<Ipv6Addr>)>,
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
        let containers6 = match crate::containers::ipv6_addresses(&self.pin_dir) {
            Ok(set) => set,
            Err(e) => {
                log::debug!("bgp: reading the routed containers' IPv6 addresses: {e}");
                return;
            }
        };
        self.apply(containers, containers6);
    }

    /// Like [`BgpSync::sync`] with the container sets given.
    pub fn apply(&mut self, containers: BTreeSet<Ipv4Addr>, containers6: BTreeSet<Ipv6Addr>) {
        let now = (containers, containers6);
        if self.written.as_ref() != Some(&now) {
            let (containers, containers6) = &now;
            let text = render_fragment(&self.cfg, &self.own, containers, containers6);
            if let Err(e) = write_atomic_mode(&self.cfg.config, &text, fragment_mode(&self.cfg)) {
                warn!("bgp: {}", error_chain(&e));
                return;
            }
            info!(
                "bgp: {} announcing {} prefix(es) for {} routed container(s), {} IPv6 /128(s)",
                self.cfg.config.display(),
                announced_prefixes(&self.cfg, containers).len(),
                containers.len(),
                containers6.len()
            );
            self.written = Some(now);
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

#[cfg(test)]
mod rr_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tor_tests;
