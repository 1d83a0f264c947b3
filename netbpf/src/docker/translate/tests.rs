//! Tests of the translation of Docker's state into rules.

use std::net::Ipv4Addr;

use super::*;
use crate::{
    config::{Proto, publish_entry},
    docker::model::{Binding, Container, Network},
};

fn net(name: &str, bridge: &str, subnet: &str) -> Network {
    let m = masquerade_entry(subnet, None).expect("subnet");
    Network {
        name: name.into(),
        bridge: bridge.into(),
        subnets: vec![m.source],
        masquerade: true,
        host_binding: None,
        icc: true,
        internal: false,
    }
}

fn tcp(host_addr: Option<Ipv4Addr>, host_port: u16, container_port: u16) -> Binding {
    Binding {
        proto: Proto::Tcp,
        host_addr,
        host_port,
        container_port,
    }
}

fn container(name: &str, addr: [u8; 4], bindings: Vec<Binding>) -> Container {
    Container {
        name: name.into(),
        network: Some("bridge".into()),
        addr: Some(Ipv4Addr::from(addr)),
        bindings,
    }
}

fn publishes(d: &Desired) -> Vec<(String, Publish)> {
    d.entries
        .iter()
        .filter_map(|e| Some((e.origin.clone(), e.rule.as_publish()?.ok()?)))
        .collect()
}

#[test]
fn networks_give_masquerade_and_bridges_and_containers_give_ports() {
    let mut off = net("quiet", "br-0123456789ab", "172.19.0.0/16");
    off.masquerade = false;
    let state = DockerState {
        networks: vec![net("bridge", "docker0", "172.17.0.0/16"), off],
        containers: vec![container(
            "web",
            [172, 17, 0, 2],
            // -p 8000-8002:4000-4002 (listed port by port) and -p 127.0.0.1:9090:80
            vec![
                tcp(None, 8001, 4001),
                tcp(None, 8000, 4000),
                tcp(None, 8002, 4002),
                tcp(Some(Ipv4Addr::LOCALHOST), 9090, 80),
            ],
        )],
    };
    let d = translate(&state, &Others::default());
    assert!(d.refused.is_empty(), "{:?}", d.refused);
    let masq: Vec<_> = d
        .entries
        .iter()
        .filter_map(|e| e.rule.as_masquerade())
        .collect();
    assert_eq!(masq.len(), 1, "only the network that asks for it");
    let bridges: Vec<_> = d
        .entries
        .iter()
        .filter_map(|e| match &e.rule {
            OwnedRule::Interface { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bridges, vec!["docker0", "br-0123456789ab"]);
    let p = publishes(&d);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].0, "docker:web");
    assert_eq!(
        p[0].1,
        publish_entry("tcp", "8000-8002", "172.17.0.2:4000", None).expect("range")
    );
    assert_eq!(p[1].1.address, Some(Ipv4Addr::LOCALHOST));
}

#[test]
fn a_gap_or_a_shift_splits_a_range() {
    let state = DockerState {
        networks: vec![net("bridge", "docker0", "172.17.0.0/16")],
        containers: vec![container(
            "c",
            [172, 17, 0, 2],
            vec![
                tcp(None, 8000, 80),
                tcp(None, 8001, 81),
                tcp(None, 8003, 83),
                tcp(None, 8004, 90),
            ],
        )],
    };
    let ports: Vec<String> = publishes(&translate(&state, &Others::default()))
        .iter()
        .map(|(_, p)| p.port.to_string())
        .collect();
    assert_eq!(ports, vec!["8000-8001", "8003", "8004"]);
}

#[test]
fn conflicts_are_refused_naming_both_and_the_rest_applied() {
    let config_rule = publish_entry("tcp", "8080", "10.77.0.2:4000", None).expect("rule");
    let config_masq = masquerade_entry("172.17.0.0/24", None).expect("masq");
    let others = Others {
        masquerade: vec![("config".into(), config_masq.source)],
        publish: vec![("config".into(), config_rule)],
    };
    let state = DockerState {
        networks: vec![net("bridge", "docker0", "172.17.0.0/16")],
        containers: vec![
            container(
                "a",
                [172, 17, 0, 2],
                vec![tcp(None, 8080, 80), tcp(None, 9000, 80)],
            ),
            container(
                "b",
                [172, 17, 0, 3],
                vec![tcp(None, 9000, 80), tcp(None, 9001, 80)],
            ),
        ],
    };
    let d = translate(&state, &others);
    assert_eq!(d.refused.len(), 3, "{:#?}", d.refused);
    assert!(
        d.refused[0].contains("docker:network:bridge") && d.refused[0].contains("from config"),
        "{}",
        d.refused[0]
    );
    assert!(
        d.refused[1].starts_with("docker:a: tcp *:8080") && d.refused[1].contains("from config"),
        "{}",
        d.refused[1]
    );
    assert!(
        d.refused[2].starts_with("docker:b: tcp *:9000") && d.refused[2].contains("from docker:a"),
        "{}",
        d.refused[2]
    );
    let kept: Vec<(String, String)> = publishes(&d)
        .iter()
        .map(|(o, p)| (o.clone(), p.port.to_string()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("docker:a".into(), "9000".into()),
            ("docker:b".into(), "9001".into())
        ]
    );
}

#[test]
fn the_networks_host_binding_applies_to_ports_without_an_address() {
    let mut n = net("bridge", "docker0", "172.17.0.0/16");
    n.host_binding = Some(Ipv4Addr::new(192, 0, 2, 10));
    let state = DockerState {
        networks: vec![n],
        containers: vec![container("c", [172, 17, 0, 2], vec![tcp(None, 8080, 80)])],
    };
    let p = publishes(&translate(&state, &Others::default()));
    assert_eq!(p[0].1.address, Some(Ipv4Addr::new(192, 0, 2, 10)));
}

#[test]
fn networks_with_icc_off_give_their_bridge_and_subnet_and_nothing_refused() {
    let mut quiet = net("quiet", "br-0123456789ab", "172.19.0.0/16");
    quiet.icc = false;
    let state = DockerState {
        networks: vec![net("bridge", "docker0", "172.17.0.0/16"), quiet],
        containers: Vec::new(),
    };
    let d = translate(&state, &Others::default());
    assert!(d.refused.is_empty(), "{:?}", d.refused);
    let subnet = masquerade_entry("172.19.0.0/16", None)
        .expect("subnet")
        .source;
    assert_eq!(
        d.icc_off,
        vec![IccBridge {
            bridge: "br-0123456789ab".into(),
            subnet
        }]
    );
}
