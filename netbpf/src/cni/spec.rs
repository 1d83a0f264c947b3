//! The CNI wire formats netbpf reads and writes, as serde types: the
//! network configuration on stdin (with the `prevResult` a chained plugin
//! gets and the `portMappings` runtime capability), the `VERSION` answer
//! and the error object, with the spec's error codes.
//!
//! Written here rather than taken from a crate: the one Rust plugin crate
//! (`cni-plugin` 0.2) stops at CNI 1.0 and cannot parse `STATUS` or `GC`
//! (CNI 1.1), and the others are runtime-side clients.

use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions of the spec this plugin speaks (its results are the
/// previous plugin's, passed through, so every version with `prevResult`).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version answered when the caller names none.
pub const LATEST_VERSION: &str = "1.1.0";

/// A CNI failure, with its code from the spec (1–99) or netbpf's (100+).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniError {
    /// 1: a `cniVersion` this plugin does not speak.
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    /// 2: a field with a value this plugin cannot honour.
    #[error("unsupported field: {0}")]
    UnsupportedField(String),
    /// 4: a `CNI_*` environment variable missing or invalid.
    #[error("invalid environment variables: {0}")]
    InvalidEnv(String),
    /// 5: reading stdin failed.
    #[error("I/O failure: {0}")]
    Io(String),
    /// 6: stdin is not JSON of the expected shape.
    #[error("failed to decode content: {0}")]
    Decode(String),
    /// 7: the network configuration is invalid.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// 11: transient (the rules are locked, no datapath yet): try again.
    #[error("try again later: {0}")]
    TryAgainLater(String),
    /// 50: `STATUS`: the plugin cannot serve `ADD` (no datapath).
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// 100: the datapath refused a rule (a port already published, ...).
    #[error("refused by the datapath: {0}")]
    Refused(String),
    /// 101: `CHECK`: a rule `ADD` made is no longer in the datapath.
    #[error("missing from the datapath: {0}")]
    Missing(String),
    /// 102: reading or writing the datapath or netbpf's state failed.
    #[error("datapath failure: {0}")]
    Datapath(String),
}

impl CniError {
    /// The error code the spec (or netbpf, 100 and up) gives it.
    pub fn code(&self) -> u32 {
        self.parts().0
    }

    /// Code, the spec's short message, and the details.
    fn parts(&self) -> (u32, &'static str, &str) {
        match self {
            CniError::IncompatibleVersion(d) => (1, "incompatible CNI version", d),
            CniError::UnsupportedField(d) => (2, "unsupported field", d),
            CniError::InvalidEnv(d) => (4, "invalid environment variables", d),
            CniError::Io(d) => (5, "I/O failure", d),
            CniError::Decode(d) => (6, "failed to decode content", d),
            CniError::InvalidConfig(d) => (7, "invalid network config", d),
            CniError::TryAgainLater(d) => (11, "try again later", d),
            CniError::NotAvailable(d) => (50, "plugin not available", d),
            CniError::Refused(d) => (100, "refused by the datapath", d),
            CniError::Missing(d) => (101, "missing from the datapath", d),
            CniError::Datapath(d) => (102, "datapath failure", d),
        }
    }

    /// The error object the spec puts on stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        let (code, msg, details) = self.parts();
        serde_json::json!({
            "cniVersion": cni_version,
            "code": code,
            "msg": msg,
            "details": details,
        })
        .to_string()
    }
}

/// The network configuration on stdin (a conflist's plugin entry, with
/// what the runtime adds). Unknown keys are ignored, as the spec asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The spec version of this configuration.
    pub cni_version: String,
    /// The network's name (GC is per network).
    pub name: String,
    /// The plugin type (`netbpf`).
    #[serde(rename = "type")]
    pub plugin: String,
    /// What the plugins before this one made (ADD, CHECK; maybe DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Capabilities the runtime fills in.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// NAT (published ports, masquerade) or routed (the container's own
    /// address routed, ARP answered, BGP announced).
    #[serde(default)]
    pub mode: Mode,
    /// Masquerade the container's address out of the uplink.
    #[serde(default)]
    pub masquerade: bool,
    /// Address masqueraded traffic leaves with (default: the one the
    /// datapath's other masquerade rules use).
    #[serde(default)]
    pub masquerade_to: Option<Ipv4Addr>,
    /// The running datapath's pin directory.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// `GC`: the attachments the runtime still has on this network.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// How the container is reached from outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Behind the host's address: published ports, masquerade.
    #[default]
    Nat,
    /// At its own address: a routed `[[container]]` (use `ptp`, whose
    /// host-side veth netbpf routes to).
    Routed,
}

/// The runtime capabilities netbpf takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`: the container's published ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// One published port, as runtimes send it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp` (default `tcp`).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host address to bind to (empty: any).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".to_owned()
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface on this network.
    pub ifname: String,
}

/// The parts of a result netbpf reads: addresses and the interfaces they
/// sit on.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PrevResult {
    /// Interfaces the plugins made.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses, each maybe naming its interface by index.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

