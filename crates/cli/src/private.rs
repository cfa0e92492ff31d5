//! The node's data dir is its owner's alone: it holds the node's identity,
//! the API token, the key sealing S3 secrets, and the gateway's databases
//! (share ids in clear, sealed keys). The dir and `gateway/` are 0700 and
//! the files in them 0600: set when they are made, and tightened at every
//! start, with a warning for what an older build (or a hand) left looser.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Creates `data_dir` (0700) if needed and tightens it, its `gateway/`
/// dir and the regular files directly in them; `warn` says so for each
/// one that was looser (a fresh start passes false for the files it just
/// made).
pub fn tighten(data_dir: &Path, warn: bool) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    for dir in [data_dir.to_path_buf(), data_dir.join("gateway")] {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else { continue };
        if !meta.is_dir() {
            continue;
        }
        fix(&dir, &meta, 0o700, warn)?;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                fix(&entry.path(), &meta, 0o600, warn)?;
            }
        }
    }
    Ok(())
}

fn fix(path: &Path, meta: &std::fs::Metadata, mode: u32, warn: bool) -> Result<()> {
    let now = meta.permissions().mode() & 0o777;
    if now & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot make {} private (chmod {mode:o} it by hand)", path.display()))?;
    if warn {
        tracing::warn!(path = %path.display(), was = format!("{now:o}"), now = format!("{mode:o}"), "other users could read this part of the data dir; it is its owner's alone now");
    }
    Ok(())
}
