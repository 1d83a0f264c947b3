//! Published ports and masquerade on a lab datapath: ADD, CHECK, DEL,
//! GC, concurrent invocations, reloads and stale records.

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf::lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami};
use serde_json::json;

use super::{
    Answer, C1,
    common::{cli_pins, exe},
    conf, invoke, invoke_with, nat_lab, nat_list, prev_result, reach, tcp,
};

#[test]
fn add_check_del_publish_exactly_what_was_asked() {
    require_root!();
    let (lab, _servers) = nat_lab("a");
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
    let (lab, _servers) = nat_lab("m");
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
