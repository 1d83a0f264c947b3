//! Tests of error collection: every bad key reported at once, one error
//! alone, syntax errors alone, and how errors display.

use std::path::Path;

use super::support::*;
use crate::config::Config;
use crate::config::errors::*;

/// The message a file with only `extra` (after the uplink) gives.
fn single(extra: &str) -> String {
    let e = err_raw(&format!("{UPLINK}{extra}"));
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn every_error_in_the_file_is_reported_at_once() {
    let masquerade = "[[masquerade]]\nsource = \"10.77.0.1/24\"\n";
    let publish = "[[publish]]\nproto = \"sctp\"\nport = 8080\nto = \"10.77.0.2:4000\"\n";
    let conntrack = "[conntrack]\nudp_timeout = 0\n";
    let e = err_raw(&format!("{UPLINK}{masquerade}{publish}{conntrack}"));
    let ConfigError::Several(all) = &e else {
        panic!("expected Several, got {e:?}");
    };
    let keys: Vec<&str> = all
        .iter()
        .map(|e| match e {
            ConfigError::Invalid { key, .. } => key.as_str(),
            other => panic!("expected Invalid, got {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "masquerade[0].source",
            "publish[0].proto",
            "conntrack.udp_timeout"
        ]
    );
    assert_eq!(e.each().len(), 3);
    // Each line is exactly what the file with only that mistake says.
    let expected = [single(masquerade), single(publish), single(conntrack)];
    assert_eq!(e.to_string(), expected.join("\n"));
    assert!(
        expected[0].contains("did you mean \"10.77.0.0/24\""),
        "{}",
        expected[0]
    );
}

#[test]
fn one_error_is_invalid_itself_not_a_list_of_one() {
    let e = err_raw(&format!("{UPLINK}[conntrack]\ncapacity = 1\n"));
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    assert_eq!(e.each().len(), 1);
}

#[test]
fn every_key_of_one_entry_and_every_section_is_checked() {
    let e = err_raw(
        "[uplink]\ninterface = \"\"\naddress = \"300.1.1.1\"\n\
         [[publish]]\nproto = \"sctp\"\nport = 0\nto = \"10.77.0.2\"\naddress = \"x\"\n\
         [[container]]\naddress = \"10.9.0.1\"\ninterface = \"a/b\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n\
         [inbound]\nunsolicited_syn = \"reject\"\nnew_flows_burst = 0\n",
    );
    assert_eq!(
        keys(&e),
        [
            "uplink.interface",
            "uplink.address",
            "publish[0].proto",
            "publish[0].port",
            "publish[0].to",
            "publish[0].address",
            "container[0].interface",
            "metrics.address",
            "inbound.unsolicited_syn",
            "inbound.new_flows_burst",
        ],
        "{e}"
    );
}

#[test]
fn a_check_on_two_values_runs_only_when_both_are_valid() {
    // masquerade[1] is bad, so nothing is said about it overlapping
    // masquerade[2]; masquerade[3] overlaps masquerade[2], named by its
    // index in the file.
    let e = err("[[masquerade]]\nsource = \"10.1.0.0/16\"\n\
         [[masquerade]]\nsource = \"10.2.0.1/16\"\n\
         [[masquerade]]\nsource = \"10.2.0.0/16\"\n\
         [[masquerade]]\nsource = \"10.2.3.0/24\"\n");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with("masquerade[1].source: "), "{e}");
    assert!(
        lines[1].starts_with("masquerade[3].source: ")
            && lines[1].contains("overlaps masquerade[2].source"),
        "{e}"
    );
    // A published range that does not fit its target is not checked
    // when the target is bad; an overlap needs both entries valid.
    let e = err(&format!(
        "{}{}{}",
        publish("tcp", "\"8000-8010\"", "10.77.0.2:x", None),
        publish("tcp", "8005", "10.77.0.3:1", None),
        publish("tcp", "8005", "10.77.0.4:1", None),
    ));
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with("publish[0].to: "), "{e}");
    assert!(
        lines[1].starts_with("publish[2].port: ") && lines[1].contains("publish[1].port"),
        "{e}"
    );
}

#[test]
fn syntax_errors_stay_single() {
    // serde stops at the unknown key before any value is validated.
    let e = err_raw(&format!(
        "{UPLINK}[[masquerade]]\nsource = \"10.77.0.1/24\"\nsorce = \"x\"\n\
         [conntrack]\ncapacity = 1\n"
    ));
    assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
    assert_eq!(e.each().len(), 1);
    let msg = e.to_string();
    assert!(msg.contains("sorce") && !msg.contains("capacity"), "{msg}");
}

#[test]
fn error_display_formats() {
    let e = ConfigError::Invalid {
        key: "publish[0].to".into(),
        reason: "bad".into(),
    };
    assert_eq!(e.to_string(), "publish[0].to: bad");
    let e = Config::load(Path::new("/nonexistent/netbpf-test.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().contains("/nonexistent/netbpf-test.toml"),
        "{e}"
    );
}
