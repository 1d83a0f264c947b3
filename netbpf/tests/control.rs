//! Live control (issue 7): publish and masquerade rules changed on a
//! running datapath, validated like the config file, and a SIGHUP reload
//! that applies the config's difference. Namespaces are `nbt-ctl-<pid>`.

#[macro_use]
mod common;

use common::{cli_pins, exe};

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::Output,
    time::{Duration, Instant},
};

use netbpf::lab::{
    self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
};

/// `netbpf publish add --proto PROTO --port PORT --to 10.77.0.2:4000`.
fn publish_add(lab: &Lab, proto: &str, port: &str) -> Output {
    cli_pins(
        lab,
        &[
            "publish",
            "add",
            "--proto",
            proto,
            "--port",
            port,
            "--to",
            "10.77.0.2:4000",
        ],
    )
}

#[test]
fn rules_change_on_a_running_datapath() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-ctl-{}", std::process::id()), 1).expect("lab");
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT);
    let c1 = &lab.containers[0].ns;
    let _tcp = WhoamiServer::spawn(c1, Transport::Tcp, any, "c1 saw").expect("tcp");
    let out_addr = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    let _out = WhoamiServer::spawn(&lab.outside, Transport::Udp, out_addr, "you are").expect("udp");
    lab.start_daemon(exe(), "").expect("daemon");
    let published = SocketAddrV4::new(UPLINK_ADDR, 8085);
    assert!(
        lab::tcp_whoami(&lab.outside, published).is_err(),
        "not published yet"
    );

    // publish add: same validation as the config file.
    let bad = publish_add(&lab, "sctp", "8085");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("publish[0].proto"));
    let ok = publish_add(&lab, "tcp", "8085");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let seen = lab::tcp_whoami(&lab.outside, published).expect("published live");
    assert!(seen.starts_with("c1 saw 203.0.113.2:"), "{seen}");
    let clash = publish_add(&lab, "tcp", "8080-8090");
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("overlaps"));
    let del = cli_pins(
        &lab,
        &["publish", "del", "--proto", "tcp", "--port", "8085"],
    );
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(
        lab::tcp_whoami(&lab.outside, published).is_err(),
        "unpublished live"
    );

    // masquerade del / add.
    let c1 = &lab.containers[0].ns;
    let del = cli_pins(&lab, &["masquerade", "del", "--source", "10.77.0.0/24"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(
        lab::udp_whoami(c1, 6100, out_addr).is_err(),
        "without the rule nothing is translated, so no answer comes back"
    );
    let add = cli_pins(
        &lab,
        &[
            "masquerade",
            "add",
            "--source",
            "10.77.0.0/24",
            "--to",
            "203.0.113.1",
        ],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let seen =
        parse_whoami(&lab::udp_whoami(c1, 6101, out_addr).expect("masqueraded again")).unwrap();
    assert_eq!(*seen.ip(), UPLINK_ADDR);

    // SIGHUP: the config file wins; its difference is applied.
    let config = lab.dir.join("netbpf.toml");
    let text = std::fs::read_to_string(&config).expect("read the config")
        + "[[publish]]\nproto = \"tcp\"\nport = 8086\nto = \"10.77.0.2:4000\"\n";
    std::fs::write(&config, text).expect("write the config");
    lab.signal_daemon(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.daemon_log().contains("published port rule(s) applied") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen =
        lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 8086)).expect("reloaded");
    assert!(seen.starts_with("c1 saw"), "{seen}");
    // The mapping made before the reload is untouched.
    let again =
        parse_whoami(&lab::udp_whoami(&lab.containers[0].ns, 6101, out_addr).unwrap()).unwrap();
    assert_eq!(
        again,
        seen_after(&lab),
        "the mapping is the one conntrack holds"
    );
}

/// The outside endpoint c1's UDP port 6101 maps to, from conntrack.
fn seen_after(lab: &Lab) -> SocketAddrV4 {
    let flows = lab.nat_maps().expect("pinned maps").flows().expect("flows");
    let (_, v) = flows
        .iter()
        .find(|(k, _)| k.proto == 17 && k.inside_port == 6101)
        .expect("flow for 6101");
    SocketAddrV4::new(Ipv4Addr::from(v.outside_addr), v.outside_port)
}
