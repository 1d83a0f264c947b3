//! Tests of route reflection in `[bgp]`: `[[bgp.reflector]]`,
//! `[[bgp.client]]` and `cluster_id`, and every bad value named by its key.

use std::net::Ipv4Addr;

use super::support::{UPLINK, assert_invalid, keys};
use crate::config::Config;
use crate::config::bgp::*;

const HEAD: &str = "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n";

fn bgp(rest: &str) -> BgpConfig {
    Config::from_toml(&format!("{UPLINK}{HEAD}{rest}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .bgp
        .expect("[bgp]")
}

fn bad(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

#[test]
fn a_reflector_client_names_its_reflectors_and_their_as_defaults_to_local_as() {
    let b = bgp("[[bgp.reflector]]\naddress = \"10.0.0.2\"\n\
         [[bgp.reflector]]\naddress = \"10.0.0.3\"\nas = 64512\n");
    assert_eq!(b.role(), BgpRole::ReflectorClient);
    assert_eq!(b.cluster_id, None);
    assert_eq!(
        b.peers,
        [
            BgpPeer::new(Ipv4Addr::new(10, 0, 0, 2), 64512, PeerRole::Reflector),
            BgpPeer::new(Ipv4Addr::new(10, 0, 0, 3), 64512, PeerRole::Reflector),
        ]
    );
}

#[test]
fn a_reflector_names_its_clients_and_its_cluster_id_defaults_to_the_router_id() {
    let b =
        bgp("[[bgp.client]]\naddress = \"10.0.0.12\"\n[[bgp.client]]\naddress = \"10.0.0.13\"\n");
    assert_eq!(b.role(), BgpRole::Reflector);
    assert_eq!(b.cluster_id, Some(Ipv4Addr::new(10, 0, 0, 11)));
    assert!(
        b.peers
            .iter()
            .all(|p| p.role == PeerRole::Client && p.asn == 64512)
    );
    // An explicit cluster id (two reflectors of one cluster share it), and
    // a plain peer next to the clients (another reflector).
    let b = bgp(
        "cluster_id = \"10.0.0.1\"\n[[bgp.peer]]\naddress = \"10.0.0.3\"\nas = 64512\n\
         [[bgp.client]]\naddress = \"10.0.0.12\"\n",
    );
    assert_eq!(b.cluster_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(b.role(), BgpRole::Reflector);
    assert_eq!(b.peers[0].role, PeerRole::Peer);
    assert_eq!(b.peers[1].role, PeerRole::Client);
}

#[test]
fn route_reflection_is_ibgp() {
    assert_invalid(
        &bad("[[bgp.reflector]]\naddress = \"10.0.0.2\"\nas = 65000\n"),
        "bgp.reflector[0].as",
        &["not bgp.local_as (64512)", "iBGP"],
    );
    assert_invalid(
        &bad("[[bgp.client]]\naddress = \"10.0.0.12\"\nas = 65000\n"),
        "bgp.client[0].as",
        &["iBGP"],
    );
    assert_invalid(
        &bad("[[bgp.client]]\naddress = \"10.0.0.12\"\nas = 23456\n"),
        "bgp.client[0].as",
        &["AS_TRANS"],
    );
}

#[test]
fn cluster_id_needs_clients_and_a_valid_id() {
    assert_invalid(
        &bad("cluster_id = \"10.0.0.1\"\n[[bgp.reflector]]\naddress = \"10.0.0.2\"\n"),
        "bgp.cluster_id",
        &["only a route reflector", "[[bgp.client]]"],
    );
    for id in ["0.0.0.0", "nope", "10.0.0"] {
        assert_invalid(
            &bad(&format!(
                "cluster_id = \"{id}\"\n[[bgp.client]]\naddress = \"10.0.0.12\"\n"
            )),
            "bgp.cluster_id",
            &["not a cluster id"],
        );
    }
}

#[test]
fn addresses_are_unique_across_peers_reflectors_and_clients() {
    assert_invalid(
        &bad("[[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 64512\n\
             [[bgp.reflector]]\naddress = \"10.0.0.2\"\n"),
        "bgp.reflector[0].address",
        &["already bgp.peer[0].address"],
    );
    assert_invalid(
        &bad("[[bgp.reflector]]\naddress = \"10.0.0.2\"\n[[bgp.client]]\naddress = \"10.0.0.2\"\n"),
        "bgp.client[0].address",
        &["already bgp.reflector[0].address"],
    );
    assert_invalid(
        &bad("[[bgp.client]]\naddress = \"10.0.0.11\"\n"),
        "bgp.client[0].address",
        &["router_id"],
    );
    assert_invalid(
        &bad("[[bgp.reflector]]\nas = 64512\n"),
        "bgp.reflector[0].address",
        &["is required"],
    );
}

#[test]
fn every_bad_session_key_is_reported() {
    let e = Config::from_toml(&format!(
        "{UPLINK}{}",
        bad(
            "cluster_id = \"x\"\n[[bgp.reflector]]\naddress = \"10.0.0.2\"\nas = 1\n\
             [[bgp.client]]\naddress = \"10.0.0.2\"\n[[bgp.client]]\nas = 2\n"
        )
    ))
    .unwrap_err();
    assert_eq!(
        keys(&e),
        [
            "bgp.cluster_id",
            "bgp.reflector[0].as",
            "bgp.client[0].address",
            "bgp.client[1].address",
            "bgp.client[1].as",
        ],
        "{e}"
    );
}

#[test]
fn graceful_restart_time_is_seconds_or_a_duration_within_12_bits() {
    let peer = "[[bgp.reflector]]\naddress = \"10.0.0.2\"\n";
    assert_eq!(
        bgp(peer).graceful_restart_time,
        DEFAULT_BGP_GRACEFUL_RESTART_TIME
    );
    let t = |v: &str| bgp(&format!("graceful_restart_time = {v}\n{peer}")).graceful_restart_time;
    assert_eq!(t("30"), 30);
    assert_eq!(t("\"2m\""), 120);
    assert_eq!(t("4095"), MAX_BGP_GRACEFUL_RESTART_TIME);
    for (v, why) in [
        ("0", "1..=4095"),
        ("-3", "1..=4095"),
        ("4096", "1..=4095"),
        ("\"2h\"", "1..=4095"),
        ("\"soon\"", "not a valid duration"),
    ] {
        assert_invalid(
            &bad(&format!("graceful_restart_time = {v}\n{peer}")),
            "bgp.graceful_restart_time",
            &[why],
        );
    }
}
