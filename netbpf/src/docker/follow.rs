//! Following dockerd: connect, read everything, then re-read after each
//! event that can change a rule (container start/die, network
//! create/destroy/connect/disconnect); when dockerd goes away (or was
//! never there), retry with a growing pause and re-read everything on
//! reconnect. Each full read goes to the daemon loop, which applies it
//! ([`super::apply`]), so nothing here touches the datapath.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use log::{info, warn};
use tokio::sync::mpsc;

use super::{
    client::{self, DockerError},
    model::DockerState,
};

/// The first pause before a reconnect; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Events that arrive this close together are read as one change.
const SETTLE: Duration = Duration::from_millis(50);

/// Container and network actions that change what netbpf must hold.
const ACTIONS: [&str; 8] = [
    "start",
    "die",
    "pause",
    "unpause",
    "create",
    "destroy",
    "connect",
    "disconnect",
];

/// Starts following the dockerd at `socket`; every full read is sent on
/// the returned channel. The task ends when the receiver is dropped.
pub fn spawn(socket: PathBuf) -> mpsc::Receiver<DockerState> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(follow(socket, tx));
    rx
}

async fn follow(socket: PathBuf, tx: mpsc::Sender<DockerState>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    loop {
        match session(&socket, &tx, &mut backoff, &mut failures).await {
            Ok(Ended::Receiver) => return,
            Ok(Ended::Stream) => {
                warn!(
                    "docker: the event stream from {} ended (dockerd stopped?); reconnecting, its rules stay until then",
                    socket.display()
                );
            }
            Err(e) => {
                failures += 1;
                // Said once per outage, then quietly retried.
                if failures == 1 {
                    warn!(
                        "docker: {:#}; retrying every {}s at most, config rules keep working",
                        anyhow::Error::from(e),
                        MAX_BACKOFF.as_secs()
                    );
                } else {
                    log::debug!("docker: still unreachable: {:#}", anyhow::Error::from(e));
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    /// The daemon loop is gone.
    Receiver,
    /// dockerd closed the event stream.
    Stream,
}

/// One connection: reads, then follows events until dockerd goes away.
/// A successful first read resets the pause and the failure count, so
/// the next outage is reported again.
async fn session(
    socket: &std::path::Path,
    tx: &mpsc::Sender<DockerState>,
    backoff: &mut Duration,
    failures: &mut u32,
) -> Result<Ended, DockerError> {
    let docker = client::connect(socket).await?;
    // Events since just before the first read: one that happens while
    // reading is not lost (it only triggers another read).
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0);
    let filters = HashMap::from([(
        "type".to_owned(),
        vec!["container".to_owned(), "network".to_owned()],
    )]);
    let mut events = docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    }));
    let state = client::read_state(&docker, socket).await?;
    info!(
        "docker: connected to {}: {} bridge network(s), {} running container(s)",
        socket.display(),
        state.networks.len(),
        state.containers.len()
    );
    if tx.send(state).await.is_err() {
        return Ok(Ended::Receiver);
    }
    *backoff = MIN_BACKOFF;
    *failures = 0;
    loop {
        let mut relevant = false;
        match events.next().await {
            None => return Ok(Ended::Stream),
            Some(Err(e)) => {
                return Err(DockerError::Api {
                    socket: socket.display().to_string(),
                    source: e,
                });
            }
            Some(Ok(ev)) => relevant |= ev.action.as_deref().is_some_and(is_relevant),
        }
        // Take what else arrives at once (a `docker run` is create,
        // connect, start) before reading.
        while let Ok(Some(next)) = tokio::time::timeout(SETTLE, events.next()).await {
            match next {
                Ok(ev) => relevant |= ev.action.as_deref().is_some_and(is_relevant),
                Err(e) => {
                    return Err(DockerError::Api {
                        socket: socket.display().to_string(),
                        source: e,
                    });
                }
            }
        }
        if !relevant {
            continue;
        }
        let state = client::read_state(&docker, socket).await?;
        if tx.send(state).await.is_err() {
            return Ok(Ended::Receiver);
        }
    }
}

/// Whether an event's action can change a rule (`die`, `start`, ... but
/// not `exec_start: sh` or `health_status`).
fn is_relevant(action: &str) -> bool {
    ACTIONS.contains(&action)
}
