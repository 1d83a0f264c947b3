//! Restarting the daemon does not drop established connections (issue 9):
//! the datapath stays attached through pinned links and keeps its flows in
//! pinned maps while no daemon runs; the next daemon adopts them. A TCP
//! connection through the NAT carries a message every few milliseconds
//! across SIGTERM, SIGKILL and a restart with a changed config, and every
//! echo must come back in order. Namespaces are `nbt-rs-<pid>`.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use common::require_root;
use netbpf::lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_netbpf"))
}

/// A line echo server on the outside machine.
fn echo_server(lab: &Lab, port: u16) {
    let listener = lab
        .outside
        .run(move || TcpListener::bind(SocketAddrV4::new(OUTSIDE_ADDR, port)))
        .expect("netns")
        .expect("bind");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut out = match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                };
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(out, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn established_connections_survive_daemon_restarts() {
    if !require_root("established_connections_survive_daemon_restarts") {
        return;
    }
    let mut lab = Lab::build(&format!("nbt-rs-{}", std::process::id()), 1).expect("lab");
    echo_server(&lab, 7070);
    let _udp = WhoamiServer::spawn(
        &lab.outside,
        Transport::Udp,
        SocketAddrV4::new(OUTSIDE_ADDR, 4000),
        "you are",
    )
    .expect("udp");
    lab.start_daemon(exe(), "").expect("daemon");
    let udp_before = parse_whoami(
        &lab::udp_whoami(
            &lab.containers[0].ns,
            5555,
            SocketAddrV4::new(OUTSIDE_ADDR, 4000),
        )
        .unwrap(),
    )
    .unwrap();

    // One long-lived connection, exercised continuously from a thread.
    let stream = lab.containers[0]
        .ns
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::V4(SocketAddrV4::new(OUTSIDE_ADDR, 7070)),
                Duration::from_secs(3),
            )
        })
        .expect("netns")
        .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, echoed) = (stop.clone(), echoed.clone());
        thread::spawn(move || -> Result<(), String> {
            let mut out = stream.try_clone().map_err(|e| e.to_string())?;
            let mut lines = BufReader::new(stream).lines();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writeln!(out, "{i}").map_err(|e| format!("write {i}: {e}"))?;
                let line = lines
                    .next()
                    .ok_or_else(|| format!("connection closed at {i}"))?
                    .map_err(|e| format!("read {i}: {e}"))?;
                if line != i.to_string() {
                    return Err(format!("sent {i}, got {line:?}"));
                }
                echoed.store(i + 1, Ordering::Relaxed);
                i += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };
    let progress = |what: &str| {
        let before = echoed.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(400));
        let after = echoed.load(Ordering::Relaxed);
        assert!(after > before, "no echo while {what} ({before} → {after})");
    };

    progress("the first daemon runs");
    let log = lab.stop_daemon().expect("SIGTERM");
    assert!(log.contains("stays attached"), "{log}");
    progress("no daemon runs (after SIGTERM)");
    lab.start_daemon(exe(), "").expect("second daemon");
    progress("the second daemon runs");
    let log = lab.kill_daemon().expect("SIGKILL");
    assert!(log.contains("adopted the pinned datapath"), "{log}");
    progress("no daemon runs (after SIGKILL)");
    // A changed config: the new rule applies, the old flows carry on.
    let publish = "[[publish]]\nproto = \"udp\"\nport = 9999\nto = \"10.77.0.2:4000\"\n";
    lab.start_daemon(exe(), publish).expect("third daemon");
    progress("the third daemon runs");
    let nat = lab.nat_maps().expect("maps");
    stop.store(true, Ordering::Relaxed);
    worker
        .join()
        .expect("worker")
        .expect("every echo came back in order");
    assert!(echoed.load(Ordering::Relaxed) > 20);

    // The UDP mapping made before the restarts is the one still in use.
    let udp_after = parse_whoami(
        &lab::udp_whoami(
            &lab.containers[0].ns,
            5555,
            SocketAddrV4::new(OUTSIDE_ADDR, 4000),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(udp_after, udp_before, "mappings survive restarts");
    assert_eq!(*udp_after.ip(), UPLINK_ADDR);
    let tcp_flows = nat
        .flows()
        .expect("flows")
        .into_iter()
        .filter(|(k, _)| k.proto == 6 && k.remote_port == 7070)
        .count();
    assert_eq!(tcp_flows, 1, "the connection kept its one flow");
    // The rule added by the restart works.
    let _c1_udp = WhoamiServer::spawn(
        &lab.containers[0].ns,
        Transport::Udp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000),
        "c1 saw",
    )
    .expect("c1 udp");
    let seen = lab::udp_whoami(&lab.outside, 0, SocketAddrV4::new(UPLINK_ADDR, 9999))
        .expect("new publish");
    assert!(seen.starts_with("c1 saw"), "{seen}");
}

#[test]
fn a_second_daemon_for_the_same_pins_is_refused() {
    if !require_root("a_second_daemon_for_the_same_pins_is_refused") {
        return;
    }
    let mut lab = Lab::build(&format!("nbt-rs2-{}", std::process::id()), 1).expect("lab");
    lab.start_daemon(exe(), "").expect("daemon");
    let out = std::process::Command::new(exe())
        .arg("--netns")
        .arg(lab.host.name())
        .arg("--pin-dir")
        .arg(&lab.pin_dir)
        .arg("daemon")
        .arg("--config")
        .arg(lab.dir.join("netbpf.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another netbpf daemon is running"), "{err}");
}

#[test]
fn a_failed_restart_puts_the_previous_rules_back() {
    if !require_root("a_failed_restart_puts_the_previous_rules_back") {
        return;
    }
    let mut lab = Lab::build(&format!("nbt-rs3-{}", std::process::id()), 1).expect("lab");
    let _c1 = WhoamiServer::spawn(
        &lab.containers[0].ns,
        Transport::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000),
        "c1 saw",
    )
    .expect("c1 tcp");
    let publish = |port: u16| {
        format!("[[publish]]\nproto = \"tcp\"\nport = {port}\nto = \"10.77.0.2:4000\"\n")
    };
    lab.start_daemon(exe(), &publish(8081)).expect("daemon");
    let old = SocketAddrV4::new(UPLINK_ADDR, 8081);
    assert!(lab::tcp_whoami(&lab.outside, old).is_ok());
    lab.stop_daemon().expect("SIGTERM");
    // A restart that changes the rules, then fails attaching the socket
    // hooks (no such cgroup): it must leave the old rules in place.
    let err = lab
        .start_daemon_with(
            exe(),
            &publish(9090),
            &["--cgroup", "/nonexistent-netbpf-cgroup"],
        )
        .expect_err("the restart fails");
    let text = format!("{err:?}");
    assert!(text.contains("cgroup"), "{text}");
    assert!(text.contains("previous rules were put back"), "{text}");
    let seen = lab::tcp_whoami(&lab.outside, old).expect("the old rule still works");
    assert!(seen.starts_with("c1 saw"), "{seen}");
    assert!(
        lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 9090)).is_err(),
        "the failed restart's rule is not in place"
    );
}
