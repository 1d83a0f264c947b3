//! `cargo xtask bench`: builds the release binaries and runs the benchmark
//! (netbpf's `bench` example, code in `netbpf/src/bench.rs` and
//! `netbpf/src/bench/flood.rs`) as root.
//! Results go to `results/<timestamp>/` (bench.json, summary.md,
//! plot.svg; `results/latest` points at the newest); the summary is
//! printed. docs/performance.md explains the method.

use anyhow::{Context as _, Result, bail};

use crate::{Context, NETBPF, cmd::Cmd, setup, target_dir};

/// The example that holds the bench's command line.
const BENCH_EXAMPLE: &str = "bench";

/// Runs the bench; `quick` is the reduced matrix (under two minutes once
/// built); `only` names the one part to run (kernel, router, install,
/// flood, bgp); `variants` the router bench's variants (comma-separated).
pub fn run(
    ctx: &Context,
    quick: bool,
    skip_router: bool,
    only: Option<&str>,
    variants: Option<&str>,
) -> Result<()> {
    if !setup::is_root()? {
        bail!(
            "`cargo xtask bench` must run as root: it loads eBPF programs, creates network \
             namespaces and runs iptables inside them. Run it again as root"
        );
    }
    setup::ensure(&ctx.root, &ctx.toolchain)?;
    Cmd::cargo(&ctx.toolchain.channel, &ctx.root)
        .args(["build", "--release", "--package", NETBPF])
        .args(["--bin", NETBPF, "--example", BENCH_EXAMPLE])
        .run()
        .context("building netbpf and the bench (release)")?;
    let release = target_dir(&ctx.root).join("release");
    let mut recorded = String::from("cargo xtask bench");
    if quick {
        recorded.push_str(" --quick");
    }
    if skip_router {
        recorded.push_str(" --skip-router");
    }
    if let Some(part) = only {
        recorded.push_str(" --only ");
        recorded.push_str(part);
    }
    if let Some(list) = variants {
        recorded.push_str(" --variants ");
        recorded.push_str(list);
    }
    let mut bench = Cmd::new(release.join("examples").join(BENCH_EXAMPLE));
    bench
        .current_dir(&ctx.root)
        .child_env()
        .arg("--out")
        .arg(ctx.root.join("results"))
        .arg("--netbpf")
        .arg(release.join(NETBPF))
        .arg("--command")
        .arg(&recorded);
    if quick {
        bench.arg("--quick");
    }
    if skip_router {
        bench.arg("--skip-router");
    }
    if let Some(part) = only {
        bench.args(["--only", part]);
    }
    if let Some(list) = variants {
        bench.args(["--variants", list]);
    }
    bench.run().context("the bench failed")
}
