//! A real dockerd for one test: Debian's docker.io started in the lab's
//! host namespace (with `nsenter --net`, which keeps the mount namespace:
//! under `ip netns exec` dockerd finds no cgroup mounts) with its own data
//! root, exec root, socket and pidfile under a temporary directory. It
//! never touches the host's namespace, `/var/lib/docker` or the host's
//! dockerd. Dropping it removes its containers, stops it, unmounts what it
//! left mounted and removes the directory, also when the test failed.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use netbpf::netns::Netns;

/// The image every test container runs: a static busybox, imported.
pub const IMAGE: &str = "nbdk-busybox:1";

/// Whether dockerd, a busybox and nsenter are here; says why not when
/// they are missing, and fails instead of skipping under CI.
pub fn prerequisites() -> bool {
    let missing: Vec<&str> = [
        ("dockerd", "docker.io"),
        ("busybox", "busybox-static"),
        ("nsenter", "util-linux"),
    ]
    .into_iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (cargo xtask setup installs docker.io and busybox-static)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}, and CI must not skip the Docker tests");
    }
    eprintln!("SKIPPED: {why}");
    false
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
    /// [`IMAGE`].
    pub fn start(ns: &Netns, dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("dockerd dir");
        let mut d = Dockerd {
            dir: dir.to_owned(),
            socket: dir.join("docker.sock"),
            ns: ns.name().to_owned(),
            child: None,
        };
        d.launch();
        d.import_image();
        d
    }

    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log");
        let log2 = log.try_clone().expect("log fd");
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
            .expect("start dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.socket.exists() && self.try_docker(&["version"]).status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("dockerd exited with {status}:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd not answering after 60 s:\n{}", self.log());
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS` against this daemon, whatever its outcome.
    pub fn try_docker(&self, args: &[&str]) -> Output {
        Command::new(cli())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, which must succeed; its standard output.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.try_docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn import_image(&self) {
        let root = self.dir.join("rootfs");
        fs::create_dir_all(root.join("bin")).expect("rootfs");
        let busybox = which("busybox").expect("busybox");
        fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        let tar = self.dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(ok.success(), "tar of the rootfs");
        self.docker(&["import", &tar.display().to_string(), IMAGE]);
    }

    /// `docker run -d --name NAME ARGS IMAGE sleep 3600`; the container's
    /// network namespace, named `ns`.
    pub fn run(&self, name: &str, args: &[&str], ns: &str) -> Netns {
        let mut full = vec!["run", "-d", "--name", name];
        full.extend_from_slice(args);
        full.extend_from_slice(&[IMAGE, "/bin/sleep", "3600"]);
        self.docker(&full);
        self.attach(name, ns)
    }

    /// Names a running container's network namespace `ns`.
    pub fn attach(&self, name: &str, ns: &str) -> Netns {
        let pid: u32 = self
            .docker(&["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("pid");
        Netns::attach(ns, pid).expect("ip netns attach")
    }

    /// A container's address on `network`.
    pub fn addr(&self, name: &str, network: &str) -> Ipv4Addr {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.docker(&["inspect", "-f", &format, name])
            .parse()
            .expect("container address")
    }

    /// Stops dockerd (SIGTERM, as systemd does; its containers stop with
    /// it) and waits for it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            netbpf::lab::terminate(child);
        }
    }

    /// Starts it again on the same directories.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// Mount points under the directory (overlays, the exec root), deepest
    /// first.
    fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.display().to_string();
        let mut out: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.len()));
        out
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.try_docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.try_docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        for m in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
