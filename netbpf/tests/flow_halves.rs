//! A flow is two entries (`CONNTRACK` and its reply half in
//! `CONNTRACK_REPLY`); userspace shows, expires and drops them as one, and
//! removes halves whose flow is gone. Needs root (a pinned datapath), and
//! so the same guard as the other root tests: skipped when not root, a
//! failure under CI.

#[macro_use]
mod common;

use std::{fs, path::PathBuf};

use aya::maps::{HashMap, MapData};
use netbpf::{
    config::{Config, Timeouts},
    conntrack::{Orphans, collect_garbage},
    datapath,
    maps::NatMaps,
};
use netbpf_common::{
    Endpoint, FlowKey, FlowValue, ReplyKey, ReplyValue, flow_flags, map_names, proto,
};

const UP: [u8; 4] = [203, 0, 113, 1];
const REMOTE: [u8; 4] = [198, 51, 100, 7];

/// A pinned datapath in a pin directory of this test's own, removed at
/// the end.
struct Pinned {
    dir: PathBuf,
    ebpf: aya::Ebpf,
}

impl Pinned {
    fn new(name: &str) -> Pinned {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/nbt-halves-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("pin dir");
        let config = Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n[conntrack]\ncapacity = 1024\n",
        )
        .expect("config");
        let ebpf = datapath::load_with_pins(&config, Some(&dir)).expect("load");
        Pinned { dir, ebpf }
    }

    /// Writes a UDP flow from 10.77.0.`host`:`port` to REMOTE:53 on the
    /// uplink's `port`, last seen at `out_ns` going out, and (if
    /// `in_ns`) its reply half, last seen then.
    fn flow(&mut self, host: u8, port: u16, out_ns: u64, in_ns: Option<u64>) -> FlowKey {
        let key = FlowKey::new(proto::UDP, [10, 77, 0, host], port, REMOTE, 53);
        let value = FlowValue {
            outside_addr: UP,
            outside_port: port,
            flags: flow_flags::SEEN_OUT,
            last_seen_ns: out_ns,
            packets_out: 1,
            ..Default::default()
        };
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map_mut(map_names::CONNTRACK).expect("ct")).expect("type");
        ct.insert(&key, &value, 0).expect("flow");
        if let Some(in_ns) = in_ns {
            let inside = Endpoint::new(proto::UDP, key.inside_addr, port);
            self.half(
                ReplyKey::of_flow(&key, UP, port),
                ReplyValue {
                    flags: flow_flags::SEEN_IN,
                    last_seen_ns: in_ns,
                    packets: 2,
                    ..ReplyValue::new(inside, 0, in_ns)
                },
            );
        }
        key
    }

    fn half(&mut self, key: ReplyKey, value: ReplyValue) {
        let mut replies: HashMap<&mut MapData, ReplyKey, ReplyValue> =
            HashMap::try_from(self.ebpf.map_mut(map_names::CONNTRACK_REPLY).expect("cr"))
                .expect("type");
        replies.insert(&key, &value, 0).expect("half");
    }

    fn halves(&self) -> Vec<ReplyKey> {
        let replies: HashMap<&MapData, ReplyKey, ReplyValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK_REPLY).expect("cr"))
                .expect("type");
        replies.keys().map(|k| k.expect("key")).collect()
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn a_flow_is_shown_as_one_with_its_reply_half() {
    require_root!();
    let mut dp = Pinned::new("show");
    let key = dp.flow(2, 5353, 10 * S, Some(20 * S));
    let nat = NatMaps::open_pinned(&dp.dir).expect("open");
    let flows = nat.flows().expect("flows");
    assert_eq!(flows.len(), 1, "one flow, not two entries");
    let (k, v) = flows[0];
    assert_eq!(k, key);
    assert_eq!(v.flags, flow_flags::SEEN_OUT | flow_flags::SEEN_IN);
    assert_eq!(v.last_seen_ns, 20 * S, "the later half");
    assert_eq!((v.packets_out, v.packets_in), (1, 2));
    assert_eq!(nat.flow(&key), Some(v));
}

#[test]
fn expiry_removes_both_halves_and_the_halves_left_without_a_flow() {
    require_root!();
    let mut dp = Pinned::new("gc");
    let timeouts = Timeouts::default();
    let udp = timeouts.udp.as_nanos() as u64;
    let now = 1000 * S + udp;
    // Idle out for longer than the UDP timeout, but a reply came in
    // recently: alive.
    let alive = dp.flow(2, 5000, S, Some(now - S));
    // Both halves idle: expired. And one that never had a reply half
    // (nothing came back, or one packet opened it).
    let expired = dp.flow(3, 5001, S, Some(2 * S));
    let lone = dp.flow(6, 5002, S, None);
    // A half whose flow is gone (the LRU map evicted it), and one left by an earlier
    // flow on the tuple that another container's flow now holds.
    let orphan = ReplyKey::new(proto::UDP, REMOTE, 53, UP, 6000);
    dp.half(
        orphan,
        ReplyValue::new(Endpoint::new(proto::UDP, [10, 77, 0, 9], 6000), 0, now),
    );
    let held = dp.flow(4, 7000, now, None);
    let stale = ReplyKey::of_flow(&held, UP, 7000);
    dp.half(
        stale,
        ReplyValue::new(Endpoint::new(proto::UDP, [10, 77, 0, 5], 7000), 0, now),
    );

    let mut nat = NatMaps::open_pinned(&dp.dir).expect("open");
    let report = collect_garbage(&mut nat, &timeouts, now, &mut Orphans::new()).expect("gc");
    assert_eq!(report.flows, 2, "only the idle flows");
    let keys: Vec<FlowKey> = nat
        .flows()
        .expect("flows")
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert!(keys.contains(&alive), "kept alive by its reply half");
    assert!(keys.contains(&held));
    assert!(!keys.contains(&expired));
    assert!(!keys.contains(&lone), "a flow without a half expires too");
    let halves = dp.halves();
    assert_eq!(
        halves,
        vec![ReplyKey::of_flow(&alive, UP, 5000)],
        "the expired flow's half, the orphan and the stale half are gone"
    );
}
