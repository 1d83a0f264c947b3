//! `netbpf explain`: its arguments, turned into an
//! [`netbpf::explain::Query`] and a direction; the decisions are the
//! library's.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use netbpf::explain::{self as ex, Direction, Query, TcpFlags};
use netbpf_common::proto::ICMP;

use super::shared;

/// `--tcp-flags`: whether the TCP packet may open a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpFlagsArg {
    /// An opening SYN.
    Syn,
    /// Anything else: mid-connection, SYN-ACK, FIN, RST.
    Ack,
}

impl From<TcpFlagsArg> for TcpFlags {
    fn from(flags: TcpFlagsArg) -> TcpFlags {
        match flags {
            TcpFlagsArg::Syn => TcpFlags::Syn,
            TcpFlagsArg::Ack => TcpFlags::NotSyn,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// tcp, udp or icmp (for icmp the ports are echo identifiers).
    #[arg(value_parser = shared::proto)]
    proto: u8,
    /// Source ADDR:PORT.
    src: String,
    /// Destination ADDR:PORT.
    dst: String,
    /// The interface the packet arrives on: the uplink means from outside,
    /// a routed container's veth from that container, any other from a
    /// (masqueraded) container. Default: guessed from the addresses.
    #[arg(long = "in", value_name = "IFACE")]
    in_iface: Option<String>,
    /// TCP: whether the packet is an opening SYN (`syn`) or anything else
    /// (`ack`: mid-connection, SYN-ACK, FIN, RST).
    #[arg(long, value_enum, default_value_t = TcpFlagsArg::Syn)]
    tcp_flags: TcpFlagsArg,
    /// IP TTL of the packet as it arrives (routing forwards only above 1).
    #[arg(long, default_value_t = ex::DEFAULT_TTL)]
    ttl: u8,
    /// The packet is an ICMP error (PROTO must be icmp; SRC and DST are the
    /// outer addresses, ports ignored): dest-unreach (3), time-exceeded
    /// (11) or parameter-problem (12). Needs --quoted.
    #[arg(long, value_name = "TYPE", requires = "quoted", value_parser = icmp_error_type)]
    icmp_error: Option<u8>,
    /// The packet the ICMP error quotes: PROTO SRC:PORT DST:PORT (for icmp,
    /// an echo request whose SRC port is its identifier).
    #[arg(long, num_args = 3, value_names = ["PROTO", "SRC:PORT", "DST:PORT"], requires = "icmp_error")]
    quoted: Option<Vec<String>>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// An ICMP error type by name or number: the value parser of `--icmp-error`.
fn icmp_error_type(t: &str) -> Result<u8, String> {
    ex::ICMP_ERROR_TYPES
        .iter()
        .find(|(n, name)| *name == t || n.to_string() == t)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            format!(
                "{t:?}: expected dest-unreach (3), time-exceeded (11) or parameter-problem (12)"
            )
        })
}

/// `ADDR:PORT`, or for ICMP a bare `ADDR` (identifier 0).
fn endpoint(what: &str, s: &str, proto: u8) -> Result<SocketAddrV4> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    // ICMP endpoints may leave the port (identifier) out.
    match s.parse::<Ipv4Addr>() {
        Ok(ip) if proto == ICMP => Ok(SocketAddrV4::new(ip, 0)),
        _ => bail!("{what} {s:?}: expected IPV4:PORT"),
    }
}

/// The ICMP error of `--icmp-error TYPE --quoted PROTO SRC DST`, if given.
fn icmp_error(args: &ExplainArgs) -> Result<Option<ex::IcmpError>> {
    let (Some(icmp_type), Some(quoted)) = (args.icmp_error, &args.quoted) else {
        return Ok(None);
    };
    if args.proto != ICMP {
        bail!("--icmp-error: PROTO must be icmp (the error's own protocol)");
    }
    let [qp, qs, qd] = quoted.as_slice() else {
        bail!("--quoted: expected PROTO SRC:PORT DST:PORT");
    };
    let qproto = shared::proto(qp).map_err(anyhow::Error::msg)?;
    Ok(Some(ex::IcmpError {
        icmp_type,
        quoted: ex::Quoted {
            proto: qproto,
            src: endpoint("--quoted SRC", qs, qproto)?,
            dst: endpoint("--quoted DST", qd, qproto)?,
        },
    }))
}

pub fn run(args: ExplainArgs, pin_dir: &Path) -> Result<()> {
    let icmp_error = icmp_error(&args)?;
    let iif = match &args.in_iface {
        Some(iface) => Some(netbpf::netdev::ifindex(iface)?),
        None => None,
    };
    let query = Query {
        proto: args.proto,
        src: endpoint("SRC", &args.src, args.proto)?,
        dst: endpoint("DST", &args.dst, args.proto)?,
        tcp: args.tcp_flags.into(),
        ttl: args.ttl,
        iif,
        icmp_error,
    };
    let live = ex::LiveMaps::open_pinned(pin_dir)?;
    let rules = ex::Rules::read(pin_dir, &live.nat)?;
    let direction = match &args.in_iface {
        None => ex::infer_direction(&rules, &live, &query),
        Some(iface) => {
            if ex::is_uplink(&rules, iface)? {
                Direction::Ingress
            } else if iif.is_some_and(|i| ex::Lookup::container_if(&live, i).is_some()) {
                Direction::FromRoutedContainer
            } else {
                Direction::FromContainer
            }
        }
    };
    let explanation = ex::explain(&rules, &live, &query, direction);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{explanation}");
    }
    Ok(())
}
