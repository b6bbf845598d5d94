use super::*;

fn side(node: &str, role: Role, read_only: bool) -> Side {
    Side {
        node: node.into(),
        role: Some(role),
        read_only: Some(read_only),
        ..Side::default()
    }
}

fn healthy_pg() -> Figures {
    Figures {
        wal_receiver: Some("streaming".into()),
        sender_state: Some("streaming".into()),
        lag_bytes: Some(0),
        replay_lag_seconds: Some(0.0),
        replay_paused: Some(false),
        heartbeat_age_ms: Some(4_000),
        ..Figures::default()
    }
}

fn healthy_my() -> Figures {
    Figures {
        io_running: Some("Yes".into()),
        sql_running: Some("Yes".into()),
        seconds_behind: Some(0),
        replica_configured: Some(true),
        heartbeat_age_ms: Some(3_000),
        ..Figures::default()
    }
}

const MAX: Duration = Duration::from_secs(60);

#[test]
fn healthy_replication_is_healthy() {
    let m = side("alice", Role::Primary, false);
    let s = side("bob", Role::Standby, true);
    assert_eq!(
        judge(Engine::Postgres, &m, &s, &healthy_pg(), MAX, true),
        (Verdict::Healthy, vec![])
    );
    assert_eq!(
        judge(Engine::Mysql, &m, &s, &healthy_my(), MAX, true),
        (Verdict::Healthy, vec![])
    );
}

#[test]
fn a_cut_wal_receiver_or_stopped_threads_are_broken() {
    let m = side("alice", Role::Primary, false);
    let s = side("bob", Role::Standby, true);
    let mut f = healthy_pg();
    f.wal_receiver = None;
    let (v, why) = judge(Engine::Postgres, &m, &s, &f, MAX, true);
    assert_eq!(v, Verdict::Broken);
    assert_eq!(why, vec!["no WAL receiver on the standby".to_string()]);

    let mut f = healthy_my();
    f.io_running = Some("No".into());
    f.sql_running = Some("No".into());
    f.seconds_behind = None;
    let (v, why) = judge(Engine::Mysql, &m, &s, &f, MAX, true);
    assert_eq!(v, Verdict::Broken);
    assert!(
        why.contains(&"IO thread is not running (No)".to_string()),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w.contains("NULL")),
        "NULL Seconds_Behind is a failure, not zero: {why:?}"
    );
}

#[test]
fn lag_past_max_lag_is_lagging_and_paused_replay_says_so() {
    let m = side("alice", Role::Primary, false);
    let s = side("bob", Role::Standby, true);
    let mut f = healthy_pg();
    f.replay_paused = Some(true);
    f.replay_lag_seconds = Some(75.0);
    f.heartbeat_age_ms = Some(80_000);
    let (v, why) = judge(Engine::Postgres, &m, &s, &f, MAX, true);
    assert_eq!(v, Verdict::Lagging);
    assert_eq!(why.len(), 3, "{why:?}");
    // The engine says 0 but the heartbeat is old: the heartbeat is believed.
    let mut f = healthy_my();
    f.heartbeat_age_ms = Some(61_000);
    let (v, why) = judge(Engine::Mysql, &m, &s, &f, MAX, true);
    assert_eq!(v, Verdict::Lagging);
    assert!(why[0].contains("61.0 s old"), "{why:?}");
    // Without heartbeats the engine's figure decides.
    let mut f = healthy_my();
    f.heartbeat_age_ms = None;
    assert_eq!(
        judge(Engine::Mysql, &m, &s, &f, MAX, false).0,
        Verdict::Healthy
    );
}

#[test]
fn wrong_roles_and_unreachable_sides_are_broken() {
    let m = side("alice", Role::Primary, false);
    let promoted = side("bob", Role::Primary, false);
    let (v, why) = judge(
        Engine::Postgres,
        &m,
        &promoted,
        &Figures::default(),
        MAX,
        false,
    );
    assert_eq!(v, Verdict::Broken);
    assert_eq!(
        why,
        vec!["standby bob is a primary, not a standby".to_string()]
    );

    let down = Side {
        node: "alice".into(),
        error: Some("database main on alice at 198.51.100.1: connection refused".into()),
        ..Side::default()
    };
    let s = side("bob", Role::Standby, true);
    let (v, why) = judge(Engine::Postgres, &down, &s, &healthy_pg(), MAX, true);
    assert_eq!(v, Verdict::Broken);
    assert_eq!(
        why.len(),
        1,
        "no heartbeat noise when a side is down: {why:?}"
    );

    let ro_master = side("alice", Role::Primary, true);
    let (v, _) = judge(Engine::Mysql, &ro_master, &s, &healthy_my(), MAX, true);
    assert_eq!(v, Verdict::Broken);
}

#[test]
fn a_lost_slot_is_broken() {
    let m = side("alice", Role::Primary, false);
    let s = side("bob", Role::Standby, true);
    let mut f = healthy_pg();
    f.slots = vec![Slot {
        name: "bob".into(),
        active: false,
        wal_status: Some("lost".into()),
    }];
    let (v, why) = judge(Engine::Postgres, &m, &s, &f, MAX, true);
    assert_eq!(v, Verdict::Broken);
    assert!(why[0].contains("slot bob is lost"), "{why:?}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let e = Endpoint {
        node: "alice".into(),
        url: "postgres://orch@198.51.100.1/app".into(),
        password: Some("hunter2".into()),
    };
    assert!(!format!("{e:?}").contains("hunter2"));
    assert_eq!(
        describe(&e, "main"),
        "database main on alice at 198.51.100.1"
    );
}

/// The agent spawns these futures: they must be `Send` for any borrow (sqlx's raw_sql
/// and some borrowed binds are not — rust-lang/rust#102211).
#[test]
fn operations_can_be_spawned() {
    type Boxed<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
    fn checked(t: Target) -> Boxed<Report> {
        Box::pin(async move { check(&t).await })
    }
    fn beaten(t: Target) -> Boxed<Result<(), String>> {
        Box::pin(async move { beat(&t, "alice").await })
    }
    fn promoted(e: Endpoint) -> Boxed<Result<(), String>> {
        Box::pin(async move { promote(Engine::Mysql, &e, "main", Duration::from_secs(1)).await })
    }
    fn executed(e: Endpoint) -> Boxed<Result<String, String>> {
        Box::pin(async move {
            execute(
                Engine::Postgres,
                &e,
                "main",
                "SELECT 1",
                Duration::from_secs(1),
            )
            .await
        })
    }
    let _ = (checked, beaten, promoted, executed);
}