/// An interface of a result.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// The namespace it is in, if the container's.
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// An address of a result.
#[derive(Debug, Clone, Deserialize)]
pub struct IpConfig {
    /// `address/prefix`.
    pub address: String,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl PrevResult {
    /// The container's first IPv4 address: on the interface named
    /// `ifname` in a sandbox when the result says which interface an
    /// address is on, otherwise the first IPv4 address listed.
    pub fn container_ipv4(&self, ifname: &str) -> Option<Ipv4Addr> {
        let v4 = |ip: &IpConfig| {
            let addr = ip.address.split('/').next()?;
            addr.parse::<Ipv4Addr>().ok()
        };
        let in_container = |ip: &IpConfig| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|i| {
                    i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty())
                })
        };
        self.ips
            .iter()
            .filter(|ip| in_container(ip))
            .find_map(v4)
            .or_else(|| {
                self.ips
                    .iter()
                    .filter(|ip| ip.interface.is_none())
                    .find_map(v4)
            })
    }
}

impl PrevResult {
    /// The host side of the container's veth: the first interface not in
    /// a sandbox (`ptp` lists it first).
    pub fn host_interface(&self) -> Option<&str> {
        self.interfaces
            .iter()
            .find(|i| i.sandbox.as_deref().is_none_or(str::is_empty))
            .map(|i| i.name.as_str())
    }
}

/// The answer to `VERSION`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version asked for (or the latest).
    pub cni_version: String,
    /// Every version this plugin speaks.
    pub supported_versions: Vec<&'static str>,
}

/// Decodes stdin: JSON first (code 6), then a supported `cniVersion`
/// (code 1), then the configuration's shape (code 7).
pub fn decode(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value =
        serde_json::from_slice(stdin).map_err(|e| CniError::Decode(format!("stdin: {e}")))?;
    check_version(&value)?;
    serde_json::from_value(value).map_err(|e| CniError::InvalidConfig(e.to_string()))
}

/// The `cniVersion` of a configuration, which must be one this plugin
/// speaks.
pub fn check_version(value: &Value) -> Result<String, CniError> {
    let version = match value.get("cniVersion") {
        Some(Value::String(v)) => v.clone(),
        Some(other) => {
            return Err(CniError::InvalidConfig(format!(
                "cniVersion {other} is not a string"
            )));
        }
        None => return Err(CniError::InvalidConfig("no cniVersion".to_owned())),
    };
    if SUPPORTED_VERSIONS.contains(&version.as_str()) {
        Ok(version)
    } else {
        Err(CniError::IncompatibleVersion(format!(
            "cniVersion {version}; netbpf speaks {}",
            SUPPORTED_VERSIONS.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_decoded_in_the_specs_order() {
        assert_eq!(decode(b"{").expect_err("not JSON").code(), 6);
        assert_eq!(decode(b"{}").expect_err("no version").code(), 7);
        let v = br#"{"cniVersion": "2.0.0", "name": "n", "type": "netbpf-cni"}"#;
        assert_eq!(decode(v).expect_err("unknown version").code(), 1);
        let v = br#"{"cniVersion": "1.0.0", "type": "netbpf-cni"}"#;
        assert_eq!(decode(v).expect_err("no name").code(), 7);
        let v = br#"{"cniVersion": "1.1.0", "name": "n", "type": "netbpf-cni",
                     "mode": "routed", "unknownKey": 1,
                     "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]}}"#;
        let conf = decode(v).expect("valid, unknown keys ignored");
        assert_eq!(conf.mode, Mode::Routed);
        assert_eq!(conf.runtime_config.port_mappings[0].protocol, "tcp");
        let v = br#"{"cniVersion": "1.1.0", "name": "n", "type": "netbpf-cni", "mode": "bgp"}"#;
        assert_eq!(decode(v).expect_err("unknown mode").code(), 7);
    }

    #[test]
    fn the_containers_address_and_the_host_side_are_found() {
        let prev: PrevResult = serde_json::from_str(
            r#"{"interfaces": [{"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "fd00::2/64", "interface": 1},
                        {"address": "10.88.0.5/16", "interface": 1},
                        {"address": "10.99.0.1/24", "interface": 0}]}"#,
        )
        .expect("result");
        assert_eq!(
            prev.container_ipv4("eth0"),
            Some(Ipv4Addr::new(10, 88, 0, 5))
        );
        assert_eq!(prev.container_ipv4("eth1"), None);
        assert_eq!(prev.host_interface(), Some("veth1"));
        let bare: PrevResult =
            serde_json::from_str(r#"{"ips": [{"address": "10.88.0.6/16"}]}"#).expect("result");
        assert_eq!(
            bare.container_ipv4("eth0"),
            Some(Ipv4Addr::new(10, 88, 0, 6))
        );
        assert_eq!(bare.host_interface(), None);
    }

    #[test]
    fn errors_are_the_specs_objects() {
        let e = CniError::Refused("tcp 8080 overlaps".into());
        let v: Value = serde_json::from_str(&e.to_json("1.0.0")).expect("json");
        assert_eq!(v["code"], 100);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["msg"], "refused by the datapath");
        assert_eq!(v["details"], "tcp 8080 overlaps");
    }
}
