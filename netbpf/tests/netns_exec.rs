//! A daemon started under `ip netns exec` says at start that its pins and
//! cgroup hooks will not work and to use `--netns` instead (issue 15): `ip
//! netns exec` remounts /sys, so the daemon mounts a bpffs nobody else
//! sees and finds no cgroup v2 mount. The same daemon started with
//! `--netns` says nothing of the kind and its pins are visible.
//!
//! Namespaces are `nbt-nsx<x>-<pid>`, removed on drop with the veth in
//! them; the `--netns` daemon's pins are removed with `netbpf down`.

#[macro_use]
mod common;

use common::exe;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netbpf::netns::Netns;

fn prefix(x: &str) -> String {
    format!("nbt-nsx{x}-{}", std::process::id())
}

/// What the daemon logs once it has attached and filled its maps.
const READY: &str = "running; Ctrl-C or SIGTERM stops";

/// A namespace with an Ethernet uplink (one end of a veth pair), a config
/// for it, and a scratch directory; all removed on drop.
struct Setup {
    ns: Netns,
    dir: PathBuf,
    config: PathBuf,
    pin_dir: PathBuf,
}

impl Setup {
    fn new(x: &str) -> Setup {
        let p = prefix(x);
        let ns = Netns::create(&p).expect("netns");
        ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
            .expect("veth");
        ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "up0"])
            .expect("addr");
        ns.ip(&["link", "set", "up0", "up"]).expect("up0");
        ns.ip(&["link", "set", "up1", "up"]).expect("up1");
        let dir = std::env::temp_dir().join(&p);
        fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("netbpf.toml");
        fs::write(
            &config,
            "[uplink]\ninterface = \"up0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n",
        )
        .expect("config");
        let pin_dir = Path::new("/sys/fs/bpf").join(&p);
        Setup {
            ns,
            dir,
            config,
            pin_dir,
        }
    }

    /// The daemon's arguments after the program (`netbpf`).
    fn daemon_args(&self) -> Vec<String> {
        [
            "--pin-dir",
            &self.pin_dir.to_string_lossy(),
            "daemon",
            "--config",
            &self.config.to_string_lossy(),
            "--gc-interval",
            "1",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A daemon we started, its stderr going to a file; stopped with SIGTERM
/// (by its own pid) on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(mut cmd: Command, log: PathBuf) -> Daemon {
        let file = fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon is running; panics with its log if it exits
    /// or takes more than 20 s.
    fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.contains(READY) {
                return log;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("the daemon exited ({status}) before running: {log}");
            }
            assert!(Instant::now() < deadline, "the daemon did not start: {log}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        // `ip netns exec` execs netbpf: the child's pid is the daemon's.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn daemon_under_ip_netns_exec_says_to_use_netns() {
    require_root!();
    let s = Setup::new("exec");
    let mut cmd = s.ns.command(&exe().to_string_lossy());
    cmd.args(s.daemon_args());
    let mut daemon = Daemon::spawn(cmd, s.dir.join("daemon.log"));
    let log = daemon.wait_ready();
    let name = s.ns.name();
    assert!(
        log.contains(&format!("started under `ip netns exec {name}`")),
        "names how it was started: {log}"
    );
    assert!(
        log.contains(&format!("netbpf daemon --netns {name}")),
        "says what to run instead: {log}"
    );
    assert!(
        log.contains("invisible to every other netbpf command"),
        "says what it breaks: {log}"
    );
    // And that is true: the pins it made are not in our /sys/fs/bpf.
    assert!(
        !s.pin_dir.exists(),
        "{} should be invisible outside the daemon",
        s.pin_dir.display()
    );
    // The said warning comes before the ones it explains.
    let first = log.find("started under").expect("the warning");
    if let Some(cgroup) = log.find("no cgroup v2 mount") {
        assert!(first < cgroup, "{log}");
        assert!(log.contains("/sys is not the host's: see above"), "{log}");
    }
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("were in a bpffs only this process saw") && !log.contains("stays attached"),
        "does not promise the datapath survives: {log}"
    );
}

#[test]
fn daemon_with_netns_flag_keeps_the_hosts_mounts_and_says_nothing() {
    require_root!();
    let s = Setup::new("flag");
    let mut cmd = Command::new(exe());
    cmd.arg("--netns").arg(s.ns.name()).args(s.daemon_args());
    let mut daemon = Daemon::spawn(cmd, s.dir.join("daemon.log"));
    let log = daemon.wait_ready();
    assert!(!log.contains("started under"), "{log}");
    assert!(!log.contains("/sys is not the host's"), "{log}");
    assert!(s.pin_dir.exists(), "pins visible: {log}");
    daemon.stop();
    assert!(daemon.log().contains("stays attached"), "{}", daemon.log());
    let down = Command::new(exe())
        .arg("--netns")
        .arg(s.ns.name())
        .arg("--pin-dir")
        .arg(&s.pin_dir)
        .arg("down")
        .output()
        .expect("netbpf down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
