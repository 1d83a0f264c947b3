//! The legitimate clients that probe during and after a flood, and the server they reach.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};

use crate::{lab::tcp_listener, netns::Netns};

use super::plan::*;

/// Runs `f` on a new thread inside namespace `ns` and returns the handle.
pub(crate) fn spawn_in<T, F>(ns: &Netns, f: F) -> JoinHandle<io::Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = std::path::Path::new("/run/netns").join(ns.name());
    thread::spawn(move || {
        let file = File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
}

/// A TCP server that greets every connection with `hi\n` and then echoes
/// lines, one thread per connection.
pub(crate) struct Server {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    pub(crate) fn spawn(ns: &Netns, addr: SocketAddrV4) -> Result<Self> {
        let listener = ns
            .run(move || tcp_listener(addr))?
            .with_context(|| format!("listening on {addr} in {}", ns.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || -> io::Result<()> {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || echo(stream));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            Ok(())
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

pub(crate) fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(b"hi\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        stream.write_all(line.as_bytes())?;
        line.clear();
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One legitimate connection from the calling thread's namespace: true when
/// the greeting arrives within [`PROBE_TIMEOUT`].
pub(crate) fn probe(dst: SocketAddrV4) -> bool {
    let start = Instant::now();
    let Ok(stream) = TcpStream::connect_timeout(&SocketAddr::V4(dst), PROBE_TIMEOUT) else {
        return false;
    };
    let left = PROBE_TIMEOUT.saturating_sub(start.elapsed());
    if stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(stream).read_line(&mut line), Ok(n) if n > 0) && line == "hi\n"
}

/// Probes `dst` from `ns` every [`PROBE_INTERVAL`] until `stop`; returns
/// (probes, successes).
pub(crate) fn prober(
    ns: &Netns,
    dst: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> JoinHandle<io::Result<(u64, u64)>> {
    spawn_in(ns, move || {
        let (mut n, mut ok) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            n += 1;
            ok += u64::from(probe(dst));
            thread::sleep(PROBE_INTERVAL.saturating_sub(t.elapsed()));
        }
        Ok((n, ok))
    })
}

/// From `ns`: probes `dst` until one works (at most [`RECOVERY_LIMIT`]),
/// then [`AFTER_PROBES`] more; returns (seconds until one worked or None,
/// successes of the later probes).
pub(crate) fn recovery(
    ns: &Netns,
    dst: SocketAddrV4,
) -> JoinHandle<io::Result<(Option<f64>, u64)>> {
    spawn_in(ns, move || {
        let start = Instant::now();
        let mut recovered = None;
        while start.elapsed() < RECOVERY_LIMIT {
            if probe(dst) {
                recovered = Some(start.elapsed().as_secs_f64());
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let ok = (0..AFTER_PROBES).filter(|_| probe(dst)).count() as u64;
        Ok((recovered, ok))
    })
}

pub(crate) fn joined<T>(h: JoinHandle<io::Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("the {what} thread panicked"))?
        .with_context(|| what.to_owned())
}
