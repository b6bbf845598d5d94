//! The receiver with the real state store, role owner and push engine, on loopback: a
//! whole push at the current epoch lands; a push whose epoch the receiver left while it
//! ran is stopped and confirms nothing; a push at a stale epoch is refused at the door.

use super::*;
use crate::config::testing;
use agent::sync::plan::Limit;
use agent::sync::send::{self, Progress, Source};
use agent::sync::wire::{Frame, ToReceiver};
use agent::sync::Excludes;
use std::io::BufReader;

struct Bob {
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    store: Store,
    roles: Roles,
    receiver: Arc<Receiver>,
}

async fn bob() -> Bob {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let sites = format!(
        "[sites.web]\nprimary = \"alice\"\nstandby = \"bob\"\n\n\
         [[sites.web.sync]]\nname = \"www\"\nschedule = \"0 3 * * *\"\npath = {{ alice = \"{}\", bob = \"{}\" }}\n",
        src.display(),
        dst.display()
    );
    let (dir, loaded) = testing::pair("bob", &sites);
    let state = loaded.me().state_dir.clone();
    let store = Store::open(&state).await.unwrap();
    let roles = Roles::load(store.clone(), &loaded.config).await.unwrap();
    let receiver = Arc::new(Receiver::new(
        Arc::new(loaded),
        store.clone(),
        roles.clone(),
    ));
    Bob {
        state,
        _dir: dir,
        _tmp: tmp,
        src,
        dst,
        store,
        roles,
        receiver,
    }
}

fn open(epoch: i64) -> Open {
    Open {
        protocol: wire::SYNC_PROTOCOL,
        site: "web".into(),
        job: "www".into(),
        epoch,
        generation: None,
        dry_run: false,
        force: false,
        root_meta: None,
    }
}

/// Serves one push on a fresh loopback connection; returns the sender's end.
async fn serve(bob: &Bob, open: Open) -> (std::net::TcpStream, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Arc::clone(&bob.receiver);
    let served = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        receiver.receive(open, stream).await;
    });
    let client = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (client, served)
}

/// Reads messages until one matches `want` (bounded by the socket's read timeout).
fn read_until(
    input: &mut BufReader<std::net::TcpStream>,
    want: impl Fn(&ToSender) -> bool,
) -> ToSender {
    for _ in 0..1000 {
        let frame = wire::read_frame(input).expect("the receiver answers");
        if let Frame::Msg(_) = frame {
            let msg: ToSender = frame.msg().unwrap();
            if want(&msg) {
                return msg;
            }
        }
    }
    panic!("no such message in 1000 frames");
}

async fn last_receive_event(store: &Store) -> agent::state::Event {
    store
        .history(Some("web"), 20)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "receive")
        .expect("the session is recorded")
}

#[tokio::test]
async fn a_push_at_the_current_epoch_lands() {
    let bob = bob().await;
    std::fs::write(bob.src.join("index.html"), "hello").unwrap();
    let sent = push_all(&bob, 1).await;
    assert!(sent.refused.is_none(), "{:?}", sent.refused);
    assert_eq!(
        std::fs::read_to_string(bob.dst.join("index.html")).unwrap(),
        "hello"
    );
    let event = last_receive_event(&bob.store).await;
    assert_eq!(event.outcome, Outcome::Ok, "{}", event.summary);
    let confirmed = bob.store.manifest("web", "www", "receive").await.unwrap();
    assert_eq!(confirmed.map(|m| m.epoch), Some(1));
}

/// Pushes bob's `src` to his `dst` as alice would at `epoch`; returns what was sent.
async fn push_all(bob: &Bob, epoch: i64) -> send::Sent {
    let (client, served) = serve(bob, open(epoch)).await;
    let src = bob.src.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let excludes = Excludes::new(&[]).unwrap();
        let source = Source {
            root: &src,
            excludes: &excludes,
            manifest: None,
            max_delete: Limit::Percent(50.0),
            force: false,
            dry_run: false,
        };
        send::push(client, &source, &Progress::default())
    })
    .await
    .unwrap()
    .unwrap();
    served.await.unwrap();
    sent
}

#[tokio::test]
async fn the_first_push_ever_received_keeps_what_it_replaces() {
    let bob = bob().await;
    // A replica nothing confirmed: a former master that never received a push.
    std::fs::create_dir_all(&bob.dst).unwrap();
    std::fs::write(bob.dst.join("index.html"), "written here").unwrap();
    std::fs::write(bob.dst.join("same.txt"), "same").unwrap();
    std::fs::write(bob.src.join("index.html"), "hello").unwrap();
    std::fs::write(bob.src.join("same.txt"), "same").unwrap();
    let sent = push_all(&bob, 1).await;
    assert!(sent.refused.is_none(), "{:?}", sent.refused);
    assert_eq!(
        std::fs::read_to_string(bob.dst.join("index.html")).unwrap(),
        "hello"
    );
    assert_eq!(sent.diverged, ["index.html"], "an equal file is not kept");
    let kept = std::fs::read_dir(bob.state.join("diverged/web"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(kept.join("index.html")).unwrap(),
        "written here"
    );
    // Confirmed at the epoch: the next push replaces without keeping.
    std::fs::write(bob.src.join("index.html"), "hello again").unwrap();
    let sent = push_all(&bob, 1).await;
    assert!(sent.diverged.is_empty(), "{:?}", sent.diverged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_stopped_once_the_receivers_epoch_moves_on() {
    let bob = bob().await;
    let (client, served) = serve(&bob, open(1)).await;
    let mut input = BufReader::new(client.try_clone().unwrap());
    let mut output = client;
    // Admitted: the receiver sends what it holds, then waits for steps.
    tokio::task::block_in_place(|| {
        read_until(&mut input, |m| {
            matches!(m, ToSender::State { last: true, .. })
        })
    });

    // Meanwhile bob took the site over (a failover records it through the role owner).
    assert!(bob.roles.advance("web", "bob", 2).await.unwrap());

    let answer = tokio::task::block_in_place(|| {
        // Whatever the sender sends from now on is not taken.
        let _ = wire::write_msg(&mut output, &ToReceiver::Finish);
        read_until(&mut input, |m| matches!(m, ToSender::Error { .. }))
    });
    let ToSender::Error { message } = answer else {
        unreachable!()
    };
    assert!(message.contains("moved on"), "{message}");
    assert!(message.contains("epoch 2"), "{message}");
    served.await.unwrap();
    let event = last_receive_event(&bob.store).await;
    assert_eq!(event.outcome, Outcome::Fail, "{}", event.summary);
    assert!(event.summary.contains("moved on"), "{}", event.summary);
    assert!(
        bob.store
            .manifest("web", "www", "receive")
            .await
            .unwrap()
            .is_none(),
        "nothing confirmed under the old epoch"
    );

    // A new push under the old epoch is refused at the door: alice is no longer master.
    let (client, served) = serve(&bob, open(1)).await;
    let mut input = BufReader::new(client);
    let answer = tokio::task::block_in_place(|| {
        read_until(&mut input, |m| matches!(m, ToSender::Error { .. }))
    });
    served.await.unwrap();
    let ToSender::Error { message } = answer else {
        unreachable!()
    };
    assert!(
        message.contains("bob is master of web here (epoch 2), not alice"),
        "{message}"
    );
}
