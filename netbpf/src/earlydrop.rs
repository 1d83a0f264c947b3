//! Early drop: when the conntrack table is nearly full, the flows that
//! never completed go first.
//!
//! The kernel's table is an LRU map, so a full table never refuses a new
//! flow: it gives up the least recently used one, which under a flood from
//! many addresses may be an idle established connection. Like netfilter's
//! early drop of unassured entries, each expiry pass that finds the table
//! more than [`HIGH_WATER`] full removes half-open flows — TCP handshakes
//! the opener never acknowledged, and flows opened from outside that the
//! inside never answered — oldest first, down to [`LOW_WATER`]. Without a
//! daemon, only the LRU is left.

use netbpf_common::{FlowKey, FlowValue, flow_flags, proto};

use crate::{
    conntrack::FlowState,
    maps::{MapsError, NatMaps},
};

/// Fill (eighths of the capacity) above which a pass drops half-open flows.
pub const HIGH_WATER: (u64, u64) = (7, 8);
/// Fill (eighths) a pass drops down to, if there are enough half-open flows.
pub const LOW_WATER: (u64, u64) = (6, 8);

/// Whether a flow never completed: a TCP handshake without the opener's
/// ACK, or a flow opened from outside that the inside never answered.
pub fn half_open(key: &FlowKey, value: &FlowValue) -> bool {
    match key.proto {
        proto::TCP => matches!(
            FlowState::of(key.proto, value.flags),
            FlowState::SynSent | FlowState::SynRecv
        ),
        _ => value.flags & flow_flags::OPENED_IN != 0 && value.flags & flow_flags::SEEN_OUT == 0,
    }
}

/// The flows to drop from `flows` for a table of `capacity`, with the time
/// of their last packet as read: none below the high-water mark, else the
/// oldest half-open ones until the low-water mark.
pub fn victims(flows: &[(FlowKey, FlowValue)], capacity: u32) -> Vec<(FlowKey, u64)> {
    let cap = u64::from(capacity);
    let total = flows.len() as u64;
    if total * HIGH_WATER.1 <= cap * HIGH_WATER.0 {
        return Vec::new();
    }
    let target = cap * LOW_WATER.0 / LOW_WATER.1;
    let excess = usize::try_from(total.saturating_sub(target)).unwrap_or(usize::MAX);
    let mut candidates: Vec<&(FlowKey, FlowValue)> =
        flows.iter().filter(|(k, v)| half_open(k, v)).collect();
    candidates.sort_by_key(|(_, v)| v.last_seen_ns);
    candidates
        .iter()
        .take(excess)
        .map(|(k, v)| (*k, v.last_seen_ns))
        .collect()
}

/// One early-drop pass over the pinned maps; returns how many flows it
/// dropped. A flow that saw a packet since the read is kept.
pub fn relieve(maps: &mut NatMaps, capacity: u32) -> Result<usize, MapsError> {
    let flows = maps.flows()?;
    let mut dropped = 0;
    for (key, seen) in victims(&flows, capacity) {
        let Some(now) = maps.flow(&key) else {
            continue;
        };
        if now.last_seen_ns == seen && maps.remove_flow(&key, &now)? {
            dropped += 1;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use netbpf_common::flow_flags::*;

    use super::*;

    fn flow(port: u16, flags: u64, last_seen_ns: u64) -> (FlowKey, FlowValue) {
        (
            FlowKey::new(proto::TCP, [10, 77, 0, 2], 4000, [198, 51, 100, 7], port),
            FlowValue {
                flags,
                last_seen_ns,
                ..Default::default()
            },
        )
    }

    const EST: u64 = SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT;
    const HALF: u64 = OPENED_IN | SEEN_IN | SYN_IN | SEEN_OUT | SYN_OUT;

    #[test]
    fn nothing_is_dropped_below_the_high_water_mark() {
        let flows: Vec<_> = (0..7).map(|i| flow(i, HALF, 1)).collect();
        assert!(victims(&flows, 8).is_empty(), "7 of 8");
    }

    #[test]
    fn the_oldest_half_open_flows_go_first_and_established_ones_stay() {
        // 16 slots, 15 used: 6 established, 9 half-open of various ages.
        let mut flows: Vec<_> = (0..6).map(|i| flow(i, EST, 0)).collect();
        flows.extend((0..9).map(|i| flow(100 + i, HALF, 10 + u64::from(i))));
        let v = victims(&flows, 16);
        // Down to 12 (6/8 of 16): three go, the three oldest half-open.
        let ports: Vec<u16> = v.iter().map(|(k, _)| k.remote_port).collect();
        assert_eq!(ports, vec![100, 101, 102]);
    }

    #[test]
    fn unanswered_udp_from_outside_is_half_open_answered_is_not() {
        let (mut k, v) = flow(1, OPENED_IN | SEEN_IN, 0);
        k.proto = proto::UDP;
        assert!(half_open(&k, &v));
        let answered = FlowValue {
            flags: OPENED_IN | SEEN_IN | SEEN_OUT,
            ..v
        };
        assert!(!half_open(&k, &answered));
        let (k, v) = flow(1, EST, 0);
        assert!(!half_open(&k, &v));
    }
}
