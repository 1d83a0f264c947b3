//! `netbpf stats`: the datapath's counters, table fill and port use, once
//! or redrawn in place with `--watch` (the screen painting lives here).

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use clap::Args;
use netbpf::{maps, occupancy::Occupancy};
use tokio::signal::unix::{SignalKind, signal};

use super::shared::OutputArgs;

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Refresh in place every --interval seconds until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1)]
    interval: u64,
}

fn read(pin_dir: &Path) -> Result<(maps::Stats, Occupancy)> {
    Ok((maps::read_stats(pin_dir)?, Occupancy::read(pin_dir)?))
}

fn render((stats, occupancy): (maps::Stats, Occupancy)) -> String {
    format!("{}\n{}", stats.render(), occupancy.render())
}

/// `text` drawn over the previous screen: home, each line over the old
/// one, then clear the rest.
fn repaint(text: &str) -> String {
    let mut screen = String::from("\x1b[H");
    for line in text.lines() {
        screen.push_str(line);
        screen.push_str("\x1b[K\n");
    }
    screen.push_str("\x1b[J");
    screen
}

pub async fn run(args: StatsArgs, pin_dir: &Path) -> Result<()> {
    if args.output.json {
        let (stats, occupancy) = read(pin_dir)?;
        let mut json = stats.to_json();
        json["tables"] = serde_json::to_value(&occupancy.tables)?;
        json["port_use"] = serde_json::to_value(&occupancy.ports)?;
        json["flow_states"] = serde_json::to_value(&occupancy.flow_states)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if !args.watch {
        print!("{}", render(read(pin_dir)?));
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    print!("\x1b[2J");
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                print!("{}", repaint(&render(read(pin_dir)?)));
                let _ = std::io::stdout().flush();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::repaint;

    #[test]
    fn each_line_clears_what_the_last_screen_left() {
        assert_eq!(repaint("a\nbb\n"), "\x1b[Ha\x1b[K\nbb\x1b[K\n\x1b[J");
    }
}
