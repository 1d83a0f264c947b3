//! The lab's live counters: what `netbpf lab` shows after its tables until
//! Ctrl-C.
//!
//! On a terminal, a block as wide as the terminal, redrawn in place once a
//! second: every counter that is not zero with its total, and for those
//! that moved in the last interval, the rate per second; only the lines
//! that differ are rewritten, and nothing is written when nothing changed.
//! Anywhere else (a pipe, a log file), one line each time something
//! changed, listing only what changed.
//!
//! The formatting ([`frame`], [`changes_line`], [`redraw`]) is pure and
//! tested here; [`Live`] only measures the terminal and writes.

use std::{
    io::{self, IsTerminal as _, Write},
    os::fd::AsRawFd as _,
    time::Duration,
};

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Flows in the conntrack table (a gauge).
    pub flows: usize,
    /// The datapath's counters (monotonic), as `maps::read_stats` gives them.
    pub counters: Vec<(&'static str, u64)>,
}

impl Snapshot {
    /// The value of counter `name` (0 when it is not there).
    fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Width kept for a rate (`+123456/s`), so that a rate appearing or
/// going does not move the columns.
const RATE_WIDTH: usize = 9;

/// Spaces between columns.
const GAP: usize = 2;

/// Width used when the terminal's cannot be read.
pub const DEFAULT_WIDTH: usize = 80;

/// How much `delta` is per second over `elapsed`: `+5/s`, `+0.5/s`; a bare
/// `+5` when no time passed.
fn rate(delta: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return format!("+{delta}");
    }
    let per_sec = delta as f64 / secs;
    if per_sec >= 10.0 || (per_sec - per_sec.round()).abs() < 0.05 {
        format!("+{per_sec:.0}/s")
    } else {
        format!("+{per_sec:.1}/s")
    }
}

/// The flows line: `flows 6`, with the change since `t0` (`flows 6 (+2)`).
fn flows_text(t0: &Snapshot, t1: &Snapshot) -> String {
    let (a, b) = (t0.flows, t1.flows);
    match b.cmp(&a) {
        std::cmp::Ordering::Equal => format!("flows {b}"),
        std::cmp::Ordering::Greater => format!("flows {b} (+{})", b - a),
        std::cmp::Ordering::Less => format!("flows {b} (-{})", a - b),
    }
}

/// Cuts `s` to `width` characters, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The block shown on a terminal at `t1`, `elapsed` after `t0`, in lines of
/// at most `width` characters: the flows line, then every counter that is
/// not zero in columns (`name  total  +rate/s`, the rate only for those
/// that moved since `t0`).
pub fn frame(t0: &Snapshot, t1: &Snapshot, elapsed: Duration, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = vec![cut(&flows_text(t0, t1), width)];
    let shown: Vec<(&str, u64, String)> = t1
        .counters
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|&(name, v)| {
            let before = t0.get(name);
            let moved = if v > before {
                rate(v - before, elapsed)
            } else {
                String::new()
            };
            (name, v, moved)
        })
        .collect();
    if shown.is_empty() {
        lines.push(cut("no packet counted yet", width));
        return lines;
    }
    let name_w = shown.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    let total_w = shown
        .iter()
        .map(|(_, v, _)| v.to_string().len())
        .max()
        .unwrap_or(0);
    let rate_w = shown
        .iter()
        .map(|(_, _, r)| r.len())
        .max()
        .unwrap_or(0)
        .max(RATE_WIDTH);
    let col_w = name_w + 1 + total_w + 1 + rate_w;
    let cols = ((width + GAP) / (col_w + GAP)).max(1);
    for row in shown.chunks(cols) {
        let cells: Vec<String> = row
            .iter()
            .map(|(name, v, r)| format!("{name:<name_w$} {v:>total_w$} {r:<rate_w$}"))
            .collect();
        let line = cells.join(&" ".repeat(GAP));
        lines.push(cut(line.trim_end(), width));
    }
    lines
}

/// One line saying what changed from `t0` to `t1` (`elapsed` apart), for
/// output that is not a terminal: `flows=6 (+2) tcp_new=12 (+2/s) ...`.
/// `None` when nothing changed.
pub fn changes_line(t0: &Snapshot, t1: &Snapshot, elapsed: Duration) -> Option<String> {
    let mut parts = Vec::new();
    if t0.flows != t1.flows {
        parts.push(flows_text(t0, t1).replacen(' ', "=", 1));
    }
    for &(name, v) in &t1.counters {
        let before = t0.get(name);
        if v != before {
            let moved = if v > before {
                rate(v - before, elapsed)
            } else {
                format!("-{}", before - v)
            };
            parts.push(format!("{name}={v} ({moved})"));
        }
    }
    if parts.is_empty() {
        return None;
    }
    if t0.flows == t1.flows {
        parts.insert(0, format!("flows={}", t1.flows));
    }
    Some(parts.join(" "))
}

