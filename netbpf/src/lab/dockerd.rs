//! A real dockerd for the lab and the tests: Debian's docker.io started in
//! a lab namespace (with `nsenter --net`, which keeps the mount namespace:
//! under `ip netns exec` dockerd finds no cgroup mounts) with its own data
//! root, exec root, socket and pidfile under one directory, and an image
//! imported from a static busybox (no registry). It never touches the
//! host's namespace, `/var/lib/docker` or the host's dockerd. Dropping it
//! removes its containers, stops it, unmounts what it left mounted and
//! removes the directory.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::Netns;

use super::{
    build::terminate,
    error::{LabError, io_err},
};

/// The image every lab container runs: a static busybox, imported.
pub const DOCKER_IMAGE: &str = "netbpf-lab-busybox:1";

/// The Debian packages a real dockerd needs here that are missing
/// (`cargo xtask setup` installs them).
pub fn dockerd_missing() -> Vec<&'static str> {
    [
        ("dockerd", "docker.io"),
        ("busybox", "busybox-static"),
        ("nsenter", "util-linux"),
    ]
    .into_iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, pkg)| pkg)
    .collect()
}

fn which(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(bin))
    .find(|p| p.exists())
}

/// The docker CLI that comes with the daemon (Debian's), else any.
fn cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("docker")
    }
}

/// A running dockerd.
pub struct Dockerd {
    /// Its directory (data root, exec root, socket, log).
    pub dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    ns: String,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in namespace `ns`, waits for its API and imports
    /// [`DOCKER_IMAGE`].
    pub fn start(ns: &Netns, dir: &Path) -> Result<Self, LabError> {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut d = Dockerd {
            dir: dir.to_owned(),
            socket: dir.join("docker.sock"),
            ns: ns.name().to_owned(),
            child: None,
        };
        d.launch()?;
        d.import_image()?;
        Ok(d)
    }

    fn launch(&mut self) -> Result<(), LabError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .map_err(io_err("creating dockerd.log"))?;
        let log2 = log.try_clone().map_err(io_err("duplicating the log fd"))?;
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("dockerd")
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--userland-proxy=false",
            ])
            .args(["--data-root", &dir("data"), "--exec-root", &dir("exec")])
            .args(["--pidfile", &dir("docker.pid")])
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err(
                "starting dockerd (cargo xtask setup installs docker.io)",
            ))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.socket.exists() && self.try_docker(&["version"])?.status.success() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(LabError::Docker(format!(
                    "dockerd exited with {status}:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::Docker(format!(
            "dockerd not answering after 60 s:\n{}",
            self.log()
        )))
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS` against this daemon, whatever its outcome.
    pub fn try_docker(&self, args: &[&str]) -> Result<Output, LabError> {
        Command::new(cli())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running the docker CLI"))
    }

    /// `docker ARGS`, which must succeed; its standard output, trimmed.
    pub fn docker(&self, args: &[&str]) -> Result<String, LabError> {
        let out = self.try_docker(args)?;
        if !out.status.success() {
            return Err(LabError::Docker(format!(
                "docker {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn import_image(&self) -> Result<(), LabError> {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        fs::create_dir_all(&bin).map_err(io_err("creating the image's rootfs"))?;
        let busybox = which("busybox").ok_or_else(|| {
            LabError::Docker("no busybox (cargo xtask setup installs busybox-static)".into())
        })?;
        fs::copy(&busybox, bin.join("busybox")).map_err(io_err("copying busybox"))?;
        for applet in ["sh", "sleep"] {
            let link = bin.join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link)
                    .map_err(io_err(format!("linking {applet}")))?;
            }
        }
        let tar = self.dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .map_err(io_err("running tar"))?;
        if !status.success() {
            return Err(LabError::Docker(format!("tar of the rootfs: {status}")));
        }
        self.docker(&["import", &tar.display().to_string(), DOCKER_IMAGE])?;
        Ok(())
    }

    /// `docker run -d --name NAME --stop-timeout 1 ARGS IMAGE sleep`; the
    /// container's network namespace, named `ns`.
    pub fn run(&self, name: &str, args: &[&str], ns: &str) -> Result<Netns, LabError> {
        let mut full = vec!["run", "-d", "--name", name, "--stop-timeout", "1"];
        full.extend_from_slice(args);
        full.extend_from_slice(&[DOCKER_IMAGE, "/bin/sleep", "86400"]);
        self.docker(&full)?;
        self.attach(name, ns)
    }

    /// Names a running container's network namespace `ns`.
    pub fn attach(&self, name: &str, ns: &str) -> Result<Netns, LabError> {
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", name])?;
        let pid: u32 = pid
            .parse()
            .map_err(|_| LabError::Docker(format!("{name}: no process ({pid:?})")))?;
        Ok(Netns::attach(ns, pid)?)
    }

    /// A container's address on `network`.
    pub fn addr(&self, name: &str, network: &str) -> Result<Ipv4Addr, LabError> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let text = self.docker(&["inspect", "-f", &format, name])?;
        text.parse()
            .map_err(|_| LabError::Docker(format!("{name} on {network}: address {text:?}")))
    }

    /// Stops dockerd (SIGTERM, as systemd does; its containers stop with
    /// it, unless live-restore) and waits for it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }

    /// Starts it again on the same directories.
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.launch()
    }
}

/// Mount points under `dir` (a runtime's overlays, its exec root), deepest
/// first, so that they can be unmounted in that order.
pub fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut out: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.len()));
    out
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Ok(ids) = self.try_docker(&["ps", "-aq"])
        {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.try_docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
