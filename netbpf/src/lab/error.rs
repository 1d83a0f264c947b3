//! What can go wrong building or using the lab.

use std::io;

use crate::netns::NetnsError;

/// Lab failures.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// I/O on a file, socket or process.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The daemon did not come up.
    #[error("the netbpf daemon did not start: {0}")]
    Daemon(String),
    /// dockerd or the docker CLI failed.
    #[error("docker: {0}")]
    Docker(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}
