//! Attachments that outlive the daemon: a program attached through a bpf
//! link pinned in bpffs (`PIN_DIR/links/<program>@<target>`, see
//! [`crate::pins`]), or swapped atomically into the link an earlier daemon
//! pinned there, so no packet sees neither program. Used by the NAT
//! datapath (`datapath`) and by routed containers (`containers`).

use std::{fs, io, path::Path, path::PathBuf};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError as AyaLinkError, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use crate::pins::{self, PinsError};

/// How a program came to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Swapped into the link an earlier daemon pinned.
    Swapped,
    /// Attached afresh and pinned (no pinned link, or a severed one).
    Fresh {
        /// A pinned link was there but severed (its interface was
        /// deleted): it was dropped first.
        severed: bool,
    },
}

/// Why a pinned attachment failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused to attach or swap the program.
    #[error("attaching")]
    Program(#[source] ProgramError),
    /// The link could not be pinned.
    #[error("pinning the link at {path}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: aya::pin::PinError,
    },
    /// The link's directory could not be made.
    #[error("creating {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Removing a pin failed.
    #[error(transparent)]
    Pins(#[from] PinsError),
}

impl From<AyaLinkError> for LinkError {
    fn from(e: AyaLinkError) -> Self {
        LinkError::Program(ProgramError::from(e))
    }
}

/// The link pinned at `pin`, if there is one of the right kind.
pub fn adopt<L: TryFrom<FdLink>>(pin: &Path) -> Option<L> {
    if !pin.exists() {
        return None;
    }
    let pinned = PinnedLink::from_pin(pin).ok()?;
    L::try_from(FdLink::from(pinned)).ok()
}

/// Pins a freshly made link at `pin`: the pin keeps the link, and so the
/// attachment, alive when this process closes its descriptor.
pub fn pin<L>(link: L, pin: &Path) -> Result<(), LinkError>
where
    FdLink: TryFrom<L, Error = AyaLinkError>,
{
    if let Some(dir) = pin.parent() {
        fs::create_dir_all(dir).map_err(|source| LinkError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    }
    FdLink::try_from(link)?
        .pin(pin)
        .map_err(|source| LinkError::Pin {
            path: pin.to_owned(),
            source,
        })?;
    Ok(())
}

/// Whether a swap failed because the pinned link was severed.
fn severed(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOLINK))
}

/// Attaches a tc program (tcx on kernels >= 6.6) to `ifindex` through a
/// link pinned at `pin`, or swaps it into the link pinned there.
pub fn attach_tc(
    prog: &mut SchedClassifier,
    ifindex: u32,
    attach: TcAttachType,
    pin_path: &Path,
) -> Result<Attached, LinkError> {
    let swapped =
        adopt::<SchedClassifierLink>(pin_path).map(|link| prog.attach_to_link(link).map(|_| ()));
    attach_pinned(pin_path, swapped, || {
        let id = prog.attach(ifindex, attach)?;
        prog.take_link(id)
    })
}

/// Attaches an XDP program to `ifindex` in `mode` through a link pinned at
/// `pin`, or swaps it into the link pinned there.
pub fn attach_xdp(
    prog: &mut Xdp,
    ifindex: u32,
    mode: XdpMode,
    pin_path: &Path,
) -> Result<Attached, LinkError> {
    let swapped = adopt::<XdpLink>(pin_path).map(|link| prog.attach_to_link(link).map(|_| ()));
    attach_pinned(pin_path, swapped, || {
        let id = prog.attach(ifindex, mode)?;
        prog.take_link(id)
    })
}

/// The rest of [`attach_tc`] and [`attach_xdp`] once they tried to swap
/// the program into the link pinned at `pin_path` (`swapped`: `None` if
/// there was none): done if that worked; a severed link's pin is dropped;
/// otherwise (or then) `fresh` attaches the program anew and its link is
/// pinned.
fn attach_pinned<L>(
    pin_path: &Path,
    swapped: Option<Result<(), ProgramError>>,
    fresh: impl FnOnce() -> Result<L, ProgramError>,
) -> Result<Attached, LinkError>
where
    FdLink: TryFrom<L, Error = AyaLinkError>,
{
    let mut was_severed = false;
    match swapped {
        Some(Ok(())) => return Ok(Attached::Swapped),
        Some(Err(e)) if severed(&e) => {
            pins::remove_file(pin_path)?;
            was_severed = true;
        }
        Some(Err(e)) => return Err(LinkError::Program(e)),
        None => {}
    }
    let link = fresh().map_err(LinkError::Program)?;
    pin(link, pin_path)?;
    Ok(Attached::Fresh {
        severed: was_severed,
    })
}

/// Detaches the link pinned at `pin` at once (not when the kernel frees
/// it) and removes the pin; a severed link or a missing pin is fine.
pub fn unpin(pin_path: &Path) -> Result<(), PinsError> {
    if !pin_path.exists() {
        return Ok(());
    }
    if let Err(e) = pins::link_detach(pin_path)
        && e.raw_os_error() != Some(libc::ENOLINK)
    {
        return Err(PinsError::Io {
            path: pin_path.to_owned(),
            source: e,
        });
    }
    pins::remove_file(pin_path)?;
    Ok(())
}
