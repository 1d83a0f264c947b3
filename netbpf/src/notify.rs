//! Telling systemd how the daemon is doing (`Type=notify`): one datagram
//! to the unix socket in `$NOTIFY_SOCKET`, as sd_notify(3) sends it. Only
//! the daemon's readiness, reload and stop are reported; without the
//! variable (not started by systemd) nothing is sent.

use std::{io, os::unix::net::UnixDatagram};

/// The datapath is attached and the rules are in: units ordered after
/// netbpf (`docker.service`) may start.
pub const READY: &str = "READY=1";
/// A SIGHUP reload is under way.
pub const RELOADING: &str = "RELOADING=1";
/// The daemon is stopping (the datapath stays).
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when there is none.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    notify_to(&path, state).map(|()| true)
}

/// Sends `state` to the notify socket `path` (`@name`: abstract).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: systemd writes its leading NUL as '@'.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// [`notify`], logging a failure instead of returning it: systemd not
/// hearing about a reload is not a reason to stop.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!("telling systemd {state}: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_datagram_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("netbpf-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        super::notify_to(path.as_os_str(), super::READY).expect("sent");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
        let gone = dir.join("nobody.sock");
        assert!(super::notify_to(gone.as_os_str(), super::READY).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
