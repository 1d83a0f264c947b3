//! Why an `iptables-save` dump could not be imported.

use crate::config::ConfigError;

/// What can go wrong importing a dump.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A rule netbpf cannot express exactly (or cannot parse).
    #[error(
        "line {line}: {reason}\n  {rule}\n(pass --skip-unsupported to skip such rules with a warning)"
    )]
    Unsupported {
        /// 1-based line number in the dump.
        line: usize,
        /// The rule as written.
        rule: String,
        /// Why it cannot be imported.
        reason: String,
    },
    /// The dump as a whole cannot be imported.
    #[error("{0}")]
    Dump(String),
    /// The generated config does not validate (a bug, or a combination the
    /// checks here missed).
    #[error("the imported config does not validate: {0}")]
    Config(#[from] ConfigError),
    /// Reading the conntrack sysctls failed.
    #[error("reading {path}: {source}")]
    Sysctl {
        /// The sysctl file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}
