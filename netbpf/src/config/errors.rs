//! [`ConfigError`] and how validation collects errors: [`Problems`] records
//! every bad key so one pass reports them all, `invalid` builds one error,
//! `required` refuses a missing key.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The path that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The text is not valid TOML, has an unknown key, or a value has the
    /// wrong type. Holds the toml crate's message (with line and column).
    #[error("{0}")]
    Syntax(String),
    /// A value is well-formed TOML but not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Key path of the offending value, e.g. `publish[0].to`.
        key: String,
        /// Why the value was rejected (quotes the value).
        reason: String,
    },
    /// More than one value is not acceptable: every
    /// [`ConfigError::Invalid`] found, in file order, shown one per line.
    /// A file with a single bad value gives that [`ConfigError::Invalid`]
    /// itself, not a list of one.
    #[error("{}", lines(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each error on its own: the items of [`ConfigError::Several`], or
    /// this error alone.
    pub fn each(&self) -> &[ConfigError] {
        match self {
            ConfigError::Several(all) => all,
            one => std::slice::from_ref(one),
        }
    }
}

/// The errors' messages, one per line.
fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

pub(super) fn required<T>(key: &str, v: Option<T>, what: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| invalid(key, format!("is required ({what})")))
}

/// The problems found so far while validating one file.
///
/// Each key is checked on its own and a bad one is recorded here instead of
/// ending the pass, so one run reports every bad value in the file. Within
/// one key the first problem wins (a value that does not parse is not also
/// range-checked). A check that needs two keys, such as an overlap between
/// two entries or a range that must fit its target, runs only when both
/// are valid, so one mistake is reported once.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value, or `None` after recording why it was refused.
    pub(super) fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded; otherwise the one error, or all of
    /// them in file order as [`ConfigError::Several`].
    pub(super) fn finish(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
}
