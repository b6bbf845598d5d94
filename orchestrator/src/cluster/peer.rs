//! Whether the tunnel and the peer's agent count as up, from what the tunnel and the
//! heartbeats last said. Times are tokio's, so a test can pause them.

use super::roles::SiteRole;
use agent::peer::{Heartbeat, SiteClaim};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tunnel::link::LinkStats;

/// How often an agent sends its peer a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What we last heard from the peer's agent.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    pub last_contact: Option<Instant>,
    pub heartbeat: Option<Heartbeat>,
    pub last_error: Option<String>,
}

impl PeerView {
    /// A heartbeat went through within the last three heartbeat periods.
    pub fn reachable(&self) -> bool {
        self.last_contact
            .is_some_and(|t| t.elapsed() < HEARTBEAT_EVERY * 3)
    }
}

/// This node's heartbeat: its sites' masters and epochs, those it is taking over in a
/// switchover (`switching`), those whose automatic failover is armed here (`armed`), and
/// where it sees the peer's packets come from.
pub fn heartbeat(
    me: &str,
    roles: BTreeMap<String, SiteRole>,
    switching: &BTreeSet<String>,
    armed: &BTreeSet<String>,
    observed_endpoint: Option<SocketAddr>,
) -> Heartbeat {
    Heartbeat {
        node: me.to_owned(),
        sites: roles
            .into_iter()
            .map(|(name, role)| {
                let claim = SiteClaim {
                    master: role.master,
                    epoch: role.epoch,
                    switching: switching.contains(&name),
                    armed: armed.contains(&name),
                };
                (name, claim)
            })
            .collect(),
        observed_endpoint,
    }
}

/// The tunnel counts as up when a handshake completed less than 180 s ago (WireGuard
/// rekeys every 2 minutes while traffic flows) and the peer is not silent.
pub fn tunnel_up(stats: &LinkStats) -> bool {
    stats
        .since_handshake
        .is_some_and(|d| d < Duration::from_secs(180))
        && !stats.suspect
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_peer_is_reachable_for_three_heartbeats() {
        let view = PeerView {
            last_contact: Some(Instant::now()),
            ..PeerView::default()
        };
        assert!(view.reachable());
        tokio::time::advance(HEARTBEAT_EVERY * 3 - Duration::from_millis(1)).await;
        assert!(view.reachable());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!view.reachable());
        assert!(!PeerView::default().reachable());
    }

    #[test]
    fn a_heartbeat_says_which_sites_are_armed_and_an_older_one_none() {
        let role = |m: &str| SiteRole {
            master: m.into(),
            epoch: 2,
        };
        let roles = BTreeMap::from([("a".to_owned(), role("bob")), ("b".to_owned(), role("bob"))]);
        let armed = BTreeSet::from(["b".to_owned()]);
        let beat = heartbeat("bob", roles, &BTreeSet::new(), &armed, None);
        assert!(!beat.sites["a"].armed);
        assert!(beat.sites["b"].armed);
        let json = serde_json::to_string(&beat).unwrap();
        assert_eq!(json.matches("\"armed\"").count(), 1, "{json}");
        // A peer that does not say it (an older agent) arms nothing here.
        let older = json.replace(",\"armed\":true", "");
        let read: Heartbeat = serde_json::from_str(&older).unwrap();
        assert!(!read.sites["b"].armed, "{older}");
    }

    #[test]
    fn a_silent_or_old_tunnel_is_down() {
        let fresh = LinkStats {
            since_handshake: Some(Duration::from_secs(10)),
            ..LinkStats::default()
        };
        assert!(tunnel_up(&fresh));
        assert!(!tunnel_up(&LinkStats {
            suspect: true,
            ..fresh.clone()
        }));
        assert!(!tunnel_up(&LinkStats {
            since_handshake: Some(Duration::from_secs(180)),
            ..fresh
        }));
        assert!(!tunnel_up(&LinkStats::default()));
    }
}
