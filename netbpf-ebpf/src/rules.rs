//! The rule lookups every program shares: which published rule answers on
//! an address and port, whether a source is behind the NAT, which ICMP
//! types are errors. Only reads of the rule maps; no flow state.

use aya_ebpf::maps::lpm_trie::Key;
use netbpf_common::{Counter, PUBLISH_KEY_BITS, PublishKey, PublishRule};

use crate::{
    Verdict,
    maps::{ISOLATION, LOCAL_ADDRS, MASQ_RULES, PUBLISH},
    parse::{ICMP_DEST_UNREACH, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, Packet},
};

/// Whether an ICMP type is an error that quotes the packet it is about.
#[inline(always)]
pub(crate) fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

/// Whether a packet from `src` to `dst` goes between two isolated
/// container networks.
#[inline(always)]
pub(crate) fn isolated(src: [u8; 4], dst: [u8; 4]) -> bool {
    let net = |addr| ISOLATION.get(&Key::new(32, addr)).copied();
    // One lookup in an empty trie (no Docker) is all most packets cost.
    let Some(from) = net(src) else {
        return false;
    };
    netbpf_common::isolated(Some(from), net(dst))
}

/// Whether `addr` is behind the NAT (inside a masquerade CIDR).
#[inline(always)]
pub(crate) fn masquerade_source(addr: [u8; 4]) -> bool {
    MASQ_RULES.get(&Key::new(32, addr)).is_some()
}

/// A packet leaving the uplink that cannot be translated: dropped if it
/// comes from a masquerade CIDR (it must not leave with its private
/// source), left alone otherwise.
#[inline(always)]
pub(crate) fn untranslatable(pkt: &Packet, reason: Counter) -> Result<Verdict, Counter> {
    if masquerade_source(pkt.src) {
        Err(reason)
    } else {
        Ok(Verdict::Pass)
    }
}

/// The published rule for `addr:port`, if any: a rule bound to that
/// address, else a rule for any address if `addr` is one of the host's.
/// Never for 127.0.0.0/8.
#[inline(always)]
pub(crate) fn published(proto: u8, addr: [u8; 4], port: u16) -> Option<PublishRule> {
    // Loopback destinations never come from a wire: a packet that claims
    // one is spoofed (CVE-2020-8558), and must not reach a container.
    if addr[0] == 127 {
        return None;
    }
    let key = Key::new(PUBLISH_KEY_BITS, PublishKey::new(proto, addr, port));
    if let Some(rule) = PUBLISH.get(&key) {
        return Some(*rule);
    }
    LOCAL_ADDRS.get_ptr(&addr)?;
    let key = Key::new(PUBLISH_KEY_BITS, PublishKey::new(proto, [0; 4], port));
    PUBLISH.get(&key).copied()
}

/// The published rule a socket on the host reaches at `addr:port`: a rule
/// bound to that address (loopback included), else a rule for any address
/// if `addr` is one of the host's or loopback.
#[inline(always)]
pub(crate) fn published_for_host(proto: u8, addr: [u8; 4], port: u16) -> Option<PublishRule> {
    let key = Key::new(PUBLISH_KEY_BITS, PublishKey::new(proto, addr, port));
    if let Some(rule) = PUBLISH.get(&key) {
        return Some(*rule);
    }
    if addr[0] != 127 {
        LOCAL_ADDRS.get_ptr(&addr)?;
    }
    let key = Key::new(PUBLISH_KEY_BITS, PublishKey::new(proto, [0; 4], port));
    PUBLISH.get(&key).copied()
}

/// Packets from outside addressed straight to a masquerade CIDR are
/// dropped: containers behind NAT are reached through published ports and
/// live mappings only.
#[inline(always)]
pub(crate) fn guard_inside(pkt: &Packet) -> Result<Verdict, Counter> {
    if masquerade_source(pkt.dst) {
        Err(Counter::DropDirectToInside)
    } else {
        Ok(Verdict::Pass)
    }
}
