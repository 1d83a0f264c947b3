//! The datapath loaded for the in-kernel bench: maps filled, programs run through BPF_PROG_TEST_RUN.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, DevMapHash, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{ProgramInfo, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use netbpf_common::{
    ContainerEntry, Counter, Endpoint, FlowKey, FlowValue, PUBLISH_KEY_BITS, PublishKey,
    PublishRule, ReplyKey, ReplyValue, RouteUplink, Settings, flow_flags, map_names, proto,
    settings_flags,
};

use crate::{
    config::Config,
    containers::programs as route_programs,
    datapath::{self, programs},
};

use super::packets::*;

/// A loaded (not attached) datapath for test runs.
pub(crate) struct KernelDp {
    pub(crate) ebpf: Ebpf,
}

impl KernelDp {
    pub(crate) fn new(capacity: u32) -> Result<Self> {
        let toml = format!(
            "[uplink]\ninterface = \"eth0\"\naddress = \"{UPLINK}\"\n\
             [[masquerade]]\nsource = \"10.77.0.0/16\"\n\
             [[publish]]\nproto = \"tcp\"\nport = {PUBLISHED_PORT}\nto = \"{C1}:{CONTAINER_PORT}\"\n\
             [conntrack]\ncapacity = {capacity}\n"
        );
        let config = Config::from_toml(&toml).context("bench config")?;
        let mut ebpf = datapath::load(&config).context("loading the eBPF object")?;
        datapath::fill_masquerade(&mut ebpf, &config, UPLINK)?;
        datapath::fill_publish(&mut ebpf, &config, &[UPLINK])?;
        fill_routing(&mut ebpf)?;
        for name in [
            programs::EGRESS,
            programs::INGRESS,
            programs::INSIDE,
            programs::FAST_OUT,
            route_programs::ROUTE_IN,
        ] {
            crate::loader::loaded::<SchedClassifier>(&mut ebpf, name)
                .with_context(|| format!("loading {name}"))?;
        }
        crate::loader::loaded::<Xdp>(&mut ebpf, route_programs::ARP)
            .with_context(|| format!("loading {}", route_programs::ARP))?;
        Ok(Self { ebpf })
    }

    /// Sends translated packets to the stack (`[datapath] fast_path =
    /// false`) or lets them take the fast path.
    pub(crate) fn set_via_stack(&mut self, on: bool) -> Result<()> {
        if on {
            self.settings_flags(0, settings_flags::VIA_STACK)
        } else {
            self.settings_flags(settings_flags::VIA_STACK, 0)
        }
    }

    /// Clears the `clear` bits of `SETTINGS`' flags, then sets `set`.
    fn settings_flags(&mut self, clear: u32, set: u32) -> Result<()> {
        let mut settings: Array<&mut MapData, Settings> = Array::try_from(
            self.ebpf
                .map_mut(map_names::SETTINGS)
                .ok_or_else(|| anyhow!("map SETTINGS missing"))?,
        )?;
        let mut value = settings.get(&0, 0)?;
        value.flags = (value.flags & !clear) | set;
        settings.set(0, &value, 0)?;
        Ok(())
    }

    /// How the uplink's XDP program sends established inbound flows on:
    /// redirect into `XDP_TARGETS` (generic mode; `target` is then the
    /// only device there) or, with `handoff`, the native hand-off to tc
    /// (`XDP_HANDOFF`).
    pub(crate) fn set_xdp(&mut self, handoff: bool, target: u32) -> Result<()> {
        let set = if handoff {
            settings_flags::XDP_HANDOFF
        } else {
            0
        };
        self.settings_flags(settings_flags::NO_XDP | settings_flags::XDP_HANDOFF, set)?;
        let mut targets: DevMapHash<&mut MapData> = DevMapHash::try_from(
            self.ebpf
                .map_mut(map_names::XDP_TARGETS)
                .ok_or_else(|| anyhow!("map XDP_TARGETS missing"))?,
        )?;
        targets
            .insert(target, target, None, 0)
            .map_err(|e| anyhow!("XDP_TARGETS: {e}"))?;
        Ok(())
    }

    /// Points `ROUTE_UPLINK` at the uplink the fast path's FIB answers with.
    pub(crate) fn set_uplink_ifindex(&mut self, ifindex: u32) -> Result<()> {
        let mut up: Array<&mut MapData, RouteUplink> = Array::try_from(
            self.ebpf
                .map_mut(map_names::ROUTE_UPLINK)
                .ok_or_else(|| anyhow!("map ROUTE_UPLINK missing"))?,
        )?;
        let mut value = up.get(&0, 0)?;
        value.ifindex = ifindex;
        up.set(0, &value, 0)?;
        Ok(())
    }

