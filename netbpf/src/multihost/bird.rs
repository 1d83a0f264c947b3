//! A BIRD daemon in a lab namespace: started in the foreground with its
//! own config, control socket and pid file, killed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    bgp,
    lab::{LabError, io_err},
    netns::Netns,
};

/// A BIRD daemon running in the foreground inside a namespace, with its
/// own config, control socket and pid file. Killed on drop.
pub struct BirdDaemon {
    child: Option<Child>,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    pid_file: PathBuf,
}

impl BirdDaemon {
    /// Starts `bird -f -c CONF -s SOCK -P PID` in `ns` (with `-R`, graceful
    /// restart recovery, when `recover`) and waits until its socket answers.
    pub fn start(ns: &Netns, conf: &Path, dir: &Path, recover: bool) -> Result<Self, LabError> {
        let socket = dir.join("bird.ctl");
        let pid_file = dir.join("bird.pid");
        let log = dir.join("bird.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("duplicating the log fd"))?;
        let mut cmd = ns.command("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid_file);
        if recover {
            cmd.arg("-R");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(
                "starting bird (is bird2 installed? `cargo xtask setup`)",
            ))?;
        let mut daemon = BirdDaemon {
            child: Some(child),
            socket,
            log,
            pid_file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if bgp::BirdClient::connect(&daemon.socket).is_ok() {
                return Ok(daemon);
            }
            if let Some(c) = daemon.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                daemon.child = None;
                return Err(LabError::Daemon(format!(
                    "bird exited with {status}: {}",
                    fs::read_to_string(&daemon.log).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Daemon(format!(
                    "bird's socket {} did not answer within 10 s",
                    daemon.socket.display()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills BIRD at once (SIGKILL: no goodbye to its peers, like a crash)
    /// and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Drop for BirdDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
