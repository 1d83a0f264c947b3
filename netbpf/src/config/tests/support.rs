//! Helpers the config tests share: the full example, a config built on a
//! minimal `[uplink]`, and asserts on the key an error names.

use std::net::Ipv4Addr;

use crate::config::Config;
use crate::config::errors::*;
use crate::config::types::*;

pub(super) const FULL: &str = r#"
[uplink]
interface = "eth0"
address = "203.0.113.1"

[[masquerade]]
source = "10.77.0.0/24"
ports = "32768-60999"

[[publish]]
proto = "tcp"
port = 8080
to = "10.77.0.2:4000"

[[publish]]
proto = "udp"
port = "8000-8010"
to = "10.77.0.3:9000"
address = "127.0.0.1"

[[container]]
address = "10.77.0.2"
interface = "veth-c1"

[[container]]
address = "10.77.0.3"
interface = "veth-c2"

[conntrack]
capacity = 262144
udp_timeout = "5m"
tcp_established_timeout = "2h4m"
tcp_transitory_timeout = "4m"
icmp_timeout = "60s"
"#;

pub(super) const UPLINK: &str = "[uplink]\ninterface = \"eth0\"\n";

pub(super) fn ok(extra: &str) -> Config {
    match Config::from_toml(&format!("{UPLINK}{extra}")) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub(super) fn err_raw(text: &str) -> ConfigError {
    match Config::from_toml(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

pub(super) fn err(extra: &str) -> String {
    err_raw(&format!("{UPLINK}{extra}")).to_string()
}

/// The key each of the errors in `e` names, in order.
pub(super) fn keys(e: &ConfigError) -> Vec<String> {
    e.each()
        .iter()
        .map(|e| e.to_string().split(':').next().unwrap().to_owned())
        .collect()
}

/// Asserts the error is Invalid with `key`, and its message contains all `parts`.
#[track_caller]
pub(super) fn assert_invalid(extra: &str, key: &str, parts: &[&str]) {
    let e = err_raw(&format!("{UPLINK}{extra}"));
    let msg = e.to_string();
    match &e {
        ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "message: {msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(msg.starts_with(&format!("{key}: ")), "{msg}");
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should contain {p:?}");
    }
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

pub(super) fn publish(proto: &str, port: &str, to: &str, address: Option<&str>) -> String {
    let mut s = format!("[[publish]]\nproto = \"{proto}\"\nport = {port}\nto = \"{to}\"\n");
    if let Some(a) = address {
        s.push_str(&format!("address = \"{a}\"\n"));
    }
    s
}
