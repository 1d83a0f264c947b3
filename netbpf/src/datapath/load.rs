//! Loading the eBPF object, with its maps pinned (and pinned maps of another layout carried over).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfError, EbpfLoader, maps::MapError};
use log::{info, warn};
use netbpf_common::map_names;

use crate::{
    config::Config,
    maps::{self},
    migrate,
};

use super::error::*;

/// Mounts bpffs at `/sys/fs/bpf` if the pin directory lives there and it is
/// not mounted yet, then creates the pin directory.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), DatapathError> {
    let bpffs = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        info!("mounting bpffs at {}", bpffs.display());
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| DatapathError::Bpffs {
            path: bpffs.to_owned(),
            source: io::Error::from(e),
        })?;
    }
    fs::create_dir_all(pin_dir).map_err(|source| DatapathError::Bpffs {
        path: pin_dir.to_owned(),
        source,
    })?;
    // Checked before anything is loaded or attached, so a bad --pin-dir
    // never leaves programs running without their pins.
    if !is_bpffs(pin_dir) {
        return Err(DatapathError::Bpffs {
            path: pin_dir.to_owned(),
            source: io::Error::other("not on a bpf filesystem (mount -t bpf bpf DIR)"),
        });
    }
    Ok(())
}

/// Whether `path` is a bpffs mount point.
pub(crate) fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: u64 = 0xcafe4a11;
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as u64 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Loads the embedded object with the config's capacities, without
/// attaching anything. Used by the daemon and by the in-kernel tests.
pub fn load(config: &Config) -> Result<Ebpf, DatapathError> {
    load_with_pins(config, None)
}

/// Loads the object; with `pin_dir`, every map is pinned there, and a map
/// already pinned there (a datapath that outlived its daemon) is reused if
/// its layout is the one this binary expects — so flows survive a restart.
pub fn load_with_pins(config: &Config, pin_dir: Option<&Path>) -> Result<Ebpf, DatapathError> {
    let capacity = config.conntrack.capacity;
    let paths: Vec<(&'static str, PathBuf)> = match pin_dir {
        Some(dir) => map_names::ALL
            .iter()
            .map(|name| (*name, maps::pin_path(dir, name)))
            .collect(),
        None => Vec::new(),
    };
    // A pinned map whose layout is not this object's (an older netbpf, or
    // another capacity) is carried over where that is possible
    // (crate::migrate), else refused.
    let mut carried: Vec<(&'static str, migrate::Carried)> = Vec::new();
    loop {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::CONNTRACK, capacity)
            .map_max_entries(map_names::CONNTRACK_REPLY, capacity)
            .map_max_entries(map_names::NAT_MAPPINGS, capacity)
            .map_max_entries(map_names::NAT_REVERSE, capacity);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let err = match loader.load(crate::ebpf_object()) {
            Ok(mut ebpf) => {
                for (name, entries) in carried {
                    let n = migrate::restore(&mut ebpf, name, entries)?;
                    info!("{name}: {n} entries carried over from the old pinned map");
                }
                return Ok(ebpf);
            }
            Err(e) => e,
        };
        if let EbpfError::MapError(MapError::IncompatiblePinnedMap { name, .. }) = &err
            && let Some((map, path)) = paths.iter().find(|(n, _)| *n == name)
            && !carried.iter().any(|(n, _)| n == map)
        {
            match migrate::take(map, path) {
                Ok(entries) => {
                    warn!(
                        "{map}: the pinned map has another layout or size (an older netbpf, or a changed capacity); it is made anew, its entries carried over"
                    );
                    carried.push((map, entries));
                    continue;
                }
                Err(migrate::MigrateError::NotMigratable { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Err(match err {
            EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name,
                property,
                expected,
                actual,
            }) => DatapathError::Incompatible {
                pin_dir: pin_dir.map(Path::to_owned).unwrap_or_default(),
                name,
                property,
                expected,
                actual,
            },
            other => DatapathError::Load(other),
        });
    }
}
