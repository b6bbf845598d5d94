//! Setting a node up: `orch init`, `orch pubkey`, `orch config check`.

use super::{Exit, Result};
use crate::config::{self, LoadOptions};
use anyhow::{anyhow, Context as _};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub(super) fn config_check(path: &Path, options: &LoadOptions) -> Result {
    let loaded = config::load(path, options)?;
    let c = &loaded.config;
    let jobs: usize = c.sites.iter().map(|s| s.sync.len()).sum();
    let dbs: usize = c.sites.iter().map(|s| s.databases.len()).sum();
    println!(
        "{}: ok: cluster {}, this node is {} (peer {}); {} site(s), {} sync job(s), {} database(s)",
        path.display(),
        c.cluster.name,
        loaded.me,
        loaded.peer().name,
        c.sites.len(),
        jobs,
        dbs
    );
    Ok(())
}

pub(super) fn init(
    config_path: &Path,
    node: Option<&str>,
    tunnel_ip: Option<std::net::IpAddr>,
    endpoint: Option<String>,
) -> Result {
    let node = node.ok_or_else(|| {
        Exit::usage(anyhow!(
            "orch init needs --node NAME (this node's name in the config)"
        ))
    })?;
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Exit::usage(anyhow!(
            "node name `{node}` must be letters, digits, '-' or '_'"
        )));
    }
    if let Some(ep) = &endpoint {
        config::validate_endpoint(ep).map_err(|e| Exit::usage(anyhow!("--endpoint: {e}")))?;
    }
    let dir = config::config_dir(config_path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(Exit::failed)?;

    let key_file = dir.join(config::DEFAULT_KEY_FILE);
    let key = if key_file.exists() {
        let key = config::read_private_key(&key_file).map_err(|e| Exit::failed(anyhow!(e)))?;
        eprintln!(
            "Keeping the existing key {} (orch init never replaces a key).",
            key_file.display()
        );
        key
    } else {
        let key = tunnel::PrivateKey::generate();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| {
                f.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
                f.sync_all()
            })
            .with_context(|| format!("writing {}", key_file.display()))
            .map_err(Exit::failed)?;
        eprintln!("Wrote the private key {} (mode 0600).", key_file.display());
        key
    };
    let public = key.public_key();
    let tunnel_ip = tunnel_ip.unwrap_or(std::net::IpAddr::from([10, 77, 0, 1]));
    let section =
        super::starter::node_section(node, &public.to_string(), tunnel_ip, endpoint.as_deref());

    if config_path.exists() {
        eprintln!(
            "{} exists and was left alone. Make sure it has this node:\n\n{section}",
            config_path.display()
        );
    } else {
        let text = super::starter::config(node, &section, tunnel_ip);
        std::fs::write(config_path, text)
            .with_context(|| format!("writing {}", config_path.display()))
            .map_err(Exit::failed)?;
        eprintln!(
            "Wrote a starter config {}.\nNext: add the peer's [nodes.NAME] (its `orch pubkey`), then copy the \
             same file to both nodes and run `orch config check` on each.",
            config_path.display()
        );
    }
    println!("{public}");
    Ok(())
}

pub(super) fn pubkey(config_path: &Path, options: &LoadOptions) -> Result {
    let key_file = match config::load(config_path, options) {
        Ok(loaded) => loaded.me().private_key_file.clone(),
        // A config that is not complete yet (one node, right after `orch init`) still
        // has the key beside it.
        Err(_) => config::config_dir(config_path).join(config::DEFAULT_KEY_FILE),
    };
    let key = config::read_private_key(&key_file).map_err(|e| Exit::failed(anyhow!(e)))?;
    println!("{}", key.public_key());
    Ok(())
}
