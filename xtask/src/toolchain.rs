//! The pinned Rust toolchain.
//!
//! `netbpf-ebpf/rust-toolchain.toml` is the single source of truth for the
//! toolchain that builds (and lints and tests) netbpf. It lives in the eBPF
//! crate, not at the repository root, so that `cargo xtask` itself compiles
//! with whatever default toolchain the machine has (see
//! docs/toolchain.md: with `RUSTUP_AUTO_INSTALL=0`, a root-level pin
//! that is not installed would stop every `cargo` command, this one included).
//!
//! The file is read with a small line parser instead of a TOML crate, to keep
//! xtask's dependencies at `anyhow` + `clap`.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

/// Path of the toolchain file, relative to the workspace root.
pub const TOOLCHAIN_FILE: &str = "netbpf-ebpf/rust-toolchain.toml";

/// Environment variable that overrides the channel read from [`TOOLCHAIN_FILE`]
/// (for trying another toolchain, or testing `setup` with a missing one).
pub const OVERRIDE_ENV: &str = "NETBPF_TOOLCHAIN";

/// Component that must always be present: `-Z build-std=core` for
/// `bpfel-unknown-none` needs the standard library sources.
pub const RUST_SRC: &str = "rust-src";

/// The toolchain to build with, as pinned (or overridden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// Channel name as given to rustup and to `cargo +<channel>`, e.g.
    /// `nightly-2026-08-01`.
    pub channel: String,
    /// Components to install with it; always includes [`RUST_SRC`].
    pub components: Vec<String>,
    /// Where the channel came from, for messages: [`TOOLCHAIN_FILE`] or
    /// `$NETBPF_TOOLCHAIN`.
    pub origin: &'static str,
}

impl Toolchain {
    /// Reads the pinned toolchain from `<root>/netbpf-ebpf/rust-toolchain.toml`,
    /// with the channel replaced by `$NETBPF_TOOLCHAIN` when that is set and
    /// non-empty.
    pub fn pinned(root: &Path) -> Result<Self> {
        let path = root.join(TOOLCHAIN_FILE);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading the pinned toolchain from {}", path.display()))?;
        let mut toolchain = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Ok(channel) = std::env::var(OVERRIDE_ENV) {
            let channel = channel.trim();
            if !channel.is_empty() {
                channel.clone_into(&mut toolchain.channel);
                toolchain.origin = "$NETBPF_TOOLCHAIN";
            }
        }
        Ok(toolchain)
    }
}

/// Parses the `[toolchain]` table of a `rust-toolchain.toml`: the `channel`
/// string (required) and the `components` array (optional, may span lines).
/// [`RUST_SRC`] is added to the components when the file does not list it.
pub fn parse(text: &str) -> Result<Toolchain> {
    let mut section = "";
    let mut channel = None;
    let mut components: Vec<String> = Vec::new();
    // Set while reading a `components = [` array that continues on later lines.
    let mut open_array: Option<String> = None;

    for raw in text.lines() {
        let line = strip_comment(raw).trim();
        if let Some(buf) = open_array.as_mut() {
            buf.push(' ');
            buf.push_str(line);
            if line.contains(']') {
                components = parse_string_array(buf)?;
                open_array = None;
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').trim();
            continue;
        }
        if section != "toolchain" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "channel" => channel = Some(parse_string(value.trim())?),
            "components" => {
                let value = value.trim();
                if value.contains(']') {
                    components = parse_string_array(value)?;
                } else {
                    open_array = Some(value.to_owned());
                }
            }
            _ => {}
        }
    }
    if open_array.is_some() {
        bail!("unterminated `components` array");
    }
    let Some(channel) = channel else {
        bail!("no `channel = \"...\"` in the [toolchain] table");
    };
    if channel.is_empty() {
        bail!("`channel` is empty");
    }
    if !components.iter().any(|c| c == RUST_SRC) {
        components.insert(0, RUST_SRC.to_owned());
    }
    Ok(Toolchain {
        channel,
        components,
        origin: TOOLCHAIN_FILE,
    })
}

/// Drops a `#` comment. Toolchain and component names never contain `#`, so
/// quotes need not be tracked.
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(before, _)| before)
}

/// Parses a TOML basic or literal string without escapes: `"x"` or `'x'`.
fn parse_string(value: &str) -> Result<String> {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
    match inner {
        Some(s) if !s.contains(['"', '\'', '\\']) => Ok(s.to_owned()),
        _ => bail!("expected a quoted string, found `{value}`"),
    }
}

/// Parses a one-level array of simple strings: `["a", "b",]`.
fn parse_string_array(value: &str) -> Result<Vec<String>> {
    let inner = value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .with_context(|| format!("expected an array of strings, found `{value}`"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_project_file() {
        let text = r#"# The toolchain verified to build and load the eBPF programs (see
# docs/toolchain.md). `cargo xtask` reads the channel from here and installs it.
[toolchain]
channel = "nightly-2026-08-01"
components = ["rust-src", "rustfmt", "clippy"]
profile = "minimal"
"#;
        let tc = parse(text).unwrap();
        assert_eq!(tc.channel, "nightly-2026-08-01");
        assert_eq!(tc.components, ["rust-src", "rustfmt", "clippy"]);
    }

    #[test]
    fn reads_the_real_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let tc = Toolchain::pinned(root).unwrap();
        assert!(!tc.channel.is_empty());
        assert!(tc.components.iter().any(|c| c == RUST_SRC));
    }

    #[test]
    fn single_quotes_comments_and_multiline_arrays() {
        let text = "[toolchain]\n\
                    channel='nightly-2000-01-01'   # old\n\
                    components = [\n  \"clippy\", # lints\n  'rustfmt',\n]\n";
        let tc = parse(text).unwrap();
        assert_eq!(tc.channel, "nightly-2000-01-01");
        assert_eq!(tc.components, ["rust-src", "clippy", "rustfmt"]);
    }

    #[test]
    fn adds_rust_src_when_absent() {
        let tc = parse("[toolchain]\nchannel = \"stable\"\n").unwrap();
        assert_eq!(tc.components, ["rust-src"]);
    }

    #[test]
    fn ignores_other_tables() {
        let text = "[other]\nchannel = \"wrong\"\n[toolchain]\nchannel = \"right\"\n";
        assert_eq!(parse(text).unwrap().channel, "right");
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse("").is_err());
        assert!(parse("channel = \"outside-table\"\n").is_err());
        assert!(parse("[toolchain]\nchannel = nightly\n").is_err());
        assert!(parse("[toolchain]\nchannel = \"\"\n").is_err());
        assert!(parse("[toolchain]\nchannel = \"x\"\ncomponents = [\"a\",\n").is_err());
    }
}
