//! The config's `[[sites.X.database]]` as `agent::db` sees them: each database's master
//! and standby side under the site's current role, the URLs with `{node}` filled in,
//! passwords read from their files.

use crate::cluster::roles::SiteRole;
use crate::config::{Config, Database, DbKind, Site};
use agent::db::{Endpoint, Engine, Target};

/// Why a site's databases cannot be checked as configured.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no node {0}")]
    NoNode(String),
    #[error("{0}")]
    Secret(String),
}

/// Where `db` is on `node`, with its password read from its file.
pub fn endpoint(config: &Config, db: &Database, node: &str) -> Result<Endpoint, TargetError> {
    let n = config
        .nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| TargetError::NoNode(node.to_owned()))?;
    let password = match &db.password_file {
        Some(file) => Some(crate::config::read_secret_file(file).map_err(TargetError::Secret)?),
        None => None,
    };
    Ok(Endpoint {
        node: node.to_owned(),
        url: db.url_for(n.tunnel_ip),
        password,
    })
}

pub fn engine(kind: DbKind) -> Engine {
    match kind {
        DbKind::Postgres => Engine::Postgres,
        DbKind::Mysql => Engine::Mysql,
    }
}

/// The checks' view of every database of `site` under `role`.
pub fn targets(config: &Config, site: &Site, role: &SiteRole) -> Result<Vec<Target>, TargetError> {
    let endpoint = |db: &Database, node: &str| endpoint(config, db, node);
    let (master, standby) = (role.master.as_str(), role.standby(config, site));
    site.databases
        .iter()
        .map(|db| {
            Ok(Target {
                site: site.name.clone(),
                name: db.name.clone(),
                engine: engine(db.kind),
                master: endpoint(db, master)?,
                standby: endpoint(db, standby)?,
                max_lag: db.max_lag,
                heartbeat_table: db.heartbeat.then(|| db.heartbeat_table.clone()),
            })
        })
        .collect()
}
