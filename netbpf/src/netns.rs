//! Network namespaces for the lab and the tests: create, configure with
//! `ip`, run code inside, and always remove on drop.
//!
//! Everything here acts only inside namespaces it created; nothing touches
//! the namespace the caller runs in.

use std::{
    fs::File,
    io,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
};

use nix::sched::{CloneFlags, setns};

/// Failures creating or using a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command exited non-zero.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started.
    #[error("`{cmd}` could not start (is iproute2 installed? `cargo xtask setup` installs it)")]
    Spawn {
        /// The command line.
        cmd: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Entering the namespace failed.
    #[error("entering network namespace {name}")]
    Enter {
        /// The namespace.
        name: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The thread running code in the namespace panicked.
    #[error("the task inside namespace {0} panicked")]
    Panicked(String),
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<Output, NetnsError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// A named network namespace, deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (after removing a stale one of that name)
    /// with its loopback up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        if Path::new("/run/netns").join(name).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (a container's, made
    /// by Docker) `name`, with `ip netns attach`; dropping it removes the
    /// name only, the namespace lives as long as its processes.
    pub fn attach(name: &str, pid: u32) -> Result<Self, NetnsError> {
        if Path::new("/run/netns").join(name).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
        run("ip", &["netns", "attach", name, &pid.to_string()])?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ip netns exec NAME PROGRAM ARGS`.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, assignment: &str) -> Result<(), NetnsError> {
        self.exec("sysctl", &["-q", "-w", assignment]).map(|_| ())
    }

    /// A command that runs `program` inside the namespace; the caller
    /// spawns it.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str(), program]);
        cmd
    }

    /// Runs `f` on a new thread that has entered this namespace, and
    /// returns its result. Sockets created by `f` stay in this namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let name = self.name.clone();
        let path = Path::new("/run/netns").join(&name);
        let handle = thread::spawn(move || -> Result<T, NetnsError> {
            let enter = |source| NetnsError::Enter {
                name: name.clone(),
                source,
            };
            let file = File::open(&path).map_err(enter)?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| enter(io::Error::from(e)))?;
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| NetnsError::Panicked(self.name.clone()))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with one end in each namespace.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<(), NetnsError> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// Wires a container the way Calico does, inside `ns`: `addr/32` on its
/// `eth0` and a default route via 169.254.1.1 `onlink` (the host answers
/// the ARP for it).
pub fn wire_calico(ns: &Netns, addr: std::net::Ipv4Addr) -> Result<(), NetnsError> {
    ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
    ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])?;
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
        "onlink",
    ])?;
    Ok(())
}
