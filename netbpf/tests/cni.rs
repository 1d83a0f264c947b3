//! The CNI plugin (issue 18) driven as a runtime drives it: `CNI_*`
//! variables and the network config on stdin, the answer on stdout, the
//! exit status. Bad input gives the spec's error codes; ADD, CHECK, DEL,
//! STATUS and GC act on a real datapath in a lab (namespaces
//! `nbcn<test>-<pid>-*`, removed on drop).

#[macro_use]
mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
};

use common::{cli_pins, exe};
use netbpf::lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami};
use serde_json::{Value, json};

/// What one invocation answered.
#[derive(Debug)]
struct Answer {
    ok: bool,
    json: Value,
    stdout: String,
}

impl Answer {
    /// The error code of a failed invocation.
    fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.stdout);
        self.json["code"]
            .as_u64()
            .expect("error object with a code")
    }
}

/// Runs `plugin` (the netbpf binary, or a link to it) with `env` and `stdin`.
fn invoke_with(plugin: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Answer {
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
fn invoke(command: &str, id: &str, stdin: &Value) -> Answer {
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
fn prev_result(ip: Ipv4Addr) -> Value {
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
fn conf(pin_dir: &Path, ip: Ipv4Addr, mappings: Value) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "nbcn-net",
        "type": "netbpf",
        "pinDir": pin_dir,
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": prev_result(ip),
    })
}

fn tcp(host: u16, container: u16) -> Value {
    json!([{"hostPort": host, "containerPort": container, "protocol": "tcp"}])
}

/// Removes a file when dropped, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

#[test]
fn bad_input_gives_the_specs_error_codes() {
    require_root!();
    let pin_dir = Path::new("/sys/fs/bpf").join(format!("nbcn-none-{}", std::process::id()));
    let _gone = RemoveOnDrop(netbpf::ruleslock::RulesLock::path_for(&pin_dir));
    let pin_dir = pin_dir.as_path();
    let good = conf(pin_dir, C1, tcp(8090, 4000));
    // VERSION: the versions spoken, in the version asked for.
    let v = invoke("VERSION", "", &json!({"cniVersion": "1.0.0"}));
    assert!(v.ok, "{}", v.stdout);
    assert_eq!(v.json["cniVersion"], "1.0.0");
    let versions = v.json["supportedVersions"].as_array().expect("list");
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(versions.iter().any(|x| x == want), "{}", v.stdout);
    }
    // Malformed JSON: 6. Unknown version: 1. No prevResult: 7.
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/x"),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(
        invoke_with(exe(), &["cni"], &env, "{\"cniVersion\": ").code(),
        6
    );
    let mut unknown = good.clone();
    unknown["cniVersion"] = json!("9.9.9");
    assert_eq!(invoke("ADD", "c1", &unknown).code(), 1);
    let mut no_prev = good.clone();
    no_prev
        .as_object_mut()
        .expect("object")
        .remove("prevResult");
    let answer = invoke("ADD", "c1", &no_prev);
    assert_eq!(answer.code(), 7);
    assert!(
        answer.json["details"]
            .as_str()
            .unwrap_or("")
            .contains("prevResult")
    );
    // A config without a name, a bad protocol: 7. An IPv6 host address: 2.
    let mut nameless = good.clone();
    nameless.as_object_mut().expect("object").remove("name");
    assert_eq!(invoke("ADD", "c1", &nameless).code(), 7);
    let sctp = conf(
        pin_dir,
        C1,
        json!([{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]),
    );
    assert_eq!(invoke("ADD", "c1", &sctp).code(), 7);
    let v6 = conf(
        pin_dir,
        C1,
        json!([{"hostPort": 80, "containerPort": 80, "hostIP": "2001:db8::1"}]),
    );
    assert_eq!(invoke("ADD", "c1", &v6).code(), 2);
    // Bad environment: 4.
    assert_eq!(
        invoke_with(exe(), &["cni"], &[], &good.to_string()).code(),
        4
    );
    assert_eq!(invoke("ADD", "../c1", &good).code(), 4);
    assert_eq!(invoke("FROB", "c1", &good).code(), 4);
    let no_netns = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(
        invoke_with(exe(), &["cni"], &no_netns, &good.to_string()).code(),
        4
    );
    // No datapath: ADD says try again later (11), STATUS not available
    // (50); DEL and GC have nothing to do and succeed.
    assert_eq!(invoke("ADD", "c1", &good).code(), 11);
    assert_eq!(invoke("STATUS", "", &good).code(), 50);
    assert!(invoke("DEL", "c1", &good).ok);
    let mut gc = good.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(invoke("GC", "", &gc).ok);
    // GC without the list would drop everything: refused (7).
    assert_eq!(invoke("GC", "", &good).code(), 7);
}

