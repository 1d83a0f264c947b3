//! The daemon lock (one daemon per pin directory). It needs root for
//! `/run/netbpf`, and so the same guard as the other root tests: skipped
//! when not root, a failure under CI.

#[macro_use]
mod common;

use std::{fs, path::PathBuf};

use netbpf::pins::{DaemonLock, PinsError};

#[test]
fn a_second_daemon_is_refused_and_the_lock_frees_on_drop() {
    require_root!();
    let dir = PathBuf::from(format!("/sys/fs/bpf/nbt-lock-{}", std::process::id()));
    let first = DaemonLock::acquire(&dir).expect("first");
    assert!(matches!(
        DaemonLock::acquire(&dir),
        Err(PinsError::Locked { .. })
    ));
    let path = first.path().to_owned();
    drop(first);
    let again = DaemonLock::acquire(&dir).expect("free again");
    drop(again);
    let _ = fs::remove_file(path);
}

/// The table walks behind `conntrack list`, metrics and the expiry pass
/// read the pinned maps in batches (BPF_MAP_LOOKUP_BATCH) and see exactly
/// what a key-by-key walk sees.
#[test]
fn pinned_tables_are_read_whole_in_batches() {
    require_root!();
    use aya::maps::{HashMap, MapData};
    use netbpf::{config::Config, datapath, maps::NatMaps};
    use netbpf_common::{FlowKey, FlowValue, map_names, proto};

    let dir = PathBuf::from(format!("/sys/fs/bpf/nbt-batch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("pin dir");
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let config = Config::from_toml(
        "[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n[conntrack]\ncapacity = 16384\n",
    )
    .expect("config");
    let mut ebpf = datapath::load_with_pins(&config, Some(&dir)).expect("load");
    let n = 10_000u32;
    {
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> =
            HashMap::try_from(ebpf.map_mut(map_names::CONNTRACK).expect("ct")).expect("type");
        for i in 0..n {
            let key = FlowKey::new(
                proto::UDP,
                [10, 77, (i >> 8) as u8, i as u8],
                4000,
                [198, 51, 100, 7],
                53,
            );
            let value = FlowValue {
                outside_port: i as u16,
                ..Default::default()
            };
            ct.insert(&key, &value, 0).expect("insert");
        }
    }
    let nat = NatMaps::open_pinned(&dir).expect("open pinned");
    let mut batched = nat.flows().expect("batched read");
    let mut walked: Vec<(FlowKey, FlowValue)> =
        nat.conntrack.iter().map(|r| r.expect("entry")).collect();
    assert_eq!(batched.len(), n as usize);
    batched.sort_by_key(|(k, _)| k.inside_addr);
    walked.sort_by_key(|(k, _)| k.inside_addr);
    assert_eq!(batched, walked);
    // And the batch call itself is supported here (not the fallback).
    let direct = netbpf::batch::entries(&nat.conntrack).expect("batch call");
    assert_eq!(direct.map(|v| v.len()), Some(n as usize));
}
