//! Tests of the session options of `[bgp]` for top-of-rack peering:
//! `multihop`, `password` and `next_hop`, the eBGP role, and every bad
//! value named by its key (never quoting a password).

use std::net::Ipv4Addr;

use super::support::{UPLINK, assert_invalid, keys};
use crate::config::Config;
use crate::config::bgp::*;

const HEAD: &str = "[bgp]\nlocal_as = 65101\nrouter_id = \"10.0.1.11\"\n";

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
fn a_tor_session_takes_multihop_password_and_next_hop() {
    let b = bgp(
        "[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\npassword = \"rack 1 s3cret!\"\n\
         next_hop = \"self\"\n\
         [[bgp.peer]]\naddress = \"10.255.0.2\"\nas = 65002\nmultihop = 2\nnext_hop = \"keep\"\n",
    );
    assert_eq!(b.role(), BgpRole::Ebgp);
    assert_eq!(b.role().to_string(), "eBGP to routers");
    let [tor, far] = &b.peers[..] else {
        panic!("{:?}", b.peers)
    };
    assert_eq!(tor.address, Ipv4Addr::new(10, 0, 1, 1));
    assert!(tor.is_ebgp(b.local_as));
    assert_eq!(tor.options.multihop, None, "direct by default");
    assert_eq!(
        tor.options.password.as_ref().map(BgpPassword::reveal),
        Some("rack 1 s3cret!")
    );
    assert_eq!(tor.options.next_hop, Some(NextHop::SelfAddress));
    assert_eq!(far.options.multihop, Some(2));
    assert_eq!(far.options.password, None);
    assert_eq!(far.options.next_hop, Some(NextHop::Keep));
    // The password never shows in a debug print of the config.
    let debug = format!("{b:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("<hidden>"), "{debug}");
}

#[test]
fn options_default_to_a_direct_session_without_password() {
    let b = bgp("[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\n");
    assert_eq!(b.peers[0].options, SessionOptions::default());
    assert_eq!(
        b.peers[0],
        BgpPeer::new(Ipv4Addr::new(10, 0, 1, 1), 65001, PeerRole::Peer)
    );
}

#[test]
fn an_ibgp_peer_next_to_an_ebgp_one_is_still_a_mesh_and_reflector_sessions_take_options() {
    let b = bgp("[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\n\
         [[bgp.peer]]\naddress = \"10.0.1.12\"\nas = 65101\n");
    assert_eq!(b.role(), BgpRole::FullMesh);
    let b = bgp("[[bgp.reflector]]\naddress = \"10.255.0.1\"\nmultihop = 3\npassword = \"x\"\n");
    assert_eq!(b.role(), BgpRole::ReflectorClient);
    assert_eq!(b.peers[0].options.multihop, Some(3));
    let b = bgp("[[bgp.client]]\naddress = \"10.0.1.12\"\nnext_hop = \"keep\"\n");
    assert_eq!(b.peers[0].options.next_hop, Some(NextHop::Keep));
}

#[test]
fn multihop_is_a_hop_count() {
    for n in ["0", "256", "-1"] {
        assert_invalid(
            &bad(&format!(
                "[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\nmultihop = {n}\n"
            )),
            "bgp.peer[0].multihop",
            &[n, "1..=255"],
        );
    }
    assert_eq!(
        bgp("[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\nmultihop = 255\n").peers[0]
            .options
            .multihop,
        Some(MAX_BGP_MULTIHOP)
    );
}

#[test]
fn a_password_is_1_to_80_bytes_that_bird_can_quote_and_is_never_echoed() {
    let long = "k".repeat(MAX_BGP_PASSWORD_LEN + 1);
    let cases: [(&str, &str); 5] = [
        ("", "is empty"),
        (&long, "81 bytes"),
        ("se\\\"cret", "quote"),
        ("se\\\\cret", "backslash"),
        ("se\\tcret", "control character"),
    ];
    for (pw, why) in cases {
        let text = bad(&format!(
            "[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\npassword = \"{pw}\"\n"
        ));
        assert_invalid(&text, "bgp.peer[0].password", &[why]);
        let e = Config::from_toml(&format!("{UPLINK}{text}")).unwrap_err();
        assert!(!e.to_string().contains("cret"), "{e}");
    }
    let max = "k".repeat(MAX_BGP_PASSWORD_LEN);
    let b = bgp(&format!(
        "[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\npassword = \"{max}\"\n"
    ));
    assert_eq!(
        b.peers[0]
            .options
            .password
            .as_ref()
            .map(BgpPassword::reveal),
        Some(&*max)
    );
}

#[test]
fn next_hop_is_self_or_keep() {
    let e = Config::from_toml(&format!(
        "{UPLINK}{}",
        bad("[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\nnext_hop = \"auto\"\n")
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("auto") && msg.contains("self") && msg.contains("keep"),
        "{msg}"
    );
}

#[test]
fn every_bad_option_is_reported_with_its_table() {
    let e = Config::from_toml(&format!(
        "{UPLINK}{}",
        bad(
            "[[bgp.peer]]\naddress = \"10.0.1.1\"\nas = 65001\nmultihop = 0\npassword = \"\"\n\
             [[bgp.reflector]]\naddress = \"10.255.0.1\"\nas = 65101\nmultihop = 300\n"
        )
    ))
    .unwrap_err();
    assert_eq!(
        keys(&e),
        [
            "bgp.peer[0].multihop",
            "bgp.peer[0].password",
            "bgp.reflector[0].multihop"
        ],
        "{e}"
    );
}
