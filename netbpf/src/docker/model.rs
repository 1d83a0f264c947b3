//! What netbpf needs to know of a dockerd: its bridge networks and its
//! running containers' published ports, in plain types (no API client in
//! here), so that the translation to rules is pure and testable.

use std::net::Ipv4Addr;

use crate::config::{Ipv4Cidr, Proto};

/// A Docker network with the bridge driver; networks are isolated from
/// each other as Docker's DOCKER-ISOLATION chains isolate them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Docker's name (`bridge` for the default one).
    pub name: String,
    /// The Linux bridge (`docker0`, `br-<12 hex digits>`).
    pub bridge: String,
    /// Its IPv4 subnets.
    pub subnets: Vec<Ipv4Cidr>,
    /// `com.docker.network.bridge.enable_ip_masquerade` (default on).
    pub masquerade: bool,
    /// `com.docker.network.bridge.host_binding_ipv4`: the host address a
    /// port published without one binds to (`None`: any).
    pub host_binding: Option<Ipv4Addr>,
    /// `com.docker.network.bridge.enable_icc` (default on).
    pub icc: bool,
    /// `--internal`: no way out, so no masquerade.
    pub internal: bool,
}

/// One published container port (`-p [HOST_IP:]HOST_PORT:PORT[/PROTO]`;
/// Docker lists a range port by port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// TCP or UDP.
    pub proto: Proto,
    /// The host address it binds, `None` for any (`0.0.0.0`).
    pub host_addr: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The container port.
    pub container_port: u16,
}

/// A running container with published ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its name without Docker's leading `/`.
    pub name: String,
    /// The network its ports are published from (the one it was started
    /// on), if it is a bridge network.
    pub network: Option<String>,
    /// Its address on that network.
    pub addr: Option<Ipv4Addr>,
    /// Its published ports, IPv4 only.
    pub bindings: Vec<Binding>,
}

/// Everything read from dockerd in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerState {
    /// Bridge networks, by name.
    pub networks: Vec<Network>,
    /// Running containers, by name.
    pub containers: Vec<Container>,
}

impl Network {
    /// The network's number in the isolation map: stable across reads and
    /// restarts (a hash of its name, which dockerd keeps unique), never 0.
    pub fn isolation_id(&self) -> u32 {
        let hash = self.name.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        hash.max(1)
    }
}

/// Docker's boolean option text: anything but `false`/`0` is on, as the
/// bridge driver parses it (`strconv.ParseBool`, default true).
pub fn option_on(value: Option<&str>, default: bool) -> bool {
    match value.map(str::trim) {
        None | Some("") => default,
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "f"),
    }
}
