//! The CNI plugin (issue 18) driven as a runtime drives it: `CNI_*`
//! variables and the network config on stdin, the answer on stdout, the
//! exit status. Bad input gives the spec's error codes; ADD, CHECK, DEL,
//! STATUS and GC act on a real datapath in a lab (namespaces
//! `nbcn<test>-<pid>-*`, removed on drop). Error codes in [codes], the
//! NAT rules in [nat], routed mode in [routed].

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
mod codes;
mod nat;
mod routed;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
};

use common::{cli_pins, exe};
use netbpf::lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer};
use serde_json::{Value, json};

/// What one invocation answered.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub json: Value,
    pub stdout: String,
}

impl Answer {
    /// The error code of a failed invocation.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.stdout);
        self.json["code"]
            .as_u64()
            .expect("error object with a code")
    }
}

/// Runs `plugin` (the netbpf binary, or a link to it) with `env` and `stdin`.
pub fn invoke_with(plugin: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Answer {
    use std::io::Write as _;
    let mut child = Command::new(plugin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("plugin output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
    };
    Answer {
        ok: out.status.success(),
        json,
        stdout,
    }
}

/// `netbpf cni` for `command` on container `id` (ifname eth0).
pub fn invoke(command: &str, id: &str, stdin: &Value) -> Answer {
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/run/netns/nbcn-none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    invoke_with(exe(), &["cni"], &env, &stdin.to_string())
}

/// What `bridge` hands on: the container's eth0 at `ip`.
pub fn prev_result(ip: Ipv4Addr) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "02:00:00:00:00:01"},
            {"name": "veth1", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/nbcn-none"}
        ],
        "ips": [{"address": format!("{ip}/24"), "gateway": "10.77.0.1", "interface": 2}]
    })
}

/// A network config for the lab's datapath with `mappings` for `ip`.
pub fn conf(pin_dir: &Path, ip: Ipv4Addr, mappings: Value) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "nbcn-net",
        "type": "netbpf",
        "pinDir": pin_dir,
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": prev_result(ip),
    })
}

pub fn tcp(host: u16, container: u16) -> Value {
    json!([{"hostPort": host, "containerPort": container, "protocol": "tcp"}])
}

/// Removes a file when dropped, also when the test fails.
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// A lab with one container serving TCP 4000, the outside machine serving
/// UDP 4000, and the daemon running.
pub fn nat_lab(tag: &str) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build(&format!("nbcn{tag}-{}", std::process::id()), 1).expect("lab");
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000);
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    let servers = vec![
        WhoamiServer::spawn(&lab.containers[0].ns, Transport::Tcp, any, "c1 saw").expect("tcp"),
        WhoamiServer::spawn(&lab.outside, Transport::Udp, out, "outside saw").expect("udp"),
    ];
    lab.start_daemon(exe(), "").expect("daemon");
    (lab, servers)
}

pub fn nat_list(lab: &Lab) -> String {
    let out = cli_pins(lab, &["nat", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn reach(lab: &Lab, port: u16) -> Result<String, String> {
    lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, port)).map_err(|e| e.to_string())
}
