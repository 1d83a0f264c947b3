//! BIRD's control socket: the reply format, a bounded client, `configure`.

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::error::*;

/// How long a control-socket exchange may take.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of one answer read from BIRD's control socket (`show route`
/// of a full table is about 150 bytes a route: 16 MiB is some 100,000
/// routes, beyond what `[bgp] receive_limit` lets in by default).
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Longest line of an answer read from BIRD's control socket.
pub const MAX_REPLY_LINE: usize = 64 << 10;

// ---------------------------------------------------------------------------
// The control socket
// ---------------------------------------------------------------------------

/// One line of a BIRD reply: its code and text (continuation lines carry
/// the code of the line they continue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// Reply code: 0xxx done, 1xxx table data, 2xxx headings, 8xxx/9xxx errors.
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

/// Splits a raw line of BIRD's CLI protocol into (code, last line?, text).
/// `prev` is the code of the line before, for continuation lines.
pub fn parse_reply_line(line: &str, prev: u16) -> Result<(u16, bool, String), BgpError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let b = line.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        let code: u16 = line[..4]
            .parse()
            .map_err(|_| BgpError::Protocol(line.to_owned()))?;
        return Ok((code, b[4] == b' ', line[5..].to_owned()));
    }
    if let Some(rest) = line.strip_prefix(' ') {
        return Ok((prev, false, rest.to_owned()));
    }
    Err(BgpError::Protocol(line.to_owned()))
}

/// A connection to BIRD's control socket.
pub struct BirdClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// BIRD's version from its greeting (e.g. `BIRD 2.0.12`).
    pub version: String,
}

impl BirdClient {
    /// Connects to `socket` and reads BIRD's greeting.
    pub fn connect(socket: &Path) -> Result<Self, BgpError> {
        let what = || format!("connecting to BIRD's control socket {}", socket.display());
        let stream = UnixStream::connect(socket).map_err(io_err(what()))?;
        stream
            .set_read_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err(what()))?;
        stream
            .set_write_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err(what()))?;
        let writer = stream.try_clone().map_err(io_err(what()))?;
        let mut client = BirdClient {
            reader: BufReader::new(stream),
            writer,
            version: String::new(),
        };
        let hello = client.read_reply("(greeting)")?;
        client.version = hello
            .last()
            .map(|l| l.text.trim_end_matches(" ready.").to_owned())
            .unwrap_or_default();
        Ok(client)
    }

    /// Reads one answer, at most [`MAX_REPLY_BYTES`] of it in lines of at
    /// most [`MAX_REPLY_LINE`] bytes: a peer that floods BIRD with routes
    /// cannot make netbpf hold an unbounded `show route` in memory.
    fn read_reply(&mut self, command: &str) -> Result<Vec<ReplyLine>, BgpError> {
        let mut lines = Vec::new();
        let mut prev = 0;
        let mut total = 0usize;
        let too_long = |limit| BgpError::TooLong {
            command: command.to_owned(),
            limit,
        };
        loop {
            let mut raw = String::new();
            let n = (&mut self.reader)
                .take(MAX_REPLY_LINE as u64 + 1)
                .read_line(&mut raw)
                .map_err(io_err(format!("reading BIRD's answer to `{command}`")))?;
            if n == 0 {
                return Err(BgpError::Protocol(format!(
                    "connection closed during the answer to `{command}`"
                )));
            }
            if n > MAX_REPLY_LINE {
                return Err(too_long(MAX_REPLY_LINE));
            }
            total += n;
            if total > MAX_REPLY_BYTES {
                return Err(too_long(MAX_REPLY_BYTES));
            }
            let (code, last, text) = parse_reply_line(&raw, prev)?;
            prev = code;
            lines.push(ReplyLine { code, text });
            if last {
                if code >= 8000 {
                    let message = lines.last().map(|l| l.text.clone()).unwrap_or_default();
                    return Err(BgpError::Bird {
                        command: command.to_owned(),
                        code,
                        message,
                    });
                }
                return Ok(lines);
            }
        }
    }

    /// Sends one command and returns every line of the answer. An answer
    /// ending in an error code (8000 and up) is [`BgpError::Bird`].
    pub fn command(&mut self, command: &str) -> Result<Vec<ReplyLine>, BgpError> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err(format!("sending `{command}` to BIRD")))?;
        self.read_reply(command)
    }
}

/// `birdc configure`: BIRD re-reads its config. Ok once it says
/// "Reconfigured" (0003) or that it is reconfiguring (0004, 0005).
pub fn reconfigure(socket: &Path) -> Result<(), BgpError> {
    let lines = BirdClient::connect(socket)?.command("configure")?;
    match lines.last() {
        Some(l) if matches!(l.code, 3..=5) => Ok(()),
        Some(l) => Err(BgpError::NotReconfigured {
            code: l.code,
            message: l.text.clone(),
        }),
        None => Err(BgpError::Protocol("empty answer to configure".into())),
    }
}
