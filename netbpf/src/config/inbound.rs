//! `[inbound]`: policies for packets from outside (unsolicited SYNs, new
//! flows per source) and their validation.

use serde::Deserialize;

use super::errors::*;

/// What happens to an opening TCP SYN to the host's address that no
/// mapping, published port or host socket takes (`[inbound] unsolicited_syn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsolicitedSyn {
    /// Dropped silently (RFC 5382 REQ-4), counted as `drop_unsolicited_syn`.
    #[default]
    Drop,
    /// Handed to the host's stack, where netfilter DNAT, IPVS or
    /// kube-proxy may take it (counted as `unsolicited_syns_passed`).
    Pass,
}

/// Default of `[inbound] new_flows_per_source`: new flows per second that
/// one outside address may open. With the 4 min transitory timeout, one
/// source holds at most about 24,000 half-open flows (9% of the default
/// table).
pub const DEFAULT_NEW_FLOWS_PER_SOURCE: u32 = 100;
/// Default of `[inbound] new_flows_burst`.
pub const DEFAULT_NEW_FLOWS_BURST: u32 = 1000;
/// Largest accepted `new_flows_per_source` and `new_flows_burst`.
pub const MAX_NEW_FLOWS: u32 = 1_000_000;

/// The `[inbound]` table: policies for packets from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundConfig {
    /// Unsolicited SYNs to the host's addresses.
    pub unsolicited_syn: UnsolicitedSyn,
    /// New flows per second one outside address may open (to published
    /// ports, or to mappings through endpoint-independent filtering);
    /// 0 = no limit.
    pub new_flows_per_source: u32,
    /// How many of them may come at once.
    pub new_flows_burst: u32,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            unsolicited_syn: UnsolicitedSyn::Drop,
            new_flows_per_source: DEFAULT_NEW_FLOWS_PER_SOURCE,
            new_flows_burst: DEFAULT_NEW_FLOWS_BURST,
        }
    }
}

impl InboundConfig {
    /// The datapath's view of these policies.
    pub fn settings(&self) -> netbpf_common::Settings {
        let flags = match self.unsolicited_syn {
            UnsolicitedSyn::Drop => 0,
            UnsolicitedSyn::Pass => netbpf_common::settings_flags::PASS_UNSOLICITED_SYN,
        };
        netbpf_common::Settings::with_source_budget(
            flags,
            self.new_flows_per_source,
            self.new_flows_burst,
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    unsolicited_syn: Option<String>,
    new_flows_per_source: Option<i64>,
    new_flows_burst: Option<i64>,
}

/// `[inbound]`; a bad key is recorded in `p` and its default kept.
pub(super) fn validate_inbound(raw: Option<RawInbound>, p: &mut Problems) -> InboundConfig {
    let defaults = InboundConfig::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let unsolicited_syn = match raw.unsolicited_syn.as_deref() {
        None => defaults.unsolicited_syn,
        Some("drop") => UnsolicitedSyn::Drop,
        Some("pass") => UnsolicitedSyn::Pass,
        Some(other) => {
            p.check::<()>(Err(invalid(
                "inbound.unsolicited_syn",
                format!("{other:?} is not one of \"drop\", \"pass\""),
            )));
            defaults.unsolicited_syn
        }
    };
    let mut count = |key: &str, v: Option<i64>, default: u32, min: u32| match v {
        None => default,
        Some(n) => match u32::try_from(n) {
            Ok(c) if (min..=MAX_NEW_FLOWS).contains(&c) => c,
            _ => {
                p.check::<()>(Err(invalid(
                    key,
                    format!("{n} is out of range {min}..={MAX_NEW_FLOWS}"),
                )));
                default
            }
        },
    };
    InboundConfig {
        unsolicited_syn,
        new_flows_per_source: count(
            "inbound.new_flows_per_source",
            raw.new_flows_per_source,
            defaults.new_flows_per_source,
            0,
        ),
        new_flows_burst: count(
            "inbound.new_flows_burst",
            raw.new_flows_burst,
            defaults.new_flows_burst,
            1,
        ),
    }
}
