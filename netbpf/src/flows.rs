//! The flow table as userspace sees it: each flow is two entries, its
//! outbound half in `CONNTRACK` and its reply half in `CONNTRACK_REPLY`
//! (`netbpf_common::reply`), shown, re-read and removed as one.

use std::collections::HashMap;

use netbpf_common::{FlowKey, FlowValue, ReplyKey, ReplyValue, map_names, merge};

use crate::maps::{MapsError, NatMaps, absent_ok, batch_or_walk, is_absent};

impl NatMaps {
    /// Every flow, as read now, each with its reply half folded in
    /// ([`merge`]). Entries deleted while iterating are skipped.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        let (flows, replies) = self.halves()?;
        let replies: HashMap<ReplyKey, ReplyValue> = replies.into_iter().collect();
        Ok(flows
            .into_iter()
            .map(|(key, value)| match replies.get(&reply_key(&key, &value)) {
                Some(half) if half.belongs_to(&key) => (key, merge(&value, half)),
                _ => (key, value),
            })
            .collect())
    }

    /// One flow as read now, its reply half folded in.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let value = self.conntrack.get(key, 0).ok()?;
        let half = self
            .replies
            .as_ref()
            .and_then(|r| r.get(&reply_key(key, &value), 0).ok())
            .filter(|half| half.belongs_to(key));
        Some(half.map_or(value, |half| merge(&value, &half)))
    }

    /// Both halves of every flow, unmerged, as read now.
    #[allow(clippy::type_complexity)]
    pub fn halves(
        &self,
    ) -> Result<(Vec<(FlowKey, FlowValue)>, Vec<(ReplyKey, ReplyValue)>), MapsError> {
        let flows = batch_or_walk(map_names::CONNTRACK, &self.conntrack)?;
        let replies = match &self.replies {
            Some(r) => batch_or_walk(map_names::CONNTRACK_REPLY, r)?,
            None => Vec::new(),
        };
        Ok((flows, replies))
    }

    /// Removes a flow (`value` as read) and its reply half. Returns whether
    /// the flow was still there.
    pub fn remove_flow(&mut self, key: &FlowKey, value: &FlowValue) -> Result<bool, MapsError> {
        // The half first: an inbound packet in between finds the flow the
        // long way and writes the half again, which the next pass removes
        // as an orphan.
        self.remove_reply(&reply_key(key, value))?;
        match self.conntrack.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(source) => Err(MapsError::Map {
                name: map_names::CONNTRACK,
                source,
            }),
        }
    }

    /// Removes a reply half, if there is one.
    pub fn remove_reply(&mut self, key: &ReplyKey) -> Result<(), MapsError> {
        let Some(replies) = self.replies.as_mut() else {
            return Ok(());
        };
        match absent_ok(replies.remove(key)) {
            Ok(()) => Ok(()),
            Err(source) => Err(MapsError::Map {
                name: map_names::CONNTRACK_REPLY,
                source,
            }),
        }
    }

    /// Reply halves without their flow (its flow gone, or now translated
    /// to another outside endpoint), as read now: left by an evicted flow
    /// or a packet that raced a removal, and removed by the collector.
    pub fn orphan_replies(&self) -> Result<Vec<ReplyKey>, MapsError> {
        let (flows, replies) = self.halves()?;
        let flows: HashMap<FlowKey, FlowValue> = flows.into_iter().collect();
        Ok(replies
            .into_iter()
            .filter(|(key, half)| {
                let flow = key.flow_key(&half.inside);
                !flows
                    .get(&flow)
                    .is_some_and(|v| reply_key(&flow, v) == *key)
            })
            .map(|(key, _)| key)
            .collect())
    }

    /// Whether `key` is, at this moment, a reply half without its flow.
    pub fn is_orphan_reply(&self, key: &ReplyKey) -> bool {
        let Some(half) = self.replies.as_ref().and_then(|r| r.get(key, 0).ok()) else {
            return false;
        };
        let flow = key.flow_key(&half.inside);
        !matches!(self.conntrack.get(&flow, 0), Ok(v) if reply_key(&flow, &v) == *key)
    }
}

/// The key of the reply half of the flow `key` with value `value`.
fn reply_key(key: &FlowKey, value: &FlowValue) -> ReplyKey {
    ReplyKey::of_flow(key, value.outside_addr, value.outside_port)
}
