//! Tests of `[uplink]`.

use super::support::*;
use crate::config::Config;
use crate::config::errors::*;

#[test]
fn uplink_required() {
    let e = err_raw("[[container]]\naddress = \"10.0.0.2\"\ninterface = \"v\"\n");
    assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "uplink"));
    assert!(e.to_string().contains("required"));
    let e = err_raw("[uplink]\naddress = \"1.2.3.4\"\n");
    let msg = e.to_string();
    assert!(msg.starts_with("uplink.interface: "), "{msg}");
    assert!(msg.contains("required"), "{msg}");
}

fn uplink_err(name: &str) -> String {
    err_raw(&format!("[uplink]\ninterface = {name:?}\n")).to_string()
}

#[test]
fn uplink_interface_rules() {
    let m = uplink_err("");
    assert!(
        m.starts_with("uplink.interface: \"\"") && m.contains("empty"),
        "{m}"
    );
    let m = uplink_err("abcdefghijklmnop");
    assert!(
        m.contains("uplink.interface") && m.contains("\"abcdefghijklmnop\""),
        "{m}"
    );
    assert!(m.contains("at most 15 bytes"), "{m}");
    let m = uplink_err("eth/0");
    assert!(m.contains("uplink.interface") && m.contains("'/'"), "{m}");
    let m = uplink_err("eth 0");
    assert!(
        m.contains("uplink.interface") && m.contains("whitespace"),
        "{m}"
    );
    let m = uplink_err("eth0\t");
    assert!(m.contains("whitespace"), "{m}");
    let m = uplink_err(".");
    assert!(
        m.contains("uplink.interface") && m.contains("not a valid"),
        "{m}"
    );
    let m = uplink_err("..");
    assert!(m.contains("not a valid"), "{m}");
    let m = uplink_err("eth0:1");
    assert!(m.contains("':'"), "{m}");
    // exactly 15 bytes is fine
    let c = Config::from_toml("[uplink]\ninterface = \"abcdefghijklmno\"\n").unwrap();
    assert_eq!(c.uplink.interface.len(), 15);
    // ... but 15 chars of multi-byte UTF-8 is too long
    let m = uplink_err("ééééééééé");
    assert!(m.contains("18 bytes"), "{m}");
}

#[test]
fn uplink_address_checked() {
    let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113\"\n").to_string();
    assert!(e.starts_with("uplink.address: \"203.0.113\""), "{e}");
    assert!(e.contains("not an IPv4 address"), "{e}");
    let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"224.0.0.1\"\n").to_string();
    assert!(
        e.contains("uplink.address") && e.contains("multicast"),
        "{e}"
    );
    let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"::1\"\n").to_string();
    assert!(e.contains("uplink.address") && e.contains("\"::1\""), "{e}");
}
