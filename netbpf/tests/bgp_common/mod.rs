//! Helpers the BGP tests share (`bgp.rs`, `bgp_rr.rs`, `bgp_gr.rs`): the
//! BIRD check, running netbpf on a host, waiting for a route, and a TCP
//! echo across hosts.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use netbpf::{multihost::Host, netns::Netns};

/// Whether BIRD is installed; says so when a test skips, and fails under
/// CI instead.
pub fn bird_installed() -> bool {
    let found = std::process::Command::new("bird")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("bird is not installed (cargo xtask setup installs bird2) and CI must not skip");
        }
        eprintln!("SKIPPED: bird is not installed (cargo xtask setup installs bird2)");
    }
    found
}

/// Runs `netbpf ARGS` on `host` (`exe` is the binary under test).
pub fn run(exe: &std::path::Path, host: &Host, args: &[&str]) -> Output {
    host.netbpf(exe).args(args).output().expect("run netbpf")
}

/// `out`, which must have succeeded.
#[track_caller]
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "netbpf failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 20 ms until it is true; returns how long it took, or
/// None after `bound`.
pub fn within(bound: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > bound {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it is true; false after `bound`.
pub fn eventually(bound: Duration, f: impl FnMut() -> bool) -> bool {
    within(bound, f).is_some()
}

/// Whether `host`'s kernel has a BGP route to `addr`.
pub fn has_route(host: &Host, addr: Ipv4Addr) -> bool {
    host.kernel_bgp_routes()
        .map(|r| r.contains(&addr))
        .unwrap_or(false)
}

/// An echo server in `ns` on `addr`; returns when it listens.
pub fn echo_server(ns: &Netns, addr: SocketAddrV4) -> thread::JoinHandle<()> {
    let listener = ns
        .run(move || TcpListener::bind(addr))
        .expect("netns")
        .expect("bind");
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    })
}

/// Sends `msg` as a line and reads the echoed line.
pub fn echo(stream: &mut BufReader<TcpStream>, msg: &str) -> std::io::Result<String> {
    stream.get_mut().write_all(format!("{msg}\n").as_bytes())?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    Ok(line.trim().to_owned())
}
