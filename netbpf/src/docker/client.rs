//! Talking to dockerd with bollard (an async Engine API client on the
//! daemon's tokio runtime): connect, negotiate the API version (Debian's
//! docker.io 20.10 speaks 1.41), and read the bridge networks and the
//! running containers' published ports into [`DockerState`].

use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use bollard::{
    Docker,
    models::{ContainerInspectResponse, Network as ApiNetwork},
    query_parameters::{ListContainersOptions, ListNetworksOptions},
};

use crate::config::{Ipv4Cidr, Proto, masquerade_entry};

use super::model::{Binding, Container, DockerState, Network, option_on};

/// Why dockerd could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Connecting or a request failed (no socket, not Docker, no access,
    /// dockerd gone).
    #[error("Docker API at {socket}")]
    Api {
        /// The socket.
        socket: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// How long one API request may take, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// Connects to the socket and agrees on an API version.
pub async fn connect(socket: &Path) -> Result<Docker, DockerError> {
    let name = socket.display().to_string();
    let err = |source| DockerError::Api {
        socket: name.clone(),
        source,
    };
    let docker =
        Docker::connect_with_unix(&name, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(err)?;
    docker.negotiate_version().await.map_err(err)
}

/// Reads every bridge network and every running container.
pub async fn read_state(docker: &Docker, socket: &Path) -> Result<DockerState, DockerError> {
    let err = |source| DockerError::Api {
        socket: socket.display().to_string(),
        source,
    };
    let mut networks: Vec<Network> = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(err)?
        .iter()
        .filter_map(network)
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = docker
        .list_containers(None::<ListContainersOptions>)
        .await
        .map_err(err)?;
    let mut containers = Vec::new();
    for id in listed.iter().filter_map(|c| c.id.as_deref()) {
        match docker.inspect_container(id, None).await {
            Ok(c) => containers.extend(container(&c, &networks)),
            // Gone between the list and the inspect: its die event follows.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(err(e)),
        }
    }
    containers.sort_by(|a: &Container, b| a.name.cmp(&b.name));
    Ok(DockerState {
        networks,
        containers,
    })
}

/// A bridge network, or `None` for other drivers (host, null, overlay...).
fn network(n: &ApiNetwork) -> Option<Network> {
    if n.driver.as_deref() != Some("bridge") {
        return None;
    }
    let name = n.name.clone()?;
    let id = n.id.clone().unwrap_or_default();
    let empty = HashMap::new();
    let options = n.options.as_ref().unwrap_or(&empty);
    let opt = |key: &str| {
        options
            .get(&format!("com.docker.network.bridge.{key}"))
            .map(String::as_str)
    };
    let bridge = opt("name")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
    let subnets: Vec<Ipv4Cidr> = n
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref())
        .filter_map(|s| masquerade_entry(s, None).ok().map(|m| m.source))
        .collect();
    let host_binding = opt("host_binding_ipv4")
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_unspecified());
    Some(Network {
        name,
        bridge,
        subnets,
        // dockerd turns ip-masq off on the default bridge whenever its own
        // iptables are off, which is how it runs beside netbpf: that value
        // says nothing of what the user wants, so the default bridge is
        // always masqueraded (as Docker does with iptables on).
        masquerade: option_on(opt("default_bridge"), false)
            || option_on(opt("enable_ip_masquerade"), true),
        host_binding,
        icc: option_on(opt("enable_icc"), true),
        internal: n.internal.unwrap_or(false),
    })
}

/// A running container's IPv4 published ports on its first network.
fn container(c: &ContainerInspectResponse, networks: &[Network]) -> Option<Container> {
    let name = c.name.as_deref()?.trim_start_matches('/').to_owned();
    let settings = c.network_settings.as_ref()?;
    let endpoints = settings.networks.clone().unwrap_or_default();
    // The network the container was started on carries its port
    // mappings; `default` is the default bridge.
    let mode = c
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .map(|m| {
            if m == "default" {
                "bridge".to_owned()
            } else {
                m
            }
        });
    let mut names: Vec<&String> = endpoints.keys().collect();
    names.sort();
    let chosen = mode
        .as_ref()
        .filter(|m| endpoints.contains_key(*m))
        .or_else(|| {
            names
                .into_iter()
                .find(|n| networks.iter().any(|x| &x.name == *n))
        });
    let (network, addr) = match chosen {
        Some(n) => (
            Some(n.clone()),
            endpoints
                .get(n)
                .and_then(|e| e.ip_address.as_deref())
                .and_then(|a| a.parse::<Ipv4Addr>().ok()),
        ),
        None => (None, None),
    };
    let mut bindings = Vec::new();
    for (port, hosts) in settings.ports.iter().flatten() {
        let Some((number, proto)) = port.split_once('/') else {
            continue;
        };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => continue,
        };
        let Ok(container_port) = number.parse::<u16>() else {
            continue;
        };
        for h in hosts.iter().flatten() {
            let host_addr = match h.host_ip.as_deref().unwrap_or("") {
                "" | "0.0.0.0" => None,
                text => match text.parse::<Ipv4Addr>() {
                    Ok(a) => Some(a),
                    // `::` and other IPv6 bindings: netbpf is IPv4 only.
                    Err(_) => continue,
                },
            };
            let Some(host_port) = h.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            bindings.push(Binding {
                proto,
                host_addr,
                host_port,
                container_port,
            });
        }
    }
    Some(Container {
        name,
        network,
        addr,
        bindings,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A socket that is missing, or that answers but is not Docker: an
    /// error naming the socket (the follower warns and retries).
    #[tokio::test]
    async fn a_missing_socket_or_not_docker_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("netbpf-docker-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.sock");
        let e = super::connect(&missing).await.expect_err("no socket");
        assert!(e.to_string().contains("missing.sock"), "{e}");
        let path = dir.join("not-docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
            }
        });
        let e = super::connect(&path).await.expect_err("not docker");
        assert!(e.to_string().contains("not-docker.sock"), "{e}");
        let _ = server.join();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
