//! The netbpf config an import writes, with the notes that explain it.

use std::fmt::Write as _;

use super::{sysctl::*, walk::*};

/// Merges Docker's one-rule-per-port expansion of a published range back
/// into ranges: same protocol, host address and container address, host
/// and container ports both consecutive.
pub(crate) fn merge_ranges(mut entries: Vec<PublishEntry>) -> Vec<PublishEntry> {
    entries.sort_by_key(|e| (e.proto.number(), e.address, e.port.start));
    let mut out: Vec<PublishEntry> = Vec::new();
    for e in entries {
        if let Some(p) = out.last_mut()
            && p.proto == e.proto
            && p.address == e.address
            && p.to_addr == e.to_addr
            && u32::from(p.port.end) + 1 == u32::from(e.port.start)
            && u32::from(p.to_port) + p.port.len() == u32::from(e.to_port)
        {
            p.port.end = e.port.end;
            p.origin.extend(e.origin);
            continue;
        }
        out.push(e);
    }
    out
}

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn render(
    uplink: &str,
    masq: &[MasqEntry],
    publish: &[PublishEntry],
    timeouts: Option<SysctlTimeouts>,
    notes: &[String],
) -> String {
    let mut s = String::new();
    s.push_str(
        "# netbpf config imported from an iptables-save dump (`netbpf import iptables-save`).\n",
    );
    for n in notes {
        let _ = writeln!(s, "# note: {n}");
    }
    s.push_str("\n[uplink]\n");
    let _ = writeln!(s, "interface = {}", quote(uplink));
    match masq.iter().find_map(|m| m.address) {
        Some(a) => {
            let _ = writeln!(s, "address = \"{a}\"  # SNAT --to-source");
        }
        None => s.push_str("# address: the interface's first IPv4 address, as MASQUERADE uses\n"),
    }
    for m in masq {
        let _ = writeln!(s, "\n# line {}: {}", m.line, m.text);
        s.push_str("[[masquerade]]\n");
        let _ = writeln!(s, "source = \"{}\"", m.source);
        if let Some(p) = m.ports {
            let _ = writeln!(s, "ports = \"{p}\"");
        }
    }
    for p in publish {
        s.push('\n');
        for (line, text) in &p.origin {
            let _ = writeln!(s, "# line {line}: {text}");
        }
        s.push_str("[[publish]]\n");
        let _ = writeln!(s, "proto = \"{}\"", p.proto);
        if p.port.start == p.port.end {
            let _ = writeln!(s, "port = {}", p.port.start);
        } else {
            let _ = writeln!(s, "port = \"{}\"", p.port);
        }
        let _ = writeln!(s, "to = \"{}:{}\"", p.to_addr, p.to_port);
        if let Some(a) = p.address {
            let _ = writeln!(s, "address = \"{a}\"");
        }
    }
    s.push('\n');
    match timeouts {
        None => s.push_str(
            "# conntrack timeouts: netbpf's RFC defaults (UDP 5m, TCP established 2h4m, TCP \
             transitory 4m, ICMP 60s);\n# --adopt-sysctl-timeouts takes the kernel's \
             nf_conntrack_*_timeout sysctls instead.\n",
        ),
        Some(t) => {
            s.push_str(
                "# conntrack timeouts: adopted from the kernel's nf_conntrack_*_timeout sysctls \
                 (--adopt-sysctl-timeouts)\n[conntrack]\n",
            );
            for (key, value, from) in [
                ("udp_timeout", t.udp, "nf_conntrack_udp_timeout_stream"),
                (
                    "tcp_established_timeout",
                    t.tcp_established,
                    "nf_conntrack_tcp_timeout_established",
                ),
                (
                    "tcp_transitory_timeout",
                    t.tcp_transitory,
                    "the longest of nf_conntrack_tcp_timeout_{syn_sent,syn_recv,fin_wait,close_wait,last_ack,time_wait}",
                ),
                ("icmp_timeout", t.icmp, "nf_conntrack_icmp_timeout"),
            ] {
                let _ = writeln!(s, "{key} = {}  # {from}", value.as_secs());
            }
        }
    }
    s
}