/// The totals at `t`, for output that is not a terminal: `flows=6
/// tcp_new=12 ...`, the counters that are not zero.
pub fn totals_line(t: &Snapshot) -> String {
    let mut parts = vec![format!("flows={}", t.flows)];
    parts.extend(
        t.counters
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(name, v)| format!("{name}={v}")),
    );
    parts.join(" ")
}

/// What to write to a terminal whose cursor is at the start of the line
/// below `old` (as drawn) so that it shows `new` instead, with the cursor
/// again below it. Only the lines that differ are rewritten (cursor up
/// with `CSI n F`, down with `CSI n E`, each line cleared with `CSI 2K`);
/// lines `old` had beyond `new` are cleared (`CSI J`). Empty when the two
/// are the same. Every line must fit the terminal's width, so that none
/// wraps and the line count stays true.
pub fn redraw(old: &[String], new: &[String]) -> String {
    let mut out = String::new();
    // The line the cursor is on, counted from the block's first.
    let mut at = old.len();
    let common = old.len().min(new.len());
    for i in 0..common {
        if old[i] != new[i] {
            go(&mut out, &mut at, i);
            out.push_str("\x1b[2K");
            out.push_str(&new[i]);
        }
    }
    if out.is_empty() && old.len() == new.len() {
        return out;
    }
    go(&mut out, &mut at, common);
    if old.len() > common {
        out.push_str("\x1b[J");
    }
    for line in &new[common..] {
        out.push_str("\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Moves the cursor from line `at` to the start of line `to`, both on the
/// screen already.
fn go(out: &mut String, at: &mut usize, to: usize) {
    match to.cmp(at) {
        std::cmp::Ordering::Less => out.push_str(&format!("\x1b[{}F", *at - to)),
        std::cmp::Ordering::Greater => out.push_str(&format!("\x1b[{}E", to - *at)),
        std::cmp::Ordering::Equal => out.push('\r'),
    }
    *at = to;
}

/// The width of the terminal on stdout, from `TIOCGWINSZ`; `None` when
/// stdout is not a terminal or the kernel does not say.
///
/// An ioctl through `libc` (already a dependency) rather than a crate such
/// as `terminal_size`, which would bring `rustix` into the tree for this
/// one call.
pub fn terminal_width() -> Option<usize> {
    let stdout = io::stdout();
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer,
    // which points at one; the fd is stdout's, open for our lifetime.
    let rc = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Shows successive snapshots on stdout: redrawn in place on a terminal, a
/// line per change elsewhere.
#[derive(Debug)]
pub struct Live {
    /// Whether stdout is a terminal.
    tty: bool,
    /// The lines on the screen, the cursor below them.
    drawn: Vec<String>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// Nothing drawn yet; looks at whether stdout is a terminal.
    pub fn new() -> Live {
        Live {
            tty: io::stdout().is_terminal(),
            drawn: Vec::new(),
        }
    }

    /// Shows the totals at `t`, the first time.
    pub fn start(&mut self, t: &Snapshot) -> io::Result<()> {
        if self.tty {
            self.show(t, t, Duration::ZERO)
        } else {
            let mut out = io::stdout().lock();
            writeln!(out, "  {}", totals_line(t))?;
            out.flush()
        }
    }

    /// Shows `t1`, `elapsed` after `t0`.
    pub fn show(&mut self, t0: &Snapshot, t1: &Snapshot, elapsed: Duration) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.tty {
            // One column short of the edge: a line that fills the last
            // column leaves some terminals waiting to wrap.
            let width = terminal_width().unwrap_or(DEFAULT_WIDTH).saturating_sub(1);
            let lines = frame(t0, t1, elapsed, width);
            let bytes = redraw(&self.drawn, &lines);
            if !bytes.is_empty() {
                out.write_all(bytes.as_bytes())?;
                out.flush()?;
            }
            self.drawn = lines;
        } else if let Some(line) = changes_line(t0, t1, elapsed) {
            writeln!(out, "  {line}")?;
            out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(flows: usize, counters: &[(&'static str, u64)]) -> Snapshot {
        Snapshot {
            flows,
            counters: counters.to_vec(),
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn frame_fits_the_width_and_shows_rates_of_what_moved() {
        let t0 = snap(
            4,
            &[
                ("tcp_new", 10),
                ("udp_new", 5),
                ("icmp_new", 0),
                ("drop_spoofed_from_outside", 3),
            ],
        );
        let t1 = snap(
            6,
            &[
                ("tcp_new", 12),
                ("udp_new", 5),
                ("icmp_new", 0),
                ("drop_spoofed_from_outside", 103),
            ],
        );
        // 80 columns hold two of these 39-column cells, 79 only one.
        assert_eq!(
            frame(&t0, &t1, SEC, 80),
            [
                "flows 6 (+2)",
                "tcp_new                    12 +2/s       udp_new                     5",
                "drop_spoofed_from_outside 103 +100/s",
            ]
        );
        assert_eq!(
            frame(&t0, &t1, SEC, 79),
            [
                "flows 6 (+2)",
                "tcp_new                    12 +2/s",
                "udp_new                     5",
                "drop_spoofed_from_outside 103 +100/s",
            ]
        );
        for width in [20, 40, 79, 200] {
            for line in frame(&t0, &t1, SEC, width) {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
        }
        // Wide enough: one line of counters.
        assert_eq!(frame(&t0, &t1, SEC, 200).len(), 2);
        // Narrower than a column: one a line, cut.
        let narrow = frame(&t0, &t1, SEC, 20);
        assert_eq!(narrow[1], "tcp_new            …");
        assert_eq!(narrow.len(), 4);
    }

    #[test]
    fn frame_without_counters_and_fractional_rates() {
        let t = snap(0, &[("tcp_new", 0)]);
        assert_eq!(frame(&t, &t, SEC, 80), ["flows 0", "no packet counted yet"]);
        let t0 = snap(1, &[("tcp_new", 1)]);
        let t1 = snap(0, &[("tcp_new", 2)]);
        assert_eq!(
            frame(&t0, &t1, Duration::from_secs(2), 80),
            ["flows 0 (-1)", "tcp_new 2 +0.5/s"]
        );
        // Unchanged: the totals, no rate.
        assert_eq!(frame(&t1, &t1, SEC, 80), ["flows 0", "tcp_new 2"]);
    }

    #[test]
    fn totals_line_lists_what_is_not_zero() {
        let t = snap(3, &[("tcp_new", 10), ("udp_new", 0), ("icmp_new", 2)]);
        assert_eq!(totals_line(&t), "flows=3 tcp_new=10 icmp_new=2");
    }

    #[test]
    fn changes_line_lists_only_what_changed() {
        let t0 = snap(3, &[("tcp_new", 10), ("udp_new", 5)]);
        assert_eq!(changes_line(&t0, &t0, SEC), None);
        let t1 = snap(3, &[("tcp_new", 13), ("udp_new", 5)]);
        assert_eq!(
            changes_line(&t0, &t1, SEC).as_deref(),
            Some("flows=3 tcp_new=13 (+3/s)")
        );
        let t2 = snap(1, &[("tcp_new", 13), ("udp_new", 5)]);
        assert_eq!(changes_line(&t1, &t2, SEC).as_deref(), Some("flows=1 (-2)"));
        // A datapath that started over counts down.
        let t3 = snap(1, &[("tcp_new", 0), ("udp_new", 5)]);
        assert_eq!(
            changes_line(&t2, &t3, SEC).as_deref(),
            Some("flows=1 tcp_new=0 (-13)")
        );
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn redraw_rewrites_only_the_lines_that_changed() {
        let old = lines(&["flows 1", "a 1", "b 1"]);
        assert_eq!(redraw(&old, &old), "");
        // The middle line: up two, rewrite it, down two.
        assert_eq!(
            redraw(&old, &lines(&["flows 1", "a 2", "b 1"])),
            "\x1b[2F\x1b[2Ka 2\x1b[2E"
        );
        // First draw: every line, each ending in a newline.
        assert_eq!(
            redraw(&[], &lines(&["flows 0", "x"])),
            "\r\x1b[2Kflows 0\n\x1b[2Kx\n"
        );
        // A shorter block clears what was below it.
        assert_eq!(redraw(&old, &lines(&["flows 1", "a 1"])), "\x1b[1F\x1b[J");
        // A longer one goes on from the line below the old block.
        assert_eq!(
            redraw(&old, &lines(&["flows 2", "a 1", "b 1", "c 1"])),
            "\x1b[3F\x1b[2Kflows 2\x1b[3E\x1b[2Kc 1\n"
        );
    }
}
