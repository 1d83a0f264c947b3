//! Tests of `[metrics]`.

use super::support::*;
use crate::config::metrics::*;

#[test]
fn metrics_address_defaults_to_loopback() {
    let c = ok("");
    assert_eq!(c.metrics.address, "127.0.0.1:9469".parse().unwrap());
    assert!(c.metrics.address.ip().is_loopback());
    assert_eq!(ok("[metrics]\n").metrics, MetricsConfig::default());
}

#[test]
fn metrics_address_accepts_ipv4_and_ipv6() {
    let c = ok("[metrics]\naddress = \"0.0.0.0:9100\"\n");
    assert_eq!(c.metrics.address, "0.0.0.0:9100".parse().unwrap());
    let c = ok("[metrics]\naddress = \"[::1]:9469\"\n");
    assert_eq!(c.metrics.address, "[::1]:9469".parse().unwrap());
}

#[test]
fn metrics_address_rejects_bad_values() {
    for (value, why) in [
        ("127.0.0.1", "is not an address:port"),
        ("localhost:9469", "is not an address:port"),
        ("127.0.0.1:70000", "is not an address:port"),
        ("127.0.0.1:0", "port 0"),
        ("224.0.0.1:9469", "multicast"),
        ("255.255.255.255:9469", "broadcast"),
    ] {
        let e = err(&format!("[metrics]\naddress = \"{value}\"\n"));
        assert!(e.starts_with("metrics.address: "), "{value}: {e}");
        assert!(e.contains(value) && e.contains(why), "{value}: {e}");
    }
    let e = err("[metrics]\nport = 9469\n");
    assert!(e.contains("port"), "unknown key named: {e}");
    let e = err("[metrics]\naddress = 9469\n");
    assert!(e.contains("address") || e.contains("string"), "{e}");
}
