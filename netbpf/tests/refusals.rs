//! Configurations that would leak private addresses or lock the host out
//! are refused before anything is attached (issue 14, items 4 and 5): a
//! non-Ethernet uplink, masquerade sources covering the host's own
//! addresses, published ports aimed at the host or at loopback, in the
//! config file and in `netbpf masquerade add` / `publish add`.
//!
//! Namespaces are `nbt-ref<x>-<pid>`, removed on drop. No traffic leaves
//! them.

#[macro_use]
mod common;

use common::{cli_pins, exe};

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use netbpf::{
    lab::{self, Lab, UPLINK_ADDR},
    netns::Netns,
};

fn prefix(x: &str) -> String {
    format!("nbt-ref{x}-{}", std::process::id())
}

/// Runs the daemon in `netns` with `config` and expects it to exit on its
/// own; returns its stderr. A daemon still running after 20 s (it
/// accepted the config) is killed and the test fails.
fn daemon_must_refuse(netns: &str, pin_dir: &Path, config: &Path) -> String {
    let mut child = Command::new(exe())
        .arg("--netns")
        .arg(netns)
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("daemon")
        .arg("--config")
        .arg(config)
        .arg("--cgroup")
        .arg("none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            let _ = netbpf::maps::unpin_all(pin_dir);
            panic!(
                "the daemon accepted {} and ran: {}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out: Output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "must exit non-zero: {stderr}");
    stderr
}

/// A scratch directory, removed on drop (also when the test fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn non_ethernet_uplink_is_refused_before_anything_is_attached() {
    require_root!();
    let p = prefix("tun");
    let ns = Netns::create(&format!("{p}-host")).expect("netns");
    // A tun device: link/none, bare IP packets, as WireGuard and PPP.
    ns.ip(&["tuntap", "add", "mode", "tun", "name", "tn0"])
        .expect("tun (CONFIG_TUN)");
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "tn0"])
        .expect("addr");
    ns.ip(&["link", "set", "tn0", "up"]).expect("up");
    let dir = TempDir(std::env::temp_dir().join(&p));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let config = dir.0.join("netbpf.toml");
    std::fs::write(
        &config,
        "[uplink]\ninterface = \"tn0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n",
    )
    .expect("config");
    let pin_dir = Path::new("/sys/fs/bpf").join(&p);
    let stderr = daemon_must_refuse(ns.name(), &pin_dir, &config);
    assert!(
        stderr.contains("uplink.interface: \"tn0\" is not an Ethernet interface"),
        "names the interface: {stderr}"
    );
    assert!(
        stderr.contains("link type none") && stderr.contains("ARPHRD 65534"),
        "names its type: {stderr}"
    );
    assert!(
        !pin_dir.exists(),
        "refused before the pin directory is made"
    );
    assert!(
        !stderr.contains("attached to"),
        "nothing attached: {stderr}"
    );
}

#[test]
fn masquerade_sources_and_targets_that_lock_the_host_out_are_refused() {
    require_root!();
    let mut lab = Lab::build(&prefix("lock"), 1).expect("lab");
    // The uplink is 203.0.113.1/24 (resolved by the daemon, not in the
    // file). Each config is valid on its own except where the file
    // itself shows the problem.
    let cases = [
        // Every address: refused while reading the file.
        (
            "source = \"0.0.0.0/0\"",
            "masquerade[0].source",
            "covers every address",
        ),
        // The uplink's own network: refused once the uplink is resolved.
        (
            "source = \"203.0.0.0/16\"",
            "masquerade[0].source",
            "contains 203.0.113.1",
        ),
        (
            "source = \"127.0.0.0/8\"",
            "masquerade[0].source",
            "loopback",
        ),
    ];
    for (i, (line, key, why)) in cases.iter().enumerate() {
        let config = lab.dir.join(format!("lock{i}.toml"));
        std::fs::write(
            &config,
            format!("[uplink]\ninterface = \"eth0\"\n[[masquerade]]\n{line}\n"),
        )
        .expect("config");
        let stderr = daemon_must_refuse(lab.host.name(), &lab.pin_dir, &config);
        assert!(
            stderr.contains(&format!("{key}: ")) && stderr.contains(why),
            "case {i}: {stderr}"
        );
        assert!(!lab.pin_dir.exists(), "case {i}: nothing pinned");
    }
    for (i, to) in ["203.0.113.1:22", "127.0.0.1:22"].iter().enumerate() {
        let config = lab.dir.join(format!("to{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
                 [[publish]]\nproto = \"tcp\"\nport = 2222\nto = \"{to}\"\n"
            ),
        )
        .expect("config");
        let stderr = daemon_must_refuse(lab.host.name(), &lab.pin_dir, &config);
        assert!(stderr.contains("publish[0].to: "), "{to}: {stderr}");
        assert!(!lab.pin_dir.exists(), "{to}: nothing pinned");
    }
    // Nothing was attached: the outside still reaches the host.
    assert_eq!(
        lab::ping(&lab.outside, UPLINK_ADDR, 0x1401).expect("the host answers"),
        UPLINK_ADDR
    );

    // The same checks on a running datapath, through the CLI (each command
    // spelled out whole, as a user types it, so the cases look alike).
    lab.start_daemon(exe(), "").expect("daemon");
    for (args, key, why) in [
        (
            vec!["masquerade", "add", "--source", "0.0.0.0/0"],
            "masquerade[0].source",
            "covers every address",
        ),
        (
            vec!["masquerade", "add", "--source", "203.0.113.0/24"],
            "masquerade[0].source",
            "contains 203.0.113.1",
        ),
        (
            vec![
                "publish",
                "add",
                "--proto",
                "tcp",
                "--port",
                "2222",
                "--to",
                "127.0.0.1:22",
            ],
            "publish[0].to",
            "loopback",
        ),
        (
            vec![
                "publish",
                "add",
                "--proto",
                "tcp",
                "--port",
                "2222",
                "--to",
                "203.0.113.1:22",
            ],
            "publish[0].to",
            "address of the host",
        ),
    ] {
        let out = cli_pins(&lab, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(
            stderr.contains(key) && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
    let rules = netbpf::rows::NatRules::read(&lab.pin_dir).expect("rules");
    let json = serde_json::to_value(&rules).expect("json");
    assert_eq!(
        json["masquerade"].as_array().map(Vec::len),
        Some(1),
        "only the config's rule: {json:#}"
    );
    assert_eq!(
        json["publish"].as_array().map(Vec::len),
        Some(0),
        "nothing published: {json:#}"
    );
    // And the host is still reachable with the datapath attached.
    assert_eq!(
        lab::ping(&lab.outside, UPLINK_ADDR, 0x1402).expect("the host answers"),
        UPLINK_ADDR
    );
}
