//! Bad input gives the spec's error codes; no datapath needed.

use std::path::Path;

use serde_json::json;

use super::{C1, RemoveOnDrop, common::exe, conf, invoke, invoke_with, tcp};

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
