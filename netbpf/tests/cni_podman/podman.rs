//! Debian's podman with its CNI backend, run in a lab namespace (with
//! `nsenter --net`, which keeps the mount namespace and so the bpffs)
//! with everything private under one directory: `--root`, `--runroot`,
//! `--tmpdir`, the CNI config dir, a `containers.conf` (through
//! `CONTAINERS_CONF`) naming the plugin dirs, and host-local's data dir.
//! The network is `bridge` (no ipMasq) + `host-local` + netbpf, no
//! `portmap`. Dropping it removes its containers, unmounts what is left
//! and removes the directory.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use netbpf::netns::Netns;

/// The CNI network's name, and its subnet.
pub const NETWORK: &str = "nbcn";
const SUBNET: &str = "10.89.7.0/24";

/// The routed network (ptp + netbpf in routed mode), and its subnet: the
/// upper half of the lab's segment.
pub const ROUTED_NETWORK: &str = "nbcnr";
const ROUTED_SUBNET: &str = "10.0.1.128/25";

/// The image: a static busybox, imported.
const IMAGE: &str = "localhost/nbcn-busybox:1";

/// The plugins' directory Debian's containernetworking-plugins installs.
const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// What is missing for these tests (`cargo xtask setup` installs it).
pub fn missing() -> Vec<&'static str> {
    [
        ("/usr/bin/podman", "podman"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/bin/nsenter", "util-linux"),
    ]
    .into_iter()
    .filter(|(path, _)| !Path::new(path).exists())
    .map(|(_, pkg)| pkg)
    .collect()
}

/// A private podman in namespace `ns`.
pub struct Podman {
    dir: PathBuf,
    ns: String,
}

impl Podman {
    /// Writes the config, links `plugin` as `netbpf-cni`, imports the
    /// image. `pin_dir` is the datapath the plugin writes to.
    pub fn new(ns: &Netns, dir: &Path, plugin: &Path, pin_dir: &Path) -> Podman {
        let p = Podman {
            dir: dir.to_owned(),
            ns: ns.name().to_owned(),
        };
        for sub in ["bin", "cni", "root", "runroot", "tmp", "ipam", "rootfs/bin"] {
            fs::create_dir_all(dir.join(sub)).expect("podman dirs");
        }
        std::os::unix::fs::symlink(plugin, dir.join("bin/netbpf-cni")).expect("link plugin");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{DEBIAN_PLUGINS}\"]\n\
             network_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            dir.join("bin").display(),
            dir.join("cni").display(),
        );
        fs::write(dir.join("containers.conf"), conf).expect("containers.conf");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "nbcn0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": dir.join("ipam"),
                        "ranges": [[{"subnet": SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {
                    "type": "netbpf-cni",
                    "capabilities": {"portMappings": true},
                    "pinDir": pin_dir,
                    "masquerade": true
                }
            ]
        });
        fs::write(dir.join("cni/nbcn.conflist"), conflist.to_string()).expect("conflist");
        // Routed: ptp (the host side of each veth is what netbpf routes
        // to) on addresses of the uplink's segment, which the host
        // answers ARP for.
        let routed = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": ROUTED_NETWORK,
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": dir.join("ipam"),
                        "ranges": [[{"subnet": ROUTED_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "netbpf-cni", "pinDir": pin_dir, "mode": "routed"}
            ]
        });
        fs::write(dir.join("cni/nbcnr.conflist"), routed.to_string()).expect("conflist");
        let root = dir.join("rootfs");
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox");
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
        }
        let tar = dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar of the rootfs");
        p.podman(&["import", &tar.display().to_string(), IMAGE]);
        p
    }

    /// `podman ARGS`, whatever its outcome.
    pub fn try_podman(&self, args: &[&str]) -> Output {
        let d = |s: &str| self.dir.join(s).display().to_string();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("podman")
            .args(["--root", &d("root"), "--runroot", &d("runroot")])
            .args(["--tmpdir", &d("tmp"), "--network-backend", "cni"])
            .args(["--cni-config-dir", &d("cni")])
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman ARGS`, which must succeed; its stdout, trimmed.
    pub fn podman(&self, args: &[&str]) -> String {
        let out = self.try_podman(args);
        assert!(
            out.status.success(),
            "podman {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman run -d --network nbcn ARGS IMAGE sleep`: the container's ID.
    pub fn run(&self, name: &str, args: &[&str]) -> String {
        self.run_on(NETWORK, name, args)
    }

    /// [`Podman::run`] on `network`.
    pub fn run_on(&self, network: &str, name: &str, args: &[&str]) -> String {
        let mut full = vec!["run", "-d", "--name", name, "--network", network];
        full.extend_from_slice(&[
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        full.extend_from_slice(args);
        full.extend_from_slice(&[IMAGE, "/bin/sleep", "86400"]);
        let out = self.podman(&full);
        out.lines().last().unwrap_or_default().to_owned()
    }

    /// A running container's network namespace, named `ns`.
    pub fn netns(&self, name: &str, ns: &str) -> Netns {
        let pid = self.podman(&["inspect", "-f", "{{.State.Pid}}", name]);
        Netns::attach(ns, pid.parse().expect("pid")).expect("attach netns")
    }

    /// A container's address on `network`.
    pub fn addr(&self, name: &str, network: &str) -> Ipv4Addr {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.podman(&["inspect", "-f", &format, name])
            .parse()
            .expect("address")
    }

    /// The IDs of the containers podman has.
    pub fn ids(&self) -> Vec<String> {
        self.podman(&["ps", "-aq", "--no-trunc"])
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The network config as a runtime hands it to netbpf for GC, with
    /// the attachments podman still has.
    pub fn gc_conf(&self, pin_dir: &Path) -> serde_json::Value {
        let valid: Vec<_> = self
            .ids()
            .into_iter()
            .map(|id| serde_json::json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": NETWORK,
            "type": "netbpf-cni",
            "pinDir": pin_dir,
            "cni.dev/valid-attachments": valid,
        })
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.try_podman(&["rm", "-af", "-t", "0"]);
        for m in netbpf::lab::mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
