//! Types shared by the eBPF programs and the userspace loader.
//!
//! Every map key and value lives here with a fixed `#[repr(C)]` layout,
//! explicit padding fields and a compile-time size assertion, so both sides
//! agree byte for byte. Conventions:
//!
//! * IPv4 addresses are `[u8; 4]`, IPv6 addresses `[u8; 16]`, in network
//!   order (as on the wire).
//! * Ports and ICMP identifiers are `u16` in **host** order.
//! * Times are nanoseconds of `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`).
//! * Padding fields are always zero; keys are compared as raw bytes by the
//!   kernel, so a non-zero pad would make an otherwise equal key miss.
#![cfg_attr(not(test), no_std)]
#[cfg(test)]
extern crate std;

mod counter;
mod csum;
mod flow_state;
mod frags;
mod handoff;
mod isolation;
mod names;
mod nat;
mod ndp;
mod publish;
mod reply;
mod routing;
mod routing6;
mod settings;

pub use counter::*;
pub use csum::*;
pub use flow_state::FlowState;
pub use frags::*;
pub use handoff::*;
pub use isolation::*;
pub use names::*;
pub use nat::*;
pub use ndp::*;
pub use publish::*;
pub use reply::*;
pub use routing::*;
pub use routing6::*;
pub use settings::*;

#[cfg(feature = "user")]
mod pod {
    /// Marks map types as plain old data for aya.
    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            // SAFETY: every map type is repr(C), Copy, holds only integers
            // and byte arrays, and has explicit padding fields, so every bit
            // pattern is valid and there are no uninitialised bytes.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }

    pod!(
        MasqRule,
        PublishKey,
        PublishRule,
        FragKey,
        FragValue,
        NatEvent,
        FragStashKey,
        FragStash,
        SockRevKey,
        SockRevValue,
        Endpoint,
        MappingValue,
        FlowKey,
        FlowValue,
        ReplyKey,
        ReplyValue,
        ContainerEntry,
        ContainerIf,
        Neighbour,
        RouteUplink,
        ContainerIf6,
        Settings,
        HairpinFrag,
        HopValue,
    );
}
