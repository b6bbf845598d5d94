//! A site's role: which node is its master, under which epoch. Epochs only move forward
//! (the state store enforces it); the node with the highest epoch's record is right.
//!
//! This is the value the daemon's role owner (`daemon::roles`) publishes to every reader;
//! the failover state of a site is to join it here.

use crate::config::{Config, Site};

/// The epoch of a site that was never failed over or switched: its config's `primary`
/// is master.
pub const FIRST_EPOCH: i64 = 1;

/// Who is master of a site, under which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRole {
    pub master: String,
    pub epoch: i64,
}

impl SiteRole {
    /// The one rule for a site that no state store holds yet: the config's `primary` is
    /// master at [`FIRST_EPOCH`]. Used once, when a site is first recorded (and by
    /// commands reading a node whose agent never ran).
    pub fn first(site: &Site) -> SiteRole {
        SiteRole {
            master: site.primary.clone(),
            epoch: FIRST_EPOCH,
        }
    }

    pub fn is_master(&self, node: &str) -> bool {
        self.master == node
    }

    /// The standby: the node of the pair that is not the master.
    pub fn standby<'c>(&self, config: &'c Config, site: &'c Site) -> &'c str {
        config
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .find(|n| *n != self.master)
            .unwrap_or(site.standby.as_str())
    }
}
