//! Tests of the file as a whole: the full and example files, defaults,
//! syntax errors, unknown keys, type errors, and `Config::load`.

use std::time::Duration;

use super::support::*;
use crate::config::Config;
use crate::config::conntrack::*;
use crate::config::container::*;
use crate::config::errors::*;
use crate::config::masquerade::*;
use crate::config::publish::*;
use crate::config::types::*;
use crate::config::uplink::*;

#[test]
fn full_example_parses() {
    let c = Config::from_toml(FULL).unwrap();
    assert_eq!(
        c.uplink,
        Uplink {
            interface: "eth0".into(),
            address: Some(ip("203.0.113.1"))
        }
    );
    assert_eq!(
        c.masquerade,
        vec![Masquerade {
            source: cidr("10.77.0.0/24"),
            ports: Some(PortRange {
                start: 32768,
                end: 60999
            }),
        }]
    );
    assert_eq!(
        c.publish,
        vec![
            Publish {
                proto: Proto::Tcp,
                port: PortRange::single(8080),
                to_addr: ip("10.77.0.2"),
                to_port: 4000,
                address: None,
            },
            Publish {
                proto: Proto::Udp,
                port: PortRange {
                    start: 8000,
                    end: 8010
                },
                to_addr: ip("10.77.0.3"),
                to_port: 9000,
                address: Some(ip("127.0.0.1")),
            },
        ]
    );
    assert_eq!(
        c.container,
        vec![
            Container {
                address: ip("10.77.0.2"),
                interface: "veth-c1".into(),
                ipv6: None,
            },
            Container {
                address: ip("10.77.0.3"),
                interface: "veth-c2".into(),
                ipv6: None,
            },
        ]
    );
    assert_eq!(
        c.conntrack,
        ConntrackConfig {
            capacity: 262144,
            timeouts: Timeouts {
                udp: Duration::from_secs(300),
                tcp_established: Duration::from_secs(7440),
                tcp_transitory: Duration::from_secs(240),
                icmp: Duration::from_secs(60),
            },
        }
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_example_file_parses() {
    let c = Config::from_toml(include_str!("../../../../netbpf.example.toml"))
        .expect("netbpf.example.toml is a valid config");
    assert_eq!(c.masquerade.len(), 1);
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ok("");
    assert_eq!(c.uplink.interface, "eth0");
    assert_eq!(c.uplink.address, None);
    assert!(c.masquerade.is_empty());
    assert!(c.publish.is_empty());
    assert!(c.container.is_empty());
    assert_eq!(c.conntrack, ConntrackConfig::default());
    assert_eq!(c.conntrack.capacity, 262144);
    assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(300));
    assert_eq!(
        c.conntrack.timeouts.tcp_established,
        Duration::from_secs(7440)
    );
    assert_eq!(
        c.conntrack.timeouts.tcp_transitory,
        Duration::from_secs(240)
    );
    assert_eq!(c.conntrack.timeouts.icmp, Duration::from_secs(60));
    assert!(c.warnings.is_empty());
}

#[test]
fn empty_conntrack_table_gets_defaults() {
    let c = ok("[conntrack]\n");
    assert_eq!(c.conntrack, ConntrackConfig::default());
}

#[test]
fn partial_conntrack_keeps_other_defaults() {
    let c = ok("[conntrack]\nudp_timeout = 600\ncapacity = 1024\n");
    assert_eq!(c.conntrack.capacity, 1024);
    assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(600));
    assert_eq!(c.conntrack.timeouts.icmp, Duration::from_secs(60));
    assert_eq!(
        c.conntrack.timeouts.tcp_established,
        Duration::from_secs(7440)
    );
}

#[test]
fn publish_only_config_is_fine() {
    let c = ok("[[publish]]\nproto = \"udp\"\nport = 53\nto = \"10.0.0.5:53\"\n");
    assert!(c.masquerade.is_empty());
    assert_eq!(c.publish.len(), 1);
    assert_eq!(c.publish[0].proto.number(), 17);
}

#[test]
fn syntax_error_has_line_number() {
    let e = err_raw("[uplink]\ninterface = \"eth0\"\n[[publish]\nproto = \"tcp\"\n");
    match &e {
        ConfigError::Syntax(msg) => assert!(msg.contains("line 3"), "{msg}"),
        other => panic!("expected Syntax, got {other:?}"),
    }
}

#[test]
fn unknown_top_level_key_rejected() {
    let e = err_raw("[uplink]\ninterface = \"eth0\"\n\n[bogus]\nx = 1\n");
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Syntax(_)));
    assert!(msg.contains("bogus"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn unknown_nested_keys_rejected() {
    for (extra, word) in [
        (
            "[[masquerade]]\nsource = \"10.0.0.0/8\"\nsrc = \"x\"\n",
            "src",
        ),
        (
            "[[publish]]\nproto = \"tcp\"\nport = 1\nto = \"1.2.3.4:1\"\nhost = \"x\"\n",
            "host",
        ),
        (
            "[[container]]\naddress = \"10.0.0.2\"\ninterface = \"v\"\nmac = \"x\"\n",
            "mac",
        ),
        ("[conntrack]\ntcp_timeout = 5\n", "tcp_timeout"),
    ] {
        let msg = err(extra);
        assert!(msg.contains(word), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }
    let msg = err_raw("[uplink]\ninterface = \"eth0\"\nname = \"x\"\n").to_string();
    assert!(
        msg.contains("unknown field") && msg.contains("name"),
        "{msg}"
    );
}

#[test]
fn type_errors_include_toml_message() {
    let msg = err("[[publish]]\nproto = \"tcp\"\nport = true\nto = \"1.2.3.4:1\"\n");
    assert!(msg.contains("line 5"), "{msg}");
    assert!(msg.contains("8000-8010"), "{msg}");
    let msg = err("[conntrack]\nudp_timeout = 1.5\n");
    assert!(msg.contains("line 4") && msg.contains("duration"), "{msg}");
    let msg = err("[conntrack]\ncapacity = \"big\"\n");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn load_reads_file() {
    let path = std::env::temp_dir().join(format!("netbpf-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, FULL).unwrap();
    let c = Config::load(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(c.unwrap(), Config::from_toml(FULL).unwrap());
}