/// A lab with one container serving TCP 4000, the outside machine serving
/// UDP 4000, and the daemon running.
fn lab(tag: &str) -> (Lab, Vec<WhoamiServer>) {
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

fn nat_list(lab: &Lab) -> String {
    let out = cli_pins(lab, &["nat", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reach(lab: &Lab, port: u16) -> Result<String, String> {
    lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, port)).map_err(|e| e.to_string())
}

#[test]
fn add_check_del_publish_exactly_what_was_asked() {
    require_root!();
    let (lab, _servers) = lab("a");
    let c = conf(&lab.pin_dir, C1, tcp(8090, 4000));
    assert!(invoke("STATUS", "", &c).ok, "the datapath is up");
    assert!(reach(&lab, 8090).is_err(), "not published yet");

    // ADD, through the name runtimes call it by: prevResult comes back.
    let link = lab.dir.join("netbpf-cni");
    std::os::unix::fs::symlink(exe(), &link).expect("link netbpf-cni");
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", "/x"),
        ("CNI_IFNAME", "eth0"),
    ];
    let add = invoke_with(&link, &[], &env, &c.to_string());
    assert!(add.ok, "{}", add.stdout);
    let mut expected = prev_result(C1);
    expected["cniVersion"] = json!("1.1.0");
    assert_eq!(add.json, expected, "the previous result, unchanged");
    let seen = reach(&lab, 8090).expect("published by ADD");
    assert!(
        seen.starts_with("c1 saw 203.0.113.2:"),
        "client address kept: {seen}"
    );
    let list = nat_list(&lab);
    assert!(list.contains("cni:ctr1/eth0"), "{list}");
    assert!(invoke("CHECK", "ctr1", &c).ok);

    // Another container asking for the same port: refused (100), and
    // nothing of it left behind.
    let c2 = conf(&lab.pin_dir, Ipv4Addr::new(10, 77, 0, 3), tcp(8090, 80));
    let clash = invoke("ADD", "ctr2", &c2);
    assert_eq!(clash.code(), 100, "{}", clash.stdout);
    assert!(!nat_list(&lab).contains("ctr2"));

    // Removed by hand: CHECK says so (101); a repeated ADD mends it.
    let del = cli_pins(
        &lab,
        &["publish", "del", "--proto", "tcp", "--port", "8090"],
    );
    assert!(del.status.success());
    assert_eq!(invoke("CHECK", "ctr1", &c).code(), 101);
    assert!(invoke("ADD", "ctr1", &c).ok);
    assert!(invoke("CHECK", "ctr1", &c).ok);

    // DEL removes exactly that, twice is fine; CHECK then fails.
    assert!(invoke("DEL", "ctr1", &c).ok);
    assert!(reach(&lab, 8090).is_err(), "unpublished by DEL");
    assert!(!nat_list(&lab).contains("cni:"), "{}", nat_list(&lab));
    assert!(invoke("DEL", "ctr1", &c).ok, "DEL twice");
    assert_eq!(invoke("CHECK", "ctr1", &c).code(), 101);
    // The config's masquerade is untouched throughout.
    assert!(nat_list(&lab).contains("10.77.0.0/24"));
}

#[test]
fn masquerade_gc_and_concurrent_invocations() {
    require_root!();
    let (lab, _servers) = lab("m");
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    // The config's masquerade covers the container: CNI adds none of its own.
    let mut c = conf(&lab.pin_dir, C1, json!([]));
    c["masquerade"] = json!(true);
    assert!(invoke("ADD", "m1", &c).ok);
    assert!(invoke("DEL", "m1", &c).ok);
    assert!(
        nat_list(&lab).contains("10.77.0.0/24"),
        "the config's rule stays"
    );
    // Without it, the plugin's /32 is what masquerades the container.
    let del = cli_pins(&lab, &["masquerade", "del", "--source", "10.77.0.0/24"]);
    assert!(del.status.success());
    let c1 = &lab.containers[0].ns;
    assert!(
        lab::udp_whoami(c1, 6200, out).is_err(),
        "nothing masquerades it"
    );
    let no_to = invoke("ADD", "m1", &c);
    assert_eq!(
        no_to.code(),
        7,
        "no rule to take the address from: {}",
        no_to.stdout
    );
    c["masqueradeTo"] = json!(UPLINK_ADDR.to_string());
    let add = invoke("ADD", "m1", &c);
    assert!(add.ok, "{}", add.stdout);
    let seen = parse_whoami(&lab::udp_whoami(c1, 6201, out).expect("masqueraded")).expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR);
    assert!(nat_list(&lab).contains("10.77.0.2/32"));

    // The runtime crashed (no DEL); GC of another network keeps it, GC
    // of this one without it drops it.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "other", "ifname": "eth0"}]);
    gc["name"] = json!("another-net");
    assert!(invoke("GC", "", &gc).ok);
    assert!(nat_list(&lab).contains("cni:m1/eth0"));
    gc["name"] = json!("nbcn-net");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "m1", "ifname": "eth1"}]);
    assert!(invoke("GC", "", &gc).ok);
    assert!(!nat_list(&lab).contains("cni:"), "{}", nat_list(&lab));

    // Eight ADDs at once, different ports: all land; eight at once for one
    // port: exactly one does. Then eight DELs leave nothing.
    let pin_dir = lab.pin_dir.clone();
    let run_all = |port_of: fn(u16) -> u16| -> Vec<Answer> {
        let handles: Vec<_> = (0..8u16)
            .map(|i| {
                let c = conf(
                    &pin_dir,
                    Ipv4Addr::new(10, 77, 0, 10 + i as u8),
                    tcp(port_of(i), 4000),
                );
                std::thread::spawn(move || invoke("ADD", &format!("p{i}"), &c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    };
    let answers = run_all(|i| 9000 + i);
    assert!(answers.iter().all(|a| a.ok), "{answers:?}");
    assert_eq!(
        nat_list(&lab).matches("cni:p").count(),
        8,
        "{}",
        nat_list(&lab)
    );
    for i in 0..8u16 {
        let c = conf(
            &pin_dir,
            Ipv4Addr::new(10, 77, 0, 10 + i as u8),
            tcp(9000 + i, 4000),
        );
        assert!(invoke("DEL", &format!("p{i}"), &c).ok);
    }
    let answers = run_all(|_| 9100);
    assert_eq!(answers.iter().filter(|a| a.ok).count(), 1, "{answers:?}");
    assert_eq!(
        nat_list(&lab).matches("cni:p").count(),
        1,
        "{}",
        nat_list(&lab)
    );
}

#[test]
fn rules_survive_reloads_and_stale_records_touch_nothing_else() {
    require_root!();
    let mut lab = Lab::build(&format!("nbcns-{}", std::process::id()), 1).expect("lab");
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000);
    let _c1 =
        WhoamiServer::spawn(&lab.containers[0].ns, Transport::Tcp, any, "c1 saw").expect("c1");
    let config_port = "[[publish]]\nproto = \"tcp\"\nport = 8095\nto = \"10.77.0.2:4000\"\n";
    lab.start_daemon(exe(), config_port).expect("daemon");
    let c = conf(&lab.pin_dir, C1, tcp(8090, 4000));
    assert!(invoke("ADD", "r1", &c).ok);

    // SIGHUP and a restart fill the maps from the config: the plugin's
    // rules are kept (the daemon reads the owners under the rules lock).
    lab.signal_daemon(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !lab.daemon_log().contains("published port rule(s) applied")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        reach(&lab, 8090).is_ok(),
        "kept through SIGHUP:\n{}",
        lab.daemon_log()
    );
    lab.stop_daemon().expect("stop");
    lab.start_daemon(exe(), config_port).expect("restart");
    assert!(reach(&lab, 8090).is_ok(), "kept through a restart");
    assert!(invoke("CHECK", "r1", &c).ok);

    // A plugin killed after recording and before writing the maps leaves
    // a record of rules that are not there, or that someone else (here
    // the config, to another target) holds: DEL removes neither.
    let stale = netbpf::cni::attach::Attachment {
        pin_dir: lab.pin_dir.clone(),
        network: "nbcn-net".into(),
        container_id: "k1".into(),
        ifname: "eth0".into(),
    };
    let rule = |port: &str| netbpf::owners::OwnedEntry {
        origin: stale.origin(),
        rule: netbpf::owners::OwnedRule::Publish {
            proto: "tcp".into(),
            port: port.into(),
            to: "10.77.0.9:4000".into(),
            address: None,
        },
    };
    netbpf::owners::write(&lab.pin_dir, &stale.owner(), &[rule("8095"), rule("8096")])
        .expect("stale record");
    assert!(invoke("DEL", "k1", &c).ok);
    let seen = reach(&lab, 8095).expect("the config's port stays");
    assert!(seen.starts_with("c1 saw"), "{seen}");
    assert!(reach(&lab, 8090).is_ok(), "r1's port stays");
    assert!(!nat_list(&lab).contains("k1"));
}
