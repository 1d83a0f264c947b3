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

/// The path of `host`'s netbpf config, as an argument.
pub fn config_arg(host: &Host) -> String {
    host.dir
        .join("netbpf.toml")
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// `netbpf bgp status --json` on `host` with its config, parsed.
pub fn bgp_status(exe: &std::path::Path, host: &Host) -> serde_json::Value {
    let config = config_arg(host);
    let out = ok(run(
        exe,
        host,
        &["bgp", "status", "--json", "--config", &config],
    ));
    serde_json::from_slice(&out.stdout).expect("json")
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

/// A TCP stream that keeps flowing: a writer sends a numbered line every
/// 10 ms, the far end echoes it, a reader checks that the echoes come back
/// in order. [`Flow::received`] says how many came back so far; a reset,
/// a gap in the numbers or 10 s without an echo is [`Flow::broken`].
pub struct Flow {
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    broken: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// To end the reader's wait at [`Flow::stop`].
    socket: TcpStream,
}

impl Flow {
    /// Starts the flow on `stream` (connected to an [`echo_server`]).
    pub fn start(stream: TcpStream) -> Flow {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicBool, AtomicU64, Ordering},
        };
        let received = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut writer = stream.try_clone().expect("clone");
        let socket = stream.try_clone().expect("clone");
        let (w_stop, w_broken) = (stop.clone(), broken.clone());
        let write = thread::spawn(move || {
            let mut n = 0u64;
            while !w_stop.load(Ordering::Relaxed) {
                if let Err(e) = writer.write_all(format!("{n}\n").as_bytes()) {
                    w_broken
                        .lock()
                        .expect("lock")
                        .get_or_insert(format!("write {n}: {e}"));
                    return;
                }
                n += 1;
                thread::sleep(Duration::from_millis(10));
            }
        });
        let (r_stop, r_broken, r_received) = (stop.clone(), broken.clone(), received.clone());
        let read = thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut want = 0u64;
            while !r_stop.load(Ordering::Relaxed) {
                let mut line = String::new();
                let why = match reader.read_line(&mut line) {
                    Ok(0) => Some("closed by the far end".to_owned()),
                    Ok(_) if line.trim() == want.to_string() => None,
                    Ok(_) => Some(format!("line {want} expected, got {:?}", line.trim())),
                    Err(e) => Some(format!("reading line {want}: {e}")),
                };
                if let Some(why) = why {
                    if !r_stop.load(Ordering::Relaxed) {
                        r_broken.lock().expect("lock").get_or_insert(why);
                    }
                    return;
                }
                want += 1;
                r_received.store(want, Ordering::Relaxed);
            }
        });
        Flow {
            received,
            broken,
            stop,
            threads: vec![write, read],
            socket,
        }
    }

    /// Echoes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the flow broke, if it did.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().expect("lock").clone()
    }

    /// Panics unless at least `n` more echoes arrive within `bound`, with
    /// the flow unbroken.
    #[track_caller]
    pub fn advances(&self, n: u64, bound: Duration, what: &str) {
        let from = self.received();
        let ok = eventually(bound, || {
            self.broken().is_some() || self.received() >= from + n
        });
        assert!(
            ok && self.broken().is_none(),
            "the stream stopped {what}: {} echo(es) so far, broken: {:?}",
            self.received(),
            self.broken()
        );
    }

    /// Stops the writer and the reader.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
