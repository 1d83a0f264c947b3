//! The two-rack (or more) lab (`lab --hosts N --racks R`): which rack each
//! host is in, the addresses and AS numbers, and every eBGP session with
//! its options, decided here once for both ends (the hosts' `[bgp]` and
//! the top-of-rack routers' BIRD).
//!
//! ```text
//!  rack 1: segment br1 10.0.1.0/24           rack 2: segment br2 10.0.2.0/24
//!   h1 10.0.1.11 AS 65101 ─┐                  ┌─ h3 10.0.2.13 AS 65103
//!   h2 10.0.1.12 AS 65102 ─┤                  ├─ h4 10.0.2.14 AS 65104 (multihop to 10.255.0.2)
//!               tor1 10.0.1.1 AS 65001    tor2 10.0.2.1 AS 65002
//!                  └── spine br0 10.0.255.1 ⇄ 10.0.255.2 ──┘
//! ```
//!
//! Every host peers over eBGP with its rack's router only (its own AS:
//! an AS per host); the routers peer with each other over the spine.
//! Rack 1's sessions (hosts and spine) are signed with TCP MD5 when the
//! kernel can; the last host of the last rack peers with its router's
//! loopback, two hops away (`multihop`), through a static route.

use std::net::Ipv4Addr;

use crate::config::NextHop;

/// Most racks the lab builds.
pub const MAX_RACKS: usize = 4;

/// The MD5 password of rack 1's host sessions (when the kernel has TCP MD5).
pub const RACK1_PASSWORD: &str = "netbpf lab rack 1";

/// The MD5 password of the routers' sessions over the spine.
pub const SPINE_PASSWORD: &str = "netbpf lab spine";

/// The rack (1-based) of host `h` of `hosts` split into `racks`: hosts in
/// order, the first racks one host larger when it does not divide.
pub fn rack_of(h: usize, hosts: usize, racks: usize) -> usize {
    let racks = racks.clamp(1, hosts.max(1));
    let base = hosts / racks;
    let extra = hosts % racks;
    // The first `extra` racks have base + 1 hosts.
    let big = extra * (base + 1);
    if h <= big {
        (h - 1) / (base + 1) + 1
    } else {
        extra + (h - 1 - big) / base.max(1) + 1
    }
}

/// Host `h`'s uplink address in rack `r`: `10.0.r.(10+h)`.
pub fn rack_host_addr(r: usize, h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, r as u8, 10 + h as u8)
}

/// Host `h`'s AS: one per host.
pub fn host_as(h: usize) -> u32 {
    65100 + h as u32
}

/// Rack `r`'s router's AS.
pub fn tor_as(r: usize) -> u32 {
    65000 + r as u32
}

/// Rack `r`'s router on the rack's segment: `10.0.r.1`.
pub fn tor_addr(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, r as u8, 1)
}

/// Rack `r`'s router on the spine: `10.0.255.r`.
pub fn tor_spine_addr(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 255, r as u8)
}

/// Rack `r`'s router's loopback (its router id): `10.255.0.r`.
pub fn tor_loopback(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 0, r as u8)
}

/// The spine's subnet.
pub const SPINE: &str = "10.0.255.0/24";

/// The container range the routers accept from the hosts.
pub const CONTAINER_RANGE: &str = "10.10.0.0/16";

/// One host's eBGP session with its rack's router, as both ends see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorSession {
    /// The host (1-based) and its uplink address and AS.
    pub host: usize,
    /// The host's uplink address.
    pub host_addr: Ipv4Addr,
    /// The host's AS.
    pub host_as: u32,
    /// The rack (1-based).
    pub rack: usize,
    /// The router's address the host peers with: on the segment, or its
    /// loopback for a multihop session.
    pub tor_addr: Ipv4Addr,
    /// The router's AS.
    pub tor_as: u32,
    /// `Some(2)`: the router's loopback, behind its segment address.
    pub multihop: Option<u8>,
    /// The MD5 password, if the session is signed.
    pub password: Option<&'static str>,
    /// The host's `next_hop` for the session.
    pub next_hop: Option<NextHop>,
}

/// The racks lab's shape: how many hosts and racks, and whether the
/// kernel signs sessions with TCP MD5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Racks {
    /// Hosts in the lab.
    pub hosts: usize,
    /// Racks (2..=[`MAX_RACKS`]).
    pub racks: usize,
    /// Whether rack 1's and the spine's sessions have MD5 passwords.
    pub md5: bool,
}

