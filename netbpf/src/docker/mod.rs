//! Following a real dockerd (`[docker]`, `netbpf daemon --docker`): what
//! Docker's iptables rules do, done by netbpf's datapath, so that Docker
//! can run with `"iptables": false`.
//!
//! - [`model`]: the part of Docker's state netbpf needs, in plain types;
//! - [`client`]: reading it over the Engine API (bollard);
//! - [`translate`]: state → rules (masquerade per bridge subnet, published
//!   ports, bridges to hairpin on, bridges with `enable_icc=false`),
//!   conflicts refused naming both sides;
//! - [`apply`]: the difference applied to the running datapath through
//!   [`crate::control`], recorded under owner `docker` ([`crate::owners`]);
//! - [`follow`]: the task that connects, reads after each event, and
//!   reconnects with backoff.
//!
//! The task only reads; the daemon's loop applies each read, so a SIGHUP
//! reload and a Docker change never interleave.

pub mod apply;
pub mod client;
pub mod follow;
pub mod model;
pub mod translate;

pub use apply::{Applied, apply};
pub use client::DockerError;
pub use follow::spawn;
pub use model::DockerState;
pub use translate::DOCKER_OWNER;
