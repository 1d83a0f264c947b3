//! The programs of the loaded object: their names, and the one way to get
//! one by name, loaded (verified) if it was not yet. The NAT loader
//! (`datapath`) and routing (`containers`) both go through [`loaded`].

use aya::{
    Ebpf,
    programs::{CgroupSockAddr, Program, ProgramError, SchedClassifier, Xdp},
};

/// Program names in the eBPF object (`netbpf-ebpf/src/main.rs`).
pub mod programs {
    /// tc egress on the uplink (masquerade).
    pub const EGRESS: &str = "netbpf_egress";
    /// tc ingress on the uplink (reverse translation, DNAT).
    pub const INGRESS: &str = "netbpf_ingress";
    /// tc ingress on the interfaces that lead to containers (hairpin).
    pub const INSIDE: &str = "netbpf_inside";
    /// tc ingress on the same interfaces, after [`INSIDE`]: the fast path
    /// out (masquerade, straight to the uplink).
    pub const FAST_OUT: &str = "netbpf_fast_out";
    /// tc ingress on the ports of a bridge whose network has
    /// inter-container communication off (Docker's `enable_icc=false`).
    pub const ICC: &str = "netbpf_icc";
    /// cgroup socket hooks for published ports reached from the host.
    pub const SOCK_ADDR: [&str; 4] = [
        "netbpf_connect4",
        "netbpf_sendmsg4",
        "netbpf_recvmsg4",
        "netbpf_getpeername4",
    ];
    /// XDP on the uplink: ARP for routed containers.
    pub const ARP: &str = "netbpf_arp";
    /// tc ingress on the uplink: forward to routed containers.
    pub const ROUTE_IN: &str = "netbpf_route_in";
    /// tc ingress on a routed container's veth: ARP, anti-spoofing, forward.
    pub const CONTAINER: &str = "netbpf_container";
}

/// A program type that can be loaded into the kernel on demand.
pub trait Loadable {
    /// Whether it is loaded (has a file descriptor).
    fn is_loaded(&self) -> bool;
    /// Loads (verifies) it.
    fn load_now(&mut self) -> Result<(), ProgramError>;
}

macro_rules! loadable {
    ($($t:ty),*) => {$(
        impl Loadable for $t {
            fn is_loaded(&self) -> bool {
                self.fd().is_ok()
            }
            fn load_now(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
        }
    )*};
}
loadable!(SchedClassifier, Xdp, CgroupSockAddr);

/// The program `name` of the object as a `P`, loaded if it was not yet.
/// A missing program or one of another type is `UnexpectedProgramType`.
pub fn loaded<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, ProgramError>
where
    P: Loadable,
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let prog: &'a mut P = ebpf
        .program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)?
        .try_into()?;
    if !prog.is_loaded() {
        load_retrying(prog)?;
    }
    Ok(prog)
}

/// How many times a load the verifier gave up with `EAGAIN` is tried.
const LOAD_TRIES: u32 = 5;

/// Loads `prog`, again if the verifier stopped with `EAGAIN`: it does when
/// a signal is pending for the loading thread (a SIGHUP or SIGCHLD the
/// daemon's runtime handles, on a thread of its choosing), and our largest
/// programs take the verifier seconds. Another error is returned at once.
pub fn load_retrying<P: Loadable>(prog: &mut P) -> Result<(), ProgramError> {
    let mut tries = 1;
    loop {
        match prog.load_now() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_TRIES =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}
