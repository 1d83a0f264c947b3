//! What several commands share: the `--json` switch and the parser of a
//! protocol name (`tcp`, `udp`, `icmp` or a number).

use clap::Args;
use netbpf::conntrack;

/// Text or JSON output.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A protocol by name (`tcp`, `udp`, `icmp`, any case) or number: the
/// value parser of `--proto` and of explain's PROTO.
pub fn proto(name: &str) -> Result<u8, String> {
    conntrack::parse_proto(name)
        .ok_or_else(|| format!("{name:?} is not a protocol (tcp, udp, icmp)"))
}
