//! Free space under this node's own sync targets: for its reports (as the standby) and
//! for the peer's reports (asked over peer RPC).

use crate::config::Loaded;
use agent::peer::TargetSpace;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("no site `{0}` in my config")]
    UnknownSite(String),
    #[error("{path}: {source}")]
    Statvfs {
        path: String,
        source: rustix::io::Errno,
    },
}

/// Free space under this node's sync targets of `site` (paths from our config only; a
/// target that does not exist yet is measured at its nearest existing parent).
pub fn target_spaces(loaded: &Loaded, site: &str) -> Result<Vec<TargetSpace>, SpaceError> {
    let site = loaded
        .config
        .site(site)
        .ok_or_else(|| SpaceError::UnknownSite(site.to_owned()))?;
    let mut out = Vec::new();
    for job in &site.sync {
        let Some(path) = job.paths.get(&loaded.me) else {
            continue;
        };
        let measured = path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let (free_bytes, total_bytes) = free_space(measured)?;
        out.push(TargetSpace {
            job: job.name.clone(),
            path: path.display().to_string(),
            free_bytes,
            total_bytes,
        });
    }
    Ok(out)
}

/// Free and total bytes of the file system holding `path`.
fn free_space(path: &Path) -> Result<(u64, u64), SpaceError> {
    let st = rustix::fs::statvfs(path).map_err(|source| SpaceError::Statvfs {
        path: path.display().to_string(),
        source,
    })?;
    let frsize = st.f_frsize.max(1);
    Ok((
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}
