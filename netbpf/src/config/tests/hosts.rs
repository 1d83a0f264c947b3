//! Tests of the checks against the host's own addresses: a masquerade
//! source that locks the host out, a published port aimed at the host.

use super::support::*;
use crate::config::Config;
use crate::config::errors::*;
use crate::config::hosts::*;

#[test]
fn masquerade_source_that_locks_the_host_out_is_refused() {
    // Everything: every inbound packet would count as spoofed.
    assert_invalid(
        "[[masquerade]]\nsource = \"0.0.0.0/0\"\n",
        "masquerade[0].source",
        &["\"0.0.0.0/0\"", "every address", "spoofed", "netbpf down"],
    );
    // The uplink's own address (when the file gives it).
    let uplink = "[uplink]\ninterface = \"eth0\"\naddress = \"10.1.2.3\"\n";
    let e = err_raw(&format!(
        "{uplink}[[masquerade]]\nsource = \"10.77.0.0/24\"\n[[masquerade]]\nsource = \"10.0.0.0/8\"\n"
    ));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "masquerade[1].source"),
        "{e}"
    );
    assert!(e.to_string().contains("contains 10.1.2.3"), "{e}");
    assert!(
        Config::from_toml(&format!(
            "{uplink}[[masquerade]]\nsource = \"10.77.0.0/16\"\n"
        ))
        .is_ok()
    );
    // Loopback is never behind a NAT.
    for source in ["127.0.0.0/8", "127.0.0.1/32", "96.0.0.0/3"] {
        assert_invalid(
            &format!("[[masquerade]]\nsource = \"{source}\"\n"),
            "masquerade[0].source",
            &["loopback"],
        );
    }
    // The same function, with the addresses the daemon resolved.
    let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\n");
    let e = c
        .check_host_addresses(&[ip("192.0.2.1"), ip("10.1.2.3")], &[])
        .expect_err("10/8 contains the uplink's 10.1.2.3");
    assert!(e.to_string().starts_with("masquerade[0].source: "), "{e}");
    assert!(e.to_string().contains("10.1.2.3"), "{e}");
    c.check_host_addresses(&[ip("192.0.2.1")], &[ip("10.77.0.1")])
        .expect("only the uplink's addresses count: a bridge's own address is inside its subnet");
    assert!(check_masquerade_source("k", &cidr("10.77.0.0/24"), &[ip("10.77.1.1")]).is_ok());
}

#[test]
fn publish_to_must_be_a_container() {
    for (to, why) in [
        ("127.0.0.1:80", "loopback"),
        ("127.1.2.3:80", "loopback"),
        ("0.0.0.0:80", "unspecified"),
        ("255.255.255.255:80", "broadcast"),
        ("224.0.0.1:80", "multicast"),
    ] {
        assert_invalid(
            &publish("tcp", "80", to, None),
            "publish[0].to",
            &[&format!("{to:?}"), why],
        );
    }
    // The host's own address: known to the file when uplink.address
    // is set, otherwise when the daemon resolves the uplink.
    let e = err_raw(
        "[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n\
         [[publish]]\nproto = \"tcp\"\nport = 80\nto = \"203.0.113.1:8080\"\n",
    );
    assert!(e.to_string().starts_with("publish[0].to: "), "{e}");
    assert!(e.to_string().contains("address of the host"), "{e}");
    let c = ok(&publish("tcp", "80", "10.0.0.2:80", None));
    let e = c
        .check_host_addresses(&[], &[ip("203.0.113.1"), ip("10.0.0.2")])
        .expect_err("10.0.0.2 is the host's");
    assert!(e.to_string().starts_with("publish[0].to: "), "{e}");
    c.check_host_addresses(&[], &[ip("203.0.113.1")])
        .expect("a container address");
}

#[test]
fn host_address_checks_report_every_key() {
    let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\n\
                [[publish]]\nproto = \"tcp\"\nport = 8080\nto = \"192.0.2.7:80\"\n");
    let e = c
        .check_host_addresses(&[ip("10.1.2.3")], &[ip("10.1.2.3"), ip("192.0.2.7")])
        .unwrap_err();
    let lines: Vec<String> = e.each().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with("masquerade[0].source: "), "{e}");
    assert!(lines[1].starts_with("publish[0].to: "), "{e}");
}
