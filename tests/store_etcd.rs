//! What only the etcd backend does (the conformance suite in `tests/store.rs` covers what every
//! backend does): mTLS refuses a client without a valid certificate; a write on one host reaches
//! another through the watch; one member down changes nothing; a lost quorum makes every read
//! fail (so the controller deletes nothing) until the members are back, and the store then
//! recovers by itself; each host's presence lives on a lease that lapses when it stops.

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use reaper::core::model::{Name, OwnerKind, Record, Session, Timestamp};
use reaper::store::{EtcdStore, EtcdTls, RecordStore, Store, StoreError, API_SOURCE};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn session(name: &str) -> Record {
    Record::Session(Session::named(Name::new(name).unwrap()))
}

async fn apply(store: &Store, name: &str) {
    store
        .apply(vec![session(name)], API_SOURCE, T0)
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Polls `f` until it holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_valid_certificate() {
    let cluster = EtcdCluster::start(true);
    let good = cluster.settings("/reaper", "a");
    let store = Store::new(EtcdStore::open(&good).expect("a client with a valid certificate"));
    apply(&store, "s1").await;

    let rogue = cluster.rogue_certs();
    let mut signed_by_another_ca = good.clone();
    signed_by_another_ca.tls = Some(EtcdTls {
        ca_file: rogue.ca,
        cert_file: rogue.cert,
        key_file: rogue.key,
    });
    let mut no_certificate = good.clone();
    no_certificate.tls = None;
    for (case, settings) in [
        ("a certificate from another CA", signed_by_another_ca),
        ("no certificate", no_certificate),
    ] {
        match EtcdStore::open(&settings) {
            Err(StoreError::Io(e)) => eprintln!("{case}: refused: {e}"),
            Err(e) => panic!("{case}: refused, but not as an I/O error: {e}"),
            Ok(s) => panic!(
                "{case}: etcd accepted the client and it read {:?}",
                s.list(OwnerKind::Session).map(|l| l.len())
            ),
        }
    }

    let mut missing_key = good.clone();
    if let Some(tls) = &mut missing_key.tls {
        tls.key_file = cluster.dir().join("no-such-key.pem");
    }
    let err = EtcdStore::start(&missing_key).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("store.etcd.keyFile") && m.contains("no-such-key.pem")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_see_each_other_and_one_member_down_changes_nothing_but_quorum_lost_fails_closed() {
    let mut cluster = EtcdCluster::start(false);
    let a = Store::new(EtcdStore::open(&cluster.settings("/fleet", "host-a")).unwrap());
    let b = Store::new(EtcdStore::open(&cluster.settings("/fleet", "host-b")).unwrap());
    let other_prefix = Store::new(EtcdStore::open(&cluster.settings("/fleet2", "host-a")).unwrap());

    // A write on host a reaches host b through the watch, and moves b's change stream.
    let mut b_changes = b.subscribe();
    b_changes.borrow_and_update();
    apply(&a, "shared").await;
    eventually(Duration::from_secs(5), "b sees a's session", || {
        b.session("shared").unwrap().is_some()
    })
    .await;
    assert!(b_changes.has_changed().unwrap());
    assert!(
        other_prefix.sessions().unwrap().is_empty(),
        "another prefix is another fleet"
    );

    // Sightings are each host's own: b forgetting everything it does not list leaves a's.
    a.note_sightings([("container/x".to_string(), T0)].into(), vec![])
        .await
        .unwrap();
    b.note_sightings(Default::default(), vec!["container/x".into()])
        .await
        .unwrap();
    b.sync().await.unwrap();
    assert!(b.sightings().unwrap().is_empty());
    a.sync().await.unwrap();
    assert_eq!(a.sightings().unwrap().get("container/x"), Some(&T0));

    // Each host keeps its presence on a lease.
    for host in ["host-a", "host-b"] {
        let entry = etcd_get(&cluster, &format!("/fleet/hosts/{host}"));
        assert!(
            entry.contains(&format!("\"hostName\":\"{host}\"")) && entry.contains("\"lease\":"),
            "{host}'s entry is missing or on no lease: {entry}"
        );
    }

    // One member down: reads, writes and the linearizable sync all work.
    cluster.stop_member(2);
    apply(&b, "while-one-is-down").await;
    a.sync().await.unwrap();
    assert!(a.session("while-one-is-down").unwrap().is_some());

    // Two down: no quorum. sync fails, and from then on every read fails instead of answering
    // from what the cache last held.
    cluster.stop_member(1);
    let started = Instant::now();
    let err = a.sync().await.unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sync must fail within its timeout, took {:?}",
        started.elapsed()
    );
    assert!(a.health().is_err());
    assert!(matches!(a.sessions(), Err(StoreError::Io(_))));
    assert!(matches!(a.session("shared"), Err(StoreError::Io(_))));
    assert!(matches!(a.sightings(), Err(StoreError::Io(_))));
    let write = a
        .apply(vec![session("during-outage")], API_SOURCE, T0)
        .await;
    assert!(
        write.is_err(),
        "a write without quorum must fail: {write:?}"
    );

    // Back: the store recovers by itself (its watch lists again), with nothing lost.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_ready(&[0, 1, 2]);
    eventually(Duration::from_secs(20), "a's store to recover", || {
        a.health().is_ok()
    })
    .await;
    a.sync().await.unwrap();
    let names: Vec<String> = a
        .sessions()
        .unwrap()
        .iter()
        .map(|s| s.metadata.name.to_string())
        .collect();
    assert_eq!(names, ["shared", "while-one-is-down"]);

    // A host that stops renewing is gone once its lease lapses; a live one stays.
    drop(b);
    let lapse = reaper::store::host_lease::LEASE_TTL + Duration::from_secs(5);
    eventually(lapse, "host-b's entry to lapse", || {
        !etcd_get(&cluster, "/fleet/hosts/host-b").contains("hostName")
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "host-a's entry after the outage",
        || etcd_get(&cluster, "/fleet/hosts/host-a").contains("hostName"),
    )
    .await;
}

/// `etcdctl get KEY -w json` with values decoded (etcdctl prints them base64-encoded; ours are
/// JSON, so a decoded copy is appended for matching).
fn etcd_get(cluster: &EtcdCluster, key: &str) -> String {
    let out = common::run_with_timeout(
        &mut cluster.etcdctl(&[&cluster.endpoints()[0]], &["get", key, "-w", "json"]),
        None,
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value = run_base64_decode(&text);
    format!("{text}\n{value}")
}

/// The first `"value":"…"` of etcdctl's JSON, decoded with the base64 CLI.
fn run_base64_decode(json: &str) -> String {
    let Some(start) = json.find("\"value\":\"") else {
        return String::new();
    };
    let rest = &json[start + 9..];
    let encoded = &rest[..rest.find('"').unwrap_or(rest.len())];
    let out = common::run_with_timeout(
        std::process::Command::new("base64").arg("-d"),
        Some(encoded.as_bytes()),
        Duration::from_secs(5),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
