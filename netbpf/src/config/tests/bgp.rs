//! Tests of `[bgp]`: defaults, every key, and every bad value named by its key.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::support::{UPLINK, assert_invalid, keys};
use crate::config::Config;
use crate::config::bgp::*;
use crate::config::errors::*;

const PEER: &str = "\n[[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n";

fn parse(bgp: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{UPLINK}{bgp}"))
}

#[test]
fn every_bad_bgp_key_is_reported() {
    let e = parse(
        "[bgp]\nlocal_as = 23456\nrouter_id = \"10.0.0.11\"\nsocket = \"bird.ctl\"\n\
         receive_limit = 0\n\
         [[bgp.peer]]\naddress = \"10.0.0.11\"\nas = 1\n\
         [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 0\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&e),
        [
            "bgp.local_as",
            "bgp.socket",
            "bgp.receive_limit",
            "bgp.peer[0].address",
            "bgp.peer[1].as"
        ],
        "{e}"
    );
}

#[test]
fn absent_means_no_bgp() {
    assert_eq!(parse("").unwrap().bgp, None);
}

#[test]
fn minimal_table_gets_defaults() {
    let c = parse(&format!(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n{PEER}"
    ))
    .unwrap();
    let b = c.bgp.unwrap();
    assert_eq!(b.local_as, 64512);
    assert_eq!(b.router_id, Ipv4Addr::new(10, 0, 0, 11));
    assert_eq!(b.socket, PathBuf::from(DEFAULT_BIRD_SOCKET));
    assert_eq!(b.config, PathBuf::from(DEFAULT_BIRD_INCLUDE));
    assert_eq!(b.main_config, PathBuf::from(DEFAULT_BIRD_MAIN_CONFIG));
    assert_eq!(b.block, None);
    assert_eq!(b.import_min_len, 32, "containers only");
    assert_eq!(b.receive_limit, DEFAULT_BGP_RECEIVE_LIMIT);
    assert_eq!(
        b.peers,
        vec![BgpPeer::new(
            Ipv4Addr::new(10, 0, 0, 12),
            64512,
            PeerRole::Peer
        )]
    );
    assert_eq!(b.cluster_id, None);
    assert_eq!(b.role(), BgpRole::FullMesh);
}

#[test]
fn full_table_parses() {
    let b = parse(
        "[bgp]\nlocal_as = 4200000001\nrouter_id = \"10.0.0.11\"\nsocket = \"/tmp/b.ctl\"\n\
         config = \"/tmp/netbpf.conf\"\nmain_config = \"/tmp/bird.conf\"\nblock = \"10.10.1.0/24\"\n\
         [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n[[bgp.peer]]\naddress = \"10.0.0.1\"\nas = 65000\n",
    )
    .unwrap()
    .bgp
    .unwrap();
    assert_eq!(b.local_as, 4_200_000_001);
    assert_eq!(b.socket, PathBuf::from("/tmp/b.ctl"));
    assert_eq!(b.config, PathBuf::from("/tmp/netbpf.conf"));
    assert_eq!(b.main_config, PathBuf::from("/tmp/bird.conf"));
    assert_eq!(b.block, Some("10.10.1.0/24".parse().unwrap()));
    assert_eq!(b.peers.len(), 2);
    assert_eq!(b.peers[1].asn, 65000);
    assert_eq!(
        b.import_min_len, 24,
        "the other hosts' blocks of the same size"
    );
}

#[test]
fn import_policy_keys() {
    let bgp =
        |extra: &str| format!("[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n{extra}{PEER}");
    let b = parse(&bgp("import_min_len = 26\nreceive_limit = 500\n"))
        .unwrap()
        .bgp
        .unwrap();
    assert_eq!((b.import_min_len, b.receive_limit), (26, 500));
    for n in ["0", "7", "33", "-1"] {
        assert_invalid(
            &bgp(&format!("import_min_len = {n}\n")),
            "bgp.import_min_len",
            &["8..=32"],
        );
    }
    for n in ["0", "-5", "4000001"] {
        assert_invalid(
            &bgp(&format!("receive_limit = {n}\n")),
            "bgp.receive_limit",
            &["1..=4000000"],
        );
    }
}