impl Racks {
    /// Host `h`'s rack.
    pub fn rack(&self, h: usize) -> usize {
        rack_of(h, self.hosts, self.racks)
    }

    /// The hosts (1-based) of rack `r`.
    pub fn hosts_of(&self, r: usize) -> Vec<usize> {
        (1..=self.hosts).filter(|&h| self.rack(h) == r).collect()
    }

    /// Host `h`'s uplink address.
    pub fn host_addr(&self, h: usize) -> Ipv4Addr {
        rack_host_addr(self.rack(h), h)
    }

    /// Host `h`'s session with its router.
    pub fn session(&self, h: usize) -> TorSession {
        let rack = self.rack(h);
        let in_rack = self.hosts_of(rack);
        // The last host of the last rack, when not alone in it, peers with
        // the router's loopback.
        let multihop = rack == self.racks && in_rack.len() > 1 && in_rack.last() == Some(&h);
        TorSession {
            host: h,
            host_addr: self.host_addr(h),
            host_as: host_as(h),
            rack,
            tor_addr: if multihop {
                tor_loopback(rack)
            } else {
                tor_addr(rack)
            },
            tor_as: tor_as(rack),
            multihop: multihop.then_some(2),
            password: (self.md5 && rack == 1).then_some(RACK1_PASSWORD),
            next_hop: multihop.then_some(NextHop::SelfAddress),
        }
    }

    /// The password of the routers' sessions over the spine.
    pub fn spine_password(&self) -> Option<&'static str> {
        self.md5.then_some(SPINE_PASSWORD)
    }
}

/// Prints the routers and each host's session (for `lab --racks`).
pub fn print_plan(plan: &Racks, prefix: &str) {
    for r in 1..=plan.racks {
        println!(
            "  rack {r}: segment 10.0.{r}.0/24, router {prefix}-tor{r} at {} (spine {}, loopback {}), AS {}, BIRD alone",
            tor_addr(r),
            tor_spine_addr(r),
            tor_loopback(r),
            tor_as(r)
        );
    }
    if plan.spine_password().is_some() {
        println!("  the routers peer over the spine {SPINE} with TCP MD5");
    } else {
        println!(
            "  the routers peer over the spine {SPINE} (no TCP MD5: the kernel lacks CONFIG_TCP_MD5SIG)"
        );
    }
    for h in 1..=plan.hosts {
        let t = plan.session(h);
        let mut how = Vec::new();
        if let Some(n) = t.multihop {
            how.push(format!("multihop {n} to the router's loopback"));
        }
        if t.password.is_some() {
            how.push("TCP MD5".to_owned());
        }
        if let Some(nh) = t.next_hop {
            how.push(format!("next_hop = {}", nh.as_str()));
        }
        println!(
            "  host {h} → {} AS {}{}",
            t.tor_addr,
            t.tor_as,
            if how.is_empty() {
                String::new()
            } else {
                format!(" ({})", how.join(", "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_fill_racks_in_order() {
        let four: Vec<usize> = (1..=4).map(|h| rack_of(h, 4, 2)).collect();
        assert_eq!(four, [1, 1, 2, 2]);
        let five: Vec<usize> = (1..=5).map(|h| rack_of(h, 5, 2)).collect();
        assert_eq!(five, [1, 1, 1, 2, 2]);
        let seven: Vec<usize> = (1..=7).map(|h| rack_of(h, 7, 3)).collect();
        assert_eq!(seven, [1, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn rack_one_is_signed_and_the_last_host_is_multihop() {
        let r = Racks {
            hosts: 4,
            racks: 2,
            md5: true,
        };
        let s1 = r.session(1);
        assert_eq!(s1.host_addr, Ipv4Addr::new(10, 0, 1, 11));
        assert_eq!(
            (s1.tor_addr, s1.tor_as, s1.host_as),
            (tor_addr(1), 65001, 65101)
        );
        assert_eq!(s1.password, Some(RACK1_PASSWORD));
        assert_eq!(s1.multihop, None);
        let s3 = r.session(3);
        assert_eq!(
            (s3.tor_addr, s3.password, s3.multihop),
            (tor_addr(2), None, None)
        );
        let s4 = r.session(4);
        assert_eq!(s4.host_addr, Ipv4Addr::new(10, 0, 2, 14));
        assert_eq!((s4.tor_addr, s4.multihop), (tor_loopback(2), Some(2)));
        assert_eq!(s4.next_hop, Some(NextHop::SelfAddress));
        let plain = Racks { md5: false, ..r };
        assert_eq!(plain.session(1).password, None);
        assert_eq!(plain.spine_password(), None);
    }
}
