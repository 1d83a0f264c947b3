//! The config tests, split by the concern they check; `support` holds the
//! helpers they share. This file only declares them.

mod bgp;
mod bgp_rr;
mod bgp_tor;
mod conntrack;
mod container;
mod datapath;
mod docker;
mod errors;
mod file;
mod hosts;
mod masquerade;
mod metrics;
mod publish;
mod support;
mod types;
mod uplink;
