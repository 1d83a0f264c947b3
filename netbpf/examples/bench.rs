//! `cargo xtask bench` runs this as root: the benchmark of
//! docs/performance.md (in-kernel cost per path, router cost against
//! iptables-nft, install time, SYN flood, BGP convergence). Prints the
//! markdown summary.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// Command line of the bench.
#[derive(Parser)]
#[command(name = "bench", about = "netbpf benchmark (see docs/performance.md)")]
struct Cli {
    /// The reduced matrix: fewer samples, one run, 1 s phases.
    #[arg(long)]
    quick: bool,
    /// Folder the timestamped result folder is created in.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// The netbpf binary started as the daemon in the router bench.
    #[arg(long, default_value = "target/release/netbpf")]
    netbpf: PathBuf,
    /// The command line to record (default: this process's).
    #[arg(long)]
    command: Option<String>,
    /// Skip the router bench (netbpf vs iptables with trafgen).
    #[arg(long)]
    skip_router: bool,
    /// Run only one part: kernel, router, install, flood or bgp.
    #[arg(long, value_name = "PART")]
    only: Option<netbpf::bench::Part>,
    /// The router bench's variants to run, comma-separated (default: all),
    /// e.g. xdp-floor,plain,iptables-nft,netbpf-fast,netbpf-native.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    variants: Vec<String>,
    /// Instead of the bench: run one warm in-kernel path back to back (for
    /// `perf record -e cpu-clock` / `bpftool prog`), e.g. dnat_established.
    #[arg(long, value_name = "PATH")]
    spin: Option<String>,
    /// How long `--spin` runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Instead of the bench: write the summary of the result folder DIR
    /// again from its bench.json (the router part's figures recomputed).
    #[arg(long, value_name = "DIR")]
    render: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.spin {
        return match netbpf::bench::spin(path, cli.seconds) {
            Ok(ns) => {
                println!("{path}: {ns:.1} ns per run (kernel-timed mean)");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("bench: error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(dir) = &cli.render {
        return finish(netbpf::bench::render(dir));
    }
    let command = cli
        .command
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    let opts = netbpf::bench::Options {
        quick: cli.quick,
        out_dir: cli.out,
        netbpf_exe: cli.netbpf,
        command,
        skip_router: cli.skip_router,
        only: cli.only,
        variants: cli.variants,
    };
    finish(netbpf::bench::run(&opts))
}

/// Prints the summary, or the error, and says how the bench ended.
fn finish(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
