//! ICMP errors through the NAT (`netbpf-ebpf/src/icmp.rs`), described.

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::{Counter, Endpoint, FlowKey, proto};

use crate::maps::proto_name;

use super::{lookup::*, model::*, translate::*};

pub(super) fn icmp_type_name(t: u8) -> String {
    ICMP_ERROR_TYPES
        .iter()
        .find(|(n, _)| *n == t)
        .map_or_else(|| format!("type {t}"), |(_, name)| (*name).to_owned())
}

pub(super) fn quoted_desc(e: &IcmpError) -> String {
    let what = if e.quoted.proto == proto::ICMP {
        format!(
            "icmp echo request {} → {} (id {})",
            e.quoted.src.ip(),
            e.quoted.dst.ip(),
            e.quoted.src.port()
        )
    } else {
        format!(
            "{} {} → {}",
            proto_name(e.quoted.proto),
            e.quoted.src,
            e.quoted.dst
        )
    };
    format!("ICMP {} quoting {what}", icmp_type_name(e.icmp_type))
}

/// `icmp::error_in` (then `nat::guard_inside` when it passes).
pub(super) fn icmp_in(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    e: &IcmpError,
    steps: &mut Vec<Step>,
) -> Outcome {
    let qt = &e.quoted;
    let desc = quoted_desc(e);
    let pass = |steps: &mut Vec<Step>, why: String| {
        steps.push(Step {
            program: INGRESS,
            detail: format!("{desc}: {why}: not translated"),
        });
        guard_inside(rules, m, q, steps)
    };
    if q.dst.ip() != qt.src.ip() {
        return pass(
            steps,
            format!(
                "the quoted source {} is not the outer destination {}, so it is not about a packet that left through this NAT",
                qt.src.ip(),
                q.dst.ip()
            ),
        );
    }
    let (sport, dport) = match qt.proto {
        proto::TCP | proto::UDP => (qt.src.port(), qt.dst.port()),
        proto::ICMP => (qt.src.port(), 0),
        p => return pass(steps, format!("quoted protocol {p} is not translated")),
    };
    let outside = Endpoint::new(qt.proto, qt.src.ip().octets(), sport);
    let (inside, how) = match m.reverse(&outside) {
        Some(i) => (
            ep(&i),
            format!("NAT_REVERSE: {} belongs to {}", ep(&outside), ep(&i)),
        ),
        None if qt.proto == proto::ICMP => {
            return pass(
                steps,
                format!("no mapping holds ICMP id {sport} on {}", qt.src.ip()),
            );
        }
        None => match rules.published(qt.proto, *qt.src.ip(), sport) {
            Some((rule, _)) => {
                let to =
                    SocketAddrV4::new(Ipv4Addr::from(rule.to_addr), rule.container_port(sport));
                (
                    to,
                    format!(
                        "published port {} {} → {to}",
                        proto_name(qt.proto),
                        ep(&outside)
                    ),
                )
            }
            None => {
                return pass(
                    steps,
                    format!(
                        "no NAT_REVERSE entry and no published port for {}",
                        ep(&outside)
                    ),
                );
            }
        },
    };
    let key = FlowKey::new(
        qt.proto,
        inside.ip().octets(),
        inside.port(),
        qt.dst.ip().octets(),
        dport,
    );
    let Some(v) = m.flow(&key) else {
        steps.push(Step {
            program: INGRESS,
            detail: format!(
                "{desc}; {how}, but {inside} has no flow with {}: an error never opens one (RFC 5508 REQ-4)",
                SocketAddrV4::new(*qt.dst.ip(), dport)
            ),
        });
        return Outcome::dropped(Counter::DropIcmpNoFlow);
    };
    steps.push(Step {
        program: INGRESS,
        detail: format!(
            "{desc}; {how}; conntrack hit: {}; outer destination and quoted source translated back to {inside} (errors never refresh a flow)",
            flow_desc(&key, &v)
        ),
    });
    Outcome::Translated {
        src: addr0(*q.src.ip()),
        dst: addr0(*inside.ip()),
        counter: Counter::IcmpErrorsTranslated.name(),
        quoted: Some(QuotedAfter {
            src: inside,
            dst: qt.dst,
        }),
    }
}

/// `icmp::error_out`.
pub(super) fn icmp_out(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    e: &IcmpError,
    steps: &mut Vec<Step>,
) -> Outcome {
    let qt = &e.quoted;
    let desc = quoted_desc(e);
    let src = *q.src.ip();
    // `nat::untranslatable`.
    let untranslatable = |steps: &mut Vec<Step>, why: String| {
        if let Some(r) = rules.masq(src) {
            steps.push(Step {
                program: EGRESS,
                detail: format!(
                    "{desc}: {why}; the sender {src} is in masquerade CIDR {}/{} and must not leave with its private address",
                    Ipv4Addr::from(r.source),
                    r.prefix_len
                ),
            });
            Outcome::dropped(Counter::DropIcmpNoFlow)
        } else {
            steps.push(Step {
                program: EGRESS,
                detail: format!("{desc}: {why}: left alone"),
            });
            Outcome::Passed
        }
    };
    if qt.proto != proto::TCP && qt.proto != proto::UDP {
        return untranslatable(
            steps,
            "going out, only errors about TCP and UDP are translated".into(),
        );
    }
    // The quoted packet went remote → inside.
    let key = FlowKey::new(
        qt.proto,
        qt.dst.ip().octets(),
        qt.dst.port(),
        qt.src.ip().octets(),
        qt.src.port(),
    );
    let Some(v) = m.flow(&key) else {
        return untranslatable(
            steps,
            format!(
                "no flow {} ↔ {} (the quoted packet is remote → inside)",
                qt.dst, qt.src
            ),
        );
    };
    let from_container = src == *qt.dst.ip();
    if !from_container && let Some(r) = rules.masq(src) {
        steps.push(Step {
            program: EGRESS,
            detail: format!(
                "{desc}; conntrack hit: {}; but the error comes from {src}, another inside host (masquerade CIDR {}/{}), not the flow's container",
                flow_desc(&key, &v),
                Ipv4Addr::from(r.source),
                r.prefix_len
            ),
        });
        return Outcome::dropped(Counter::DropIcmpNoFlow);
    }
    let outside = sa(v.outside_addr, v.outside_port);
    let outer = if from_container {
        format!(", and the outer source {src} → {}", outside.ip())
    } else {
        format!(" (the outer source {src} is not the container: kept)")
    };
    steps.push(Step {
        program: EGRESS,
        detail: format!(
            "{desc}; conntrack hit from the quoted packet: {}; quoted destination → {outside}{outer}",
            flow_desc(&key, &v)
        ),
    });
    Outcome::Translated {
        src: addr0(if from_container { *outside.ip() } else { src }),
        dst: addr0(*q.dst.ip()),
        counter: Counter::IcmpErrorsTranslated.name(),
        quoted: Some(QuotedAfter {
            src: qt.src,
            dst: outside,
        }),
    }
}
