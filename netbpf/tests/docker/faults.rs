//! The order and the faults: netbpf started before dockerd (as systemd
//! orders them), a container port that collides with the config's, and a
//! SIGHUP that frees it.

use std::time::Duration;

use netbpf::lab::{self, OUTSIDE_ADDR, UPLINK_ADDR, parse_whoami, publish_toml};
use nix::sys::signal::Signal;

use super::setup::{Setup, require};

/// The config's own published port: 8080 to an address no container has.
fn config_publish() -> String {
    publish_toml(
        "tcp",
        "8080",
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 0, 2), 4000),
        None,
    )
}

/// The `nat list` line (its words) of a published port, if any.
fn row(text: &str, port: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(port))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[test]
fn netbpf_first_then_dockerd_and_a_conflict_with_the_config_refused_until_freed() {
    if !require() {
        return;
    }
    let extra = config_publish();
    let mut s = Setup::with("late", &extra, true);
    let log = s.lab.daemon_log();
    assert!(
        log.contains("docker: ") && log.contains("config rules keep working"),
        "no warning while dockerd was missing:\n{log}"
    );
    s.run("web", &["-p", "8080:4000", "-p", "8081:4000"], &[4000]);
    s.wait_for_rule("docker:web");
    let text = s.nat_list();
    let config_row = row(&text, "*:8080").unwrap_or_default();
    assert!(config_row.ends_with("config"), "{text}");
    let docker_row = row(&text, "*:8081").unwrap_or_default();
    assert!(docker_row.ends_with("docker:web"), "{text}");
    let log = s.lab.daemon_log();
    assert!(
        log.lines().any(|l| l.contains("docker:web: tcp *:8080")
            && l.contains("refused")
            && l.contains("from config")),
        "the refusal names both sides:\n{log}"
    );
    let seen = s
        .outside_tcp(8081)
        .unwrap_or_else(|e| panic!("8081: {e}\n{}", s.logs()));
    assert_eq!(*seen.ip(), OUTSIDE_ADDR);

    // The config drops its 8080 and is reloaded: Docker's binding takes it.
    s.lab.rewrite_config("").expect("config");
    s.lab.signal_daemon(Signal::SIGHUP);
    let text = s
        .wait_until(Duration::from_secs(5), |t| {
            row(t, "*:8080").is_some_and(|r| r.ends_with("docker:web"))
        })
        .unwrap_or_else(|t| panic!("8080 not Docker's after SIGHUP:\n{t}\n{}", s.logs()));
    assert!(row(&text, "*:8081").is_some(), "{text}");
    let answer = lab::tcp_whoami(
        &s.lab.outside,
        std::net::SocketAddrV4::new(UPLINK_ADDR, 8080),
    )
    .unwrap_or_else(|e| panic!("8080 after SIGHUP: {e}\n{}", s.logs()));
    assert!(answer.starts_with("web 4000"), "{answer}");
    assert_eq!(parse_whoami(&answer).map(|a| *a.ip()), Some(OUTSIDE_ADDR));
}
