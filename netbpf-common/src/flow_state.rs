//! The state of a flow, derived from the facts the datapath records in
//! its [`crate::flow_flags`] bits. One definition for every reader: the
//! expiry pass, `conntrack list`, `explain` and the early drop.

use crate::names::proto;

/// The state of a flow, as derived from its [`crate::flow_flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// TCP: opening SYN seen from one side only.
    SynSent,
    /// TCP: opened from outside, no answer from inside yet.
    SynRecv,
    /// TCP: the handshake completed (SYN both ways, then an ACK from the
    /// opener), or a picked-up flow seen both ways.
    Established,
    /// TCP: one side sent FIN.
    FinWait,
    /// TCP: both sides sent FIN.
    Closing,
    /// TCP: reset.
    Reset,
    /// UDP mapping.
    Udp,
    /// ICMP query (echo) session.
    Icmp,
}

impl FlowState {
    /// Derives the state of a flow of protocol `proto` from its flags.
    pub fn of(proto_num: u8, flags: u64) -> FlowState {
        use crate::nat::flow_flags::*;
        match proto_num {
            proto::UDP => return FlowState::Udp,
            proto::ICMP => return FlowState::Icmp,
            _ => {}
        }
        let has = |bit| flags & bit != 0;
        // Synchronised: seen both ways, and either picked up mid-stream (no
        // SYN either way) or a complete handshake: SYN both ways and an ACK
        // from the side that opened. A SYN answered by a SYN-ACK that the
        // opener never acknowledged (a SYN flood) stays transitory.
        let opener_acked = if has(OPENED_IN) {
            has(ACK_IN)
        } else {
            has(ACK_OUT)
        };
        let synced = has(SEEN_OUT)
            && has(SEEN_IN)
            && match (has(SYN_OUT), has(SYN_IN)) {
                (false, false) => true,
                (true, true) => opener_acked,
                _ => false,
            };
        if has(RST) {
            FlowState::Reset
        } else if has(FIN_OUT) && has(FIN_IN) {
            FlowState::Closing
        } else if synced && (has(FIN_OUT) || has(FIN_IN)) {
            FlowState::FinWait
        } else if synced {
            FlowState::Established
        } else if has(OPENED_IN) {
            FlowState::SynRecv
        } else {
            FlowState::SynSent
        }
    }

    /// Whether the flow is in a transitory state (RFC 5382 §5: opening,
    /// both FINs, reset), which takes the transitory idle timeout; one FIN
    /// keeps the established timeout (RFC 6146-style).
    pub const fn is_transitory(self) -> bool {
        matches!(
            self,
            FlowState::SynSent | FlowState::SynRecv | FlowState::Closing | FlowState::Reset
        )
    }

    /// Every state, in the order `conntrack list --state` names them.
    pub const ALL: [FlowState; 8] = [
        FlowState::SynSent,
        FlowState::SynRecv,
        FlowState::Established,
        FlowState::FinWait,
        FlowState::Closing,
        FlowState::Reset,
        FlowState::Udp,
        FlowState::Icmp,
    ];

    /// The state named `name` (as [`FlowState::name`] prints it, any case).
    pub fn parse(name: &str) -> Option<FlowState> {
        FlowState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The nearest state name of Linux conntrack (`conntrack -L`), for TCP.
    pub fn conntrack_name(self) -> Option<&'static str> {
        match self {
            FlowState::SynSent => Some("SYN_SENT"),
            FlowState::SynRecv => Some("SYN_RECV"),
            FlowState::Established => Some("ESTABLISHED"),
            FlowState::FinWait => Some("FIN_WAIT"),
            // Both FINs seen: Linux would be in LAST_ACK or TIME_WAIT.
            FlowState::Closing => Some("TIME_WAIT"),
            FlowState::Reset => Some("CLOSE"),
            FlowState::Udp | FlowState::Icmp => None,
        }
    }

    /// Upper-case name as printed by `conntrack list`.
    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSent => "SYN_SENT",
            FlowState::SynRecv => "SYN_RECV",
            FlowState::Established => "ESTABLISHED",
            FlowState::FinWait => "FIN_WAIT",
            FlowState::Closing => "CLOSING",
            FlowState::Reset => "RESET",
            FlowState::Udp => "UDP",
            FlowState::Icmp => "ICMP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::flow_flags::*;

    #[test]
    fn tcp_states_follow_the_flags() {
        let s = |f| FlowState::of(proto::TCP, f);
        assert_eq!(s(SEEN_OUT | SYN_OUT), FlowState::SynSent);
        assert_eq!(s(SEEN_IN | SYN_IN | OPENED_IN), FlowState::SynRecv);
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT),
            FlowState::Established
        );
        // A handshake the opener never acknowledged stays transitory: a SYN
        // flood answered by the container (SYN in, SYN-ACK out) ...
        assert_eq!(
            s(OPENED_IN | SEEN_IN | SYN_IN | SEEN_OUT | SYN_OUT),
            FlowState::SynRecv
        );
        // ... also when the flooder adds a FIN, or the container's ACKs.
        assert_eq!(
            s(OPENED_IN | SEEN_IN | SYN_IN | SEEN_OUT | SYN_OUT | FIN_IN | ACK_OUT),
            FlowState::SynRecv
        );
        assert_eq!(
            s(OPENED_IN | SEEN_IN | SYN_IN | SEEN_OUT | SYN_OUT | ACK_IN),
            FlowState::Established
        );
        assert_eq!(s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN), FlowState::SynSent);
        // Picked up mid-stream, seen both ways: established.
        assert_eq!(s(SEEN_OUT | SEEN_IN), FlowState::Established);
        // SYN out answered by a bare ACK: not established.
        assert_eq!(s(SEEN_OUT | SYN_OUT | SEEN_IN), FlowState::SynSent);
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT | FIN_OUT),
            FlowState::FinWait
        );
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | FIN_OUT | FIN_IN),
            FlowState::Closing
        );
        assert_eq!(s(SEEN_OUT | SYN_OUT | RST), FlowState::Reset);
        assert_eq!(FlowState::of(proto::UDP, SEEN_OUT), FlowState::Udp);
        assert_eq!(FlowState::of(proto::ICMP, SEEN_OUT), FlowState::Icmp);
    }
}
