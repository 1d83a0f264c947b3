//! What can go wrong talking to BIRD or writing its config.

use std::io;

/// BGP failures.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// Reading or writing a file, or talking to the socket.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// BIRD answered a command with an error.
    #[error("BIRD refused `{command}`: {code} {message}")]
    Bird {
        /// The command.
        command: String,
        /// BIRD's reply code (8000 and up).
        code: u16,
        /// BIRD's message.
        message: String,
    },
    /// The control socket said something that is not BIRD's protocol.
    #[error("unexpected answer on BIRD's control socket: {0:?}")]
    Protocol(String),
    /// An answer was longer than netbpf reads ([`MAX_REPLY_BYTES`], or a
    /// line longer than [`MAX_REPLY_LINE`]).
    #[error("BIRD's answer to `{command}` is longer than {limit} bytes: not read further")]
    TooLong {
        /// The command.
        command: String,
        /// The bound that was hit.
        limit: usize,
    },
    /// `configure` did not end with "Reconfigured".
    #[error("BIRD did not reconfigure: {code} {message}")]
    NotReconfigured {
        /// The final reply code.
        code: u16,
        /// The final message.
        message: String,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BgpError {
    let what = what.into();
    move |source| BgpError::Io { what, source }
}
