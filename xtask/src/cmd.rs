//! Running child commands.
//!
//! Every command that changes something (installs, builds, tests) is echoed as
//! `+ cmd args` on stderr before it runs, like `set -x`. Probes that only look
//! (`rustup toolchain list`, `bpf-linker --version`) run quietly.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt, io,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// A child command that failed: carries its exit status so that `main` can
/// exit with the same code.
#[derive(Debug)]
pub struct Failed {
    /// The command line as echoed.
    pub line: String,
    /// How it ended.
    pub status: ExitStatus,
}

impl Failed {
    /// Exit code to propagate: the child's own, or 128 + signal when it was
    /// killed by a signal (as shells do), or 1.
    pub fn exit_code(&self) -> u8 {
        use std::os::unix::process::ExitStatusExt as _;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.line, self.status)
    }
}

impl std::error::Error for Failed {}

/// A command plus the text it is echoed as.
pub struct Cmd {
    /// The command to run.
    inner: Command,
    /// Environment assignments shown in front of the command line.
    shown_env: Vec<String>,
}

impl Cmd {
    /// A command running `program` with the environment of this process.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            inner: Command::new(program),
            shown_env: Vec::new(),
        }
    }

    /// A `cargo +<toolchain>` command in `root`, with an environment fit for
    /// a nested cargo (see [`child_env`]).
    pub fn cargo(toolchain: &str, root: &Path) -> Self {
        let mut cmd = Self::new("cargo");
        cmd.arg(format!("+{toolchain}"))
            .current_dir(root)
            .child_env();
        cmd
    }

    /// Gives the command the environment of [`child_env`].
    pub fn child_env(&mut self) -> &mut Self {
        child_env(&mut self.inner);
        self
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable and shows it in the echoed line.
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.shown_env
            .push(format!("{key}={}", quote(value.as_ref())));
        self.inner.env(key, value);
        self
    }

    /// Sets an environment variable without showing it.
    pub fn env_quiet(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env(key, value);
        self
    }

    /// Sets the working directory.
    pub fn current_dir(&mut self, dir: &Path) -> &mut Self {
        self.inner.current_dir(dir);
        self
    }

    /// The command as echoed: `VAR=value program arg...`, shell-quoted.
    pub fn line(&self) -> String {
        let mut words = self.shown_env.clone();
        words.push(quote(self.inner.get_program()));
        words.extend(self.inner.get_args().map(quote));
        words.join(" ")
    }

    /// Echoes and runs the command; its status is returned, not judged.
    pub fn status(&mut self) -> Result<ExitStatus> {
        let line = self.line();
        eprintln!("+ {line}");
        self.inner
            .status()
            .with_context(|| format!("could not start `{line}`"))
    }

    /// Echoes and runs the command; fails with [`Failed`] unless it succeeds.
    pub fn run(&mut self) -> Result<()> {
        let status = self.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(Failed {
                line: self.line(),
                status,
            }
            .into())
        }
    }

    /// Echoes the command and replaces this process with it. Returns only on
    /// failure to start it.
    pub fn exec(&mut self) -> anyhow::Error {
        let line = self.line();
        eprintln!("+ exec {line}");
        let err = self.inner.exec();
        anyhow::Error::new(err).context(format!("could not exec `{line}`"))
    }

    /// Runs the command quietly and returns its stdout, or `None` when the
    /// program does not exist. A non-zero exit is an error that includes
    /// stderr.
    pub fn probe(&mut self) -> Result<Option<String>> {
        let line = self.line();
        let output = match self.inner.stdin(Stdio::null()).output() {
            Ok(output) => output,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("could not run `{line}`")),
        };
        if !output.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }
}

/// Prepares the environment of a nested `cargo +<toolchain>`.
///
/// `cargo xtask` runs under the machine's default toolchain, and cargo and
/// rustup leave traces of it in our environment that must not leak into a
/// build with the pinned one: `RUSTUP_TOOLCHAIN` (which `+toolchain` beats, but
/// build scripts such as aya-build's may call rustup or cargo again), `CARGO`
/// (the default toolchain's cargo binary) and the default toolchain's library
/// directories in `LD_LIBRARY_PATH`. `PATH` gets the cargo bin directory in
/// front so that the build finds the `bpf-linker` that setup checked.
pub fn child_env(cmd: &mut Command) {
    for key in ["RUSTUP_TOOLCHAIN", "RUSTUP_TOOLCHAIN_SOURCE", "CARGO"] {
        cmd.env_remove(key);
    }
    match cleaned_library_path() {
        Some(value) if !value.is_empty() => cmd.env("LD_LIBRARY_PATH", value),
        _ => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    cmd.env("PATH", search_path());
}

/// `LD_LIBRARY_PATH` without the entries `cargo run` added for xtask: the
/// directory of the xtask binary and its `deps`, and the rustup toolchain
/// library directories.
fn cleaned_library_path() -> Option<OsString> {
    let value = env::var_os("LD_LIBRARY_PATH")?;
    let exe_dir = env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let kept: Vec<PathBuf> = env::split_paths(&value)
        .filter(|dir| {
            let from_cargo_run = exe_dir
                .as_ref()
                .is_some_and(|exe_dir| dir == exe_dir || *dir == exe_dir.join("deps"));
            let text = dir.to_string_lossy();
            let from_rustup = text.contains("rustup") && text.contains("/toolchains/");
            !(from_cargo_run || from_rustup)
        })
        .collect();
    env::join_paths(kept).ok()
}

/// `$CARGO_INSTALL_ROOT/bin`, `$CARGO_HOME/bin` or `$HOME/.cargo/bin`,
/// whichever is set first: where `cargo install` puts binaries such as
/// `bpf-linker`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(root) = env::var_os("CARGO_INSTALL_ROOT").filter(|r| !r.is_empty()) {
        return Some(PathBuf::from(root).join("bin"));
    }
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// The `PATH` children get: the cargo bin directory first, then this
/// process's `PATH`, then the sbin directories (where Debian puts `ip`).
pub fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(cargo_bin_dir());
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(extra));
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !dir.as_os_str().is_empty() && !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    env::join_paths(unique).unwrap_or_else(|_| env::var_os("PATH").unwrap_or_default())
}

/// Finds an executable file named `name` in the directories of `path`.
pub fn which(name: &str, path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|file| is_executable(file))
}

/// Whether `file` is a regular file with an execute bit set.
fn is_executable(file: &Path) -> bool {
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Quotes a word for display in a POSIX shell when it needs it.
pub fn quote(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("+nightly")), "+nightly");
        assert_eq!(quote(OsStr::new("-D")), "-D");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
    }

    #[test]
    fn echoed_line() {
        let mut cmd = Cmd::new("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_quiet("HIDDEN", "1")
            .args(["install", "bpf-linker", "--features", "llvm 22"]);
        assert_eq!(
            cmd.line(),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --features 'llvm 22'"
        );
    }

    #[test]
    fn failed_exit_codes() {
        use std::os::unix::process::ExitStatusExt as _;
        let failed = |raw| Failed {
            line: String::new(),
            status: ExitStatus::from_raw(raw),
        };
        assert_eq!(failed(101 << 8).exit_code(), 101);
        assert_eq!(failed(2).exit_code(), 130); // killed by SIGINT
    }
}
