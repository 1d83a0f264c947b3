//! The daemon tells systemd how it is doing (`Type=notify` in
//! contrib/netbpf.service, so that `docker.service`, ordered after it,
//! starts only once the datapath is attached): `READY=1` when its programs
//! and rules are in, `RELOADING=1` then `READY=1` around a SIGHUP,
//! `STOPPING=1` on SIGTERM, after which the datapath stays. The test plays
//! systemd: a datagram socket in `$NOTIFY_SOCKET`. Namespaces are
//! `nbt-ntf-<pid>`.

#[macro_use]
mod common;

use common::{cli, exe};

use std::{net::SocketAddrV4, os::unix::net::UnixDatagram, time::Duration};

use netbpf::lab::{self, Lab, Transport, UPLINK_ADDR, WhoamiServer};
use nix::sys::signal::Signal;

/// The next state the daemon sent.
fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_daemon_reports_ready_reload_and_stop_to_systemd() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-ntf-{}", std::process::id()), 1).expect("lab");
    let path = lab.dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&path).expect("bind the notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // SAFETY: this file's only test, set before any thread it starts; the
    // daemon inherits it as systemd would set it.
    unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
    let c1 = &lab.containers[0];
    let _server = WhoamiServer::spawn(
        &c1.ns,
        Transport::Tcp,
        SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, lab::SERVICE_PORT),
        "c1",
    )
    .expect("server");
    let publish = lab::publish_toml(
        "tcp",
        "8080",
        SocketAddrV4::new(c1.addr, lab::SERVICE_PORT),
        None,
    );
    lab.start_daemon(exe(), &publish).expect("daemon");

    assert_eq!(next_state(&systemd), "READY=1");
    // What a unit ordered after netbpf finds once READY=1 came: the
    // published port answers.
    let published = SocketAddrV4::new(UPLINK_ADDR, 8080);
    let answer = lab::tcp_whoami(&lab.outside, published).expect("published port");
    assert!(answer.starts_with("c1"), "{answer}");

    lab.signal_daemon(Signal::SIGHUP);
    assert_eq!(next_state(&systemd), "RELOADING=1");
    assert_eq!(next_state(&systemd), "READY=1");

    lab.signal_daemon(Signal::SIGTERM);
    assert_eq!(next_state(&systemd), "STOPPING=1");
    let log = lab.stop_daemon().expect("stopped");
    // Stopping leaves the datapath: the rule is still in the pinned maps
    // and the port still answers with no daemon running.
    assert!(cli(&lab, &["nat", "list"]).contains("8080"), "{log}");
    let answer = lab::tcp_whoami(&lab.outside, published).expect("published port, no daemon");
    assert!(answer.starts_with("c1"), "{answer}");
}
