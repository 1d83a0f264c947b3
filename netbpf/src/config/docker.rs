//! `[docker]`: following a dockerd over its API socket (its bridge
//! networks' masquerade, its containers' published ports), and its
//! validation. What the daemon does with it is `crate::docker`'s.

use std::path::PathBuf;

use serde::Deserialize;

use super::errors::*;

/// Where dockerd listens by default (Debian's `docker.io`, Docker's own
/// packages).
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The `[docker]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Whether the daemon follows dockerd (`enabled`; `true` when the
    /// table is present, `false` when it is absent).
    pub enabled: bool,
    /// The Engine API's unix socket (`socket`), [`DEFAULT_DOCKER_SOCKET`]
    /// by default.
    pub socket: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: false,
            socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDocker {
    enabled: Option<bool>,
    socket: Option<String>,
}

/// `[docker]`; a bad socket path is recorded in `p` and following stays off.
pub(super) fn validate_docker(raw: Option<RawDocker>, p: &mut Problems) -> DockerConfig {
    let Some(raw) = raw else {
        return DockerConfig::default();
    };
    let socket = match raw.socket {
        None => PathBuf::from(DEFAULT_DOCKER_SOCKET),
        Some(s) => match p.check(docker_socket("docker.socket", &s)) {
            Some(path) => path,
            None => return DockerConfig::default(),
        },
    };
    DockerConfig {
        enabled: raw.enabled.unwrap_or(true),
        socket,
    }
}

/// A socket path as `[docker] socket` or `netbpf daemon --docker` take it:
/// absolute, optionally written as Docker writes it (`unix:///run/docker.sock`).
/// Whether something listens there is found out when the daemon connects.
pub fn docker_socket(key: &str, text: &str) -> Result<PathBuf, ConfigError> {
    let trimmed = text.trim();
    let path = trimmed.strip_prefix("unix://").unwrap_or(trimmed);
    if path.is_empty() {
        return Err(invalid(
            key,
            format!(
                "{text:?} is empty; expected a unix socket path such as \"{DEFAULT_DOCKER_SOCKET}\""
            ),
        ));
    }
    if trimmed.contains("://") && !trimmed.starts_with("unix://") {
        return Err(invalid(
            key,
            format!("{text:?}: only a unix socket is supported (dockerd -H unix://PATH), not TCP"),
        ));
    }
    if !path.starts_with('/') {
        return Err(invalid(
            key,
            format!("{text:?} is not an absolute path (e.g. \"{DEFAULT_DOCKER_SOCKET}\")"),
        ));
    }
    Ok(PathBuf::from(path))
}