    /// The kernel's view of a loaded program (verifier and JIT sizes).
    pub(crate) fn info(&self, prog: &str) -> Result<ProgramInfo> {
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let info = if prog == route_programs::ARP {
            let x: &Xdp = p.try_into()?;
            x.info()?
        } else {
            let c: &SchedClassifier = p.try_into()?;
            c.info()?
        };
        Ok(info)
    }

    /// The routed forward, warm: `BPF_PROG_TEST_RUN` with repeat 254 on a
    /// TTL-255 frame (every run forwards it and decrements the TTL; the
    /// frame stays addressed to the uplink because the container's MAC is
    /// the uplink's), `calls` times. Checked: `routed_in` grew by exactly
    /// 254 per call, nothing expired, the frame comes out with TTL 1, the
    /// new MACs and a valid header checksum. Returns the per-call averages.
    pub(crate) fn routed_warm(&self, calls: u32) -> Result<Vec<f64>> {
        let pkt = with_ttl_macs(
            tcp_frame(PEER, 443, ROUTED, 40000, ACK),
            255,
            ROUTE_UPLINK_MAC,
            PEER_MAC,
        );
        let want = with_ttl_macs(pkt.clone(), 1, ROUTE_UPLINK_MAC, VETH_MAC);
        let before = self.counter(Counter::RoutedIn)?;
        let expired = self.counter(Counter::RouteTtlExpired)?;
        let mut out = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let (rc, ns, got) = self.run(route_programs::ROUTE_IN, &pkt, ROUTED_RUNS_PER_CALL)?;
            if rc != TC_REDIRECT || got != want || !ip_checksum_ok(&got) {
                bail!(
                    "routed_forward: repeat {ROUTED_RUNS_PER_CALL} gave verdict {rc} and a \
                     different frame; not measuring that path"
                );
            }
            out.push(ns);
        }
        let grew = self.counter(Counter::RoutedIn)? - before;
        if grew != u64::from(calls * ROUTED_RUNS_PER_CALL)
            || self.counter(Counter::RouteTtlExpired)? != expired
        {
            bail!("routed_forward: forwarded {grew} times, expected {calls} × 254");
        }
        Ok(out)
    }

    /// One `BPF_PROG_TEST_RUN`: (verdict, kernel-measured ns per run,
    /// packet out).
    pub(crate) fn run(&self, prog: &str, pkt: &[u8], repeat: u32) -> Result<(u32, f64, Vec<u8>)> {
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let mut out = vec![0u8; pkt.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        // XDP (the ARP program) and tc programs run the same way.
        let r = if prog == route_programs::ARP {
            let x: &Xdp = p.try_into()?;
            x.test_run(opts)
        } else {
            let c: &SchedClassifier = p.try_into()?;
            c.test_run(opts)
        }
        .context("BPF_PROG_TEST_RUN")?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration.as_nanos() as f64, out))
    }

    /// A counter, summed over CPUs.
    pub(crate) fn counter(&self, c: Counter) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::STATS)
            .ok_or_else(|| anyhow!("map STATS missing"))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(stats.get(&(c as u32), 0)?.iter().sum())
    }

    /// Inserts a `CONNTRACK` flow and its reply half, as the kernel opens
    /// one.
    pub(crate) fn insert_flow(
        &mut self,
        key: FlowKey,
        outside: (Ipv4Addr, u16),
        flags: u64,
    ) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::CONNTRACK)
            .ok_or_else(|| anyhow!("map CONNTRACK missing"))?;
        let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
        let value = FlowValue {
            outside_addr: outside.0.octets(),
            outside_port: outside.1,
            flags,
            ..FlowValue::default()
        };
        ct.insert(&key, &value, 0)?;
        self.insert_reply(&key, &value)
    }

    /// Inserts the reply half of the flow `key` with value `value`.
    fn insert_reply(&mut self, key: &FlowKey, value: &FlowValue) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::CONNTRACK_REPLY)
            .ok_or_else(|| anyhow!("map CONNTRACK_REPLY missing"))?;
        let mut replies: HashMap<&mut MapData, ReplyKey, ReplyValue> = HashMap::try_from(map)?;
        let inside = Endpoint::new(key.proto, key.inside_addr, key.inside_port);
        replies.insert(
            &ReplyKey::of_flow(key, value.outside_addr, value.outside_port),
            &ReplyValue::new(inside, value.flags, 0),
            0,
        )?;
        Ok(())
    }

    /// Inserts a `NAT_REVERSE` entry.
    pub(crate) fn insert_reverse(&mut self, outside: Endpoint, inside: Endpoint) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::NAT_REVERSE)
            .ok_or_else(|| anyhow!("map NAT_REVERSE missing"))?;
        let mut rev: HashMap<&mut MapData, Endpoint, Endpoint> = HashMap::try_from(map)?;
        rev.insert(&outside, &inside, 0)?;
        Ok(())
    }

    /// Inserts a one-port `PUBLISH` rule bound to `addr`.
    pub(crate) fn insert_publish(
        &mut self,
        addr: Ipv4Addr,
        port: u16,
        to: (Ipv4Addr, u16),
    ) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::PUBLISH)
            .ok_or_else(|| anyhow!("map PUBLISH missing"))?;
        let mut trie: LpmTrie<&mut MapData, PublishKey, PublishRule> = LpmTrie::try_from(map)?;
        let rule = PublishRule {
            to_addr: to.0.octets(),
            to_port: to.1,
            host_port_min: port,
            host_port_max: port,
            _pad: 0,
        };
        let key = Key::new(
            PUBLISH_KEY_BITS,
            PublishKey::new(proto::TCP, addr.octets(), port),
        );
        trie.insert(&key, &rule, 0)?;
        Ok(())
    }

    /// `repeat` runs of a translating path on a packet that a mirror
    /// entry translates back, so that every run takes the same path (the
    /// kernel reruns the program on the rewritten skb). Checked: `counter`
    /// grew by `repeat`, and the packet came back unchanged (even
    /// `repeat`). Returns ns per run.
    pub(crate) fn ping_pong(
        &self,
        prog: &str,
        pkt: &[u8],
        counter: Counter,
        repeat: u32,
        path: &str,
    ) -> Result<f64> {
        let repeat = repeat & !1;
        let before = self.counter(counter)?;
        let (rc, ns, out) = self.run(prog, pkt, repeat)?;
        let grew = self.counter(counter)? - before;
        if rc != TC_OK || grew != u64::from(repeat) || out != pkt {
            bail!(
                "{path}: ping-pong with repeat {repeat} translated {grew} times (verdict {rc}); \
                 not measuring that path"
            );
        }
        Ok(ns)
    }

    /// Pre-fills `CONNTRACK` and `CONNTRACK_REPLY` with `n` flows (and
    /// their reply halves) that no benchmark packet matches (inside addresses in 10.99.0.0/16,
    /// outside the masquerade CIDR); returns the time it took.
    pub(crate) fn prefill(&mut self, n: u32) -> Result<Duration> {
        let start = Instant::now();
        for i in 0..n {
            // Each flow its own outside endpoint towards its remote port
            // (1–17, which no benchmark packet uses), as the NAT keeps
            // them: distinct reply halves, none on a benchmark flow's
            // tuple.
            let key = FlowKey::new(
                proto::TCP,
                addr_in([10, 99], i % 65536).octets(),
                1024 + (i / 65536) as u16,
                REMOTE.octets(),
                1 + (i / 60000) as u16,
            );
            let value = FlowValue {
                outside_addr: UPLINK.octets(),
                outside_port: 1024 + (i % 60000) as u16,
                flags: flow_flags::SEEN_OUT | flow_flags::SEEN_IN,
                ..FlowValue::default()
            };
            let map = self
                .ebpf
                .map_mut(map_names::CONNTRACK)
                .ok_or_else(|| anyhow!("map CONNTRACK missing"))?;
            let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
            ct.insert(&key, &value, 0)
                .with_context(|| format!("pre-filling CONNTRACK entry {i}"))?;
            self.insert_reply(&key, &value)
                .with_context(|| format!("pre-filling CONNTRACK_REPLY entry {i}"))?;
        }
        Ok(start.elapsed())
    }
}

/// `ROUTE_UPLINK` and `CONTAINERS` as the daemon writes them for one
/// routed container (see `ROUTED`), like netbpf/tests/routing.rs does.
pub(crate) fn fill_routing(ebpf: &mut Ebpf) -> Result<()> {
    let mut up: Array<&mut MapData, RouteUplink> = Array::try_from(
        ebpf.map_mut(map_names::ROUTE_UPLINK)
            .ok_or_else(|| anyhow!("map ROUTE_UPLINK missing"))?,
    )?;
    up.set(
        0,
        &RouteUplink {
            ifindex: UPLINK_IFINDEX,
            mac: ROUTE_UPLINK_MAC,
            _pad: [0; 2],
        },
        0,
    )?;
    let mut c: HashMap<&mut MapData, [u8; 4], ContainerEntry> = HashMap::try_from(
        ebpf.map_mut(map_names::CONTAINERS)
            .ok_or_else(|| anyhow!("map CONTAINERS missing"))?,
    )?;
    c.insert(
        &ROUTED.octets(),
        &ContainerEntry {
            ifindex: ROUTED_IFINDEX,
            host_mac: VETH_MAC,
            mac: ROUTE_UPLINK_MAC,
        },
        0,
    )?;
    Ok(())
}