#[test]
fn required_keys_are_named() {
    assert_invalid(
        &format!("[bgp]\nrouter_id = \"10.0.0.11\"\n{PEER}"),
        "bgp.local_as",
        &["is required"],
    );
    assert_invalid(
        &format!("[bgp]\nlocal_as = 64512\n{PEER}"),
        "bgp.router_id",
        &["is required"],
    );
    assert_invalid(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n",
        "bgp.peer",
        &["at least one"],
    );
    assert_invalid(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\nas = 1\n",
        "bgp.peer[0].address",
        &["is required"],
    );
    assert_invalid(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\naddress = \"10.0.0.2\"\n",
        "bgp.peer[0].as",
        &["is required"],
    );
}

#[test]
fn bad_values_are_rejected_with_their_key() {
    let rid = "router_id = \"10.0.0.11\"\n";
    for (n, why) in [
        ("0", "not an AS number"),
        ("-1", "not an AS number"),
        ("4294967295", "not an AS number"),
        ("4294967296", "not an AS number"),
        ("23456", "AS_TRANS"),
    ] {
        assert_invalid(
            &format!("[bgp]\nlocal_as = {n}\n{rid}{PEER}"),
            "bgp.local_as",
            &[why],
        );
    }
    let head = |extra: &str| format!("[bgp]\nlocal_as = 64512\n{extra}");
    assert_invalid(
        &head(&format!("router_id = \"10.0.0\"\n{PEER}")),
        "bgp.router_id",
        &["not an IPv4 address"],
    );
    assert_invalid(
        &head(&format!("router_id = \"0.0.0.0\"\n{PEER}")),
        "bgp.router_id",
        &["unspecified"],
    );
    assert_invalid(
        &head(&format!("{rid}socket = \"bird.ctl\"\n{PEER}")),
        "bgp.socket",
        &["absolute path"],
    );
    assert_invalid(
        &head(&format!("{rid}config = \"/etc/bird/a\\\"b\"\n{PEER}")),
        "bgp.config",
        &["quote"],
    );
    assert_invalid(
        &head(&format!("{rid}config = \"/etc/bird/bird.conf\"\n{PEER}")),
        "bgp.config",
        &["main_config"],
    );
    assert_invalid(
        &head(&format!("{rid}block = \"10.10.1.1/24\"\n{PEER}")),
        "bgp.block",
        &["did you mean \"10.10.1.0/24\""],
    );
    assert_invalid(
        &head(&format!("{rid}block = \"0.0.0.0/4\"\n{PEER}")),
        "bgp.block",
        &["wider than /8"],
    );
    assert_invalid(
        &head(&format!("{rid}block = \"nope\"\n{PEER}")),
        "bgp.block",
        &["not an IPv4 CIDR"],
    );
    assert_invalid(
        &head(&format!("{rid}{PEER}{PEER}")),
        "bgp.peer[1].address",
        &["already bgp.peer[0]"],
    );
    assert_invalid(
        &head(&format!(
            "{rid}[[bgp.peer]]\naddress = \"10.0.0.11\"\nas = 1\n"
        )),
        "bgp.peer[0].address",
        &["peer with itself"],
    );
    assert_invalid(
        &head(&format!(
            "{rid}[[bgp.peer]]\naddress = \"224.0.0.5\"\nas = 1\n"
        )),
        "bgp.peer[0].address",
        &["multicast"],
    );
    assert_invalid(
        &head(&format!(
            "{rid}[[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 0\n"
        )),
        "bgp.peer[0].as",
        &["not an AS number"],
    );
}

#[test]
fn unknown_keys_are_syntax_errors() {
    let e = parse(&format!(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\nasn = 1\n{PEER}"
    ))
    .unwrap_err();
    assert!(matches!(e, ConfigError::Syntax(_)), "{e}");
    assert!(e.to_string().contains("asn"), "{e}");
    let e = parse(
        "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 1\nbfd = true\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("bfd"), "{e}");
}
