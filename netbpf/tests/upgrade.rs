//! Pinned maps a restart cannot reuse as they are (an older netbpf's
//! layout, another `[conntrack] capacity`) are made anew with their
//! entries carried over, instead of the restart being refused. Needs root
//! (bpffs and BPF maps); pins go under `/sys/fs/bpf/nbt-upgrade-<test>-<pid>`
//! and are removed on drop.

#[macro_use]
mod common;

use std::{ffi::CString, fs, path::PathBuf};

use aya::maps::{HashMap, MapData, MapInfo, MapType};
use netbpf::{config::Config, datapath};
use netbpf_common::{FlowKey, FlowValue, map_names, proto};

/// A pin directory removed with everything in it when dropped.
struct PinDir(PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/nbt-upgrade-{test}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("pin dir on bpffs");
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(capacity: u32) -> Config {
    Config::from_toml(&format!(
        "[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n\
         [[masquerade]]\nsource = \"10.77.0.0/24\"\n\
         [conntrack]\ncapacity = {capacity}\n"
    ))
    .expect("config")
}

fn flow_key() -> FlowKey {
    FlowKey::new(proto::TCP, [10, 77, 0, 2], 40000, [198, 51, 100, 7], 443)
}

fn conntrack_info(dir: &PinDir) -> MapInfo {
    MapInfo::from_pin(dir.0.join(map_names::CONNTRACK)).expect("pinned CONNTRACK")
}

fn flows(ebpf: &aya::Ebpf) -> Vec<(FlowKey, FlowValue)> {
    let map: HashMap<&MapData, FlowKey, FlowValue> =
        HashMap::try_from(ebpf.map(map_names::CONNTRACK).expect("ct")).expect("type");
    map.iter().map(|r| r.expect("entry")).collect()
}

#[test]
fn a_changed_capacity_keeps_the_flows() {
    require_root!();
    let dir = PinDir::new("capacity");
    let value = FlowValue {
        outside_addr: [203, 0, 113, 1],
        outside_port: 40000,
        flags: 0x3,
        ack_out: 7,
        ..Default::default()
    };
    {
        let mut ebpf = datapath::load_with_pins(&config(1024), Some(&dir.0)).expect("first load");
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> =
            HashMap::try_from(ebpf.map_mut(map_names::CONNTRACK).expect("ct")).expect("type");
        ct.insert(&flow_key(), &value, 0).expect("flow");
    }
    // Before: "pinned map CONNTRACK is incompatible (max_entries)".
    let ebpf = datapath::load_with_pins(&config(2048), Some(&dir.0)).expect("restart");
    assert_eq!(conntrack_info(&dir).max_entries(), 2048);
    assert_eq!(flows(&ebpf), vec![(flow_key(), value)]);
}

/// Makes a pinned `BPF_MAP_TYPE_HASH` named CONNTRACK with the first
/// version's 64-byte values, holding one flow, with raw bpf(2) calls (the
/// shape a datapath pinned by netbpf 0.1 has).
fn pin_first_version_conntrack(dir: &PinDir, value: &[u8; 64]) {
    fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
        // SAFETY: `attr` is a zero-initialised bpf_attr prefix of the
        // given size, with the fields of `cmd` filled in.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let mut attr = [0u8; 48];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_MAP_TYPE_HASH
    attr[4..8].copy_from_slice(&16u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&64u32.to_ne_bytes());
    attr[12..16].copy_from_slice(&1024u32.to_ne_bytes());
    attr[28..37].copy_from_slice(b"CONNTRACK");
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let key = flow_key();
    // SAFETY: FlowKey is 16 bytes of plain data.
    let key_bytes: [u8; 16] = unsafe { std::mem::transmute(key) };
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key_bytes.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value.as_ptr() as u64).to_ne_bytes());
    let rc = bpf(BPF_MAP_UPDATE_ELEM, &mut attr);
    assert_eq!(rc, 0, "update: {}", std::io::Error::last_os_error());
    let path = CString::new(
        dir.0
            .join(map_names::CONNTRACK)
            .to_str()
            .expect("utf-8")
            .as_bytes(),
    )
    .expect("path");
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    let rc = bpf(BPF_OBJ_PIN, &mut attr);
    assert_eq!(rc, 0, "pin: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is the map's descriptor, owned here; the pin keeps it.
    unsafe { libc::close(fd as libc::c_int) };
}

#[test]
fn a_first_version_conntrack_is_carried_into_the_new_layout() {
    require_root!();
    let dir = PinDir::new("layout");
    let mut v1 = [0u8; 64];
    v1[0..4].copy_from_slice(&[203, 0, 113, 1]); // outside_addr
    v1[4..6].copy_from_slice(&40000u16.to_ne_bytes()); // outside_port
    v1[8..16].copy_from_slice(&0x3u64.to_ne_bytes()); // flags
    v1[24..32].copy_from_slice(&99u64.to_ne_bytes()); // last_seen_ns
    v1[56..64].copy_from_slice(&1234u64.to_ne_bytes()); // bytes_in
    pin_first_version_conntrack(&dir, &v1);
    assert_eq!(
        conntrack_info(&dir).map_type().expect("type"),
        MapType::Hash
    );
    // Before: "pinned map CONNTRACK is incompatible", and no restart.
    let ebpf = datapath::load_with_pins(&config(1024), Some(&dir.0)).expect("restart");
    assert_eq!(
        conntrack_info(&dir).map_type().expect("type"),
        MapType::LruHash,
        "made anew in the new layout"
    );
    let want = FlowValue {
        outside_addr: [203, 0, 113, 1],
        outside_port: 40000,
        flags: 0x3,
        last_seen_ns: 99,
        bytes_in: 1234,
        ..Default::default()
    };
    assert_eq!(flows(&ebpf), vec![(flow_key(), want)]);
}
