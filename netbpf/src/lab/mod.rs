//! The lab: a container host, containers that all listen on port 4000 and
//! an outside machine, all in network namespaces this module creates and
//! removes. `netbpf lab` (and so `cargo xtask run`) shows the masquerade
//! and published ports working in it; the end-to-end tests build the same
//! topology.
//!
//! ```text
//!  {prefix}-c1 10.77.0.2/32 eth0 ── veth-c1 ┐
//!  {prefix}-c2 10.77.0.3/32 eth0 ── veth-c2 ┤ {prefix}-host  eth0 203.0.113.1/24 ── eth0 203.0.113.2/24 {prefix}-out
//!  ...                                      ┘   (netbpf on eth0)
//! ```
//! Containers are wired the way Calico wires them: a /32 on their veth and
//! a default route via 169.254.1.1 `onlink`; the host routes each /32 to
//! its veth and answers the containers' ARP (proxy_arp for now).

mod build;
mod demo;
mod docker_demo;
mod dockerd;
mod error;
mod plan;
mod probes;

pub use build::*;
pub use demo::*;
pub use docker_demo::*;
pub use dockerd::*;
pub use error::*;
pub use plan::*;
pub use probes::*;
