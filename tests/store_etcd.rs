//! What only the etcd backend does (the conformance suite in `tests/store.rs` covers what every
//! backend does): mTLS refuses a client without a valid certificate; a write on one host reaches
//! another through the watch; one member down changes nothing; a lost quorum makes every read
//! fail (so the controller deletes nothing) until the members are back, and the store then
//! recovers by itself; each host's presence lives on a lease that lapses when it stops; a host
//! cut off while the fleet writes and compacts resumes from a fresh listing with no change lost;
//! with etcd auth, a store whose certificate names a user limited to the prefix works there and
//! nowhere else (the least privilege of docs/fleet.md).

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use reaper::core::model::{
    EndReason, Name, OwnerKind, OwnerRef, Record, Session, SessionPhase, Timestamp,
};
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

/// The store's watch breaks (the only member it reaches is stopped) while the rest of the fleet
/// creates, changes and deletes records and then compacts etcd past the store's last revision,
/// so the watch cannot be resumed where it stopped: the store must list afresh and follow a new
/// watch from there. It must see every change of the gap (a listing merged into the old cache
/// would keep the deleted record; a watch resumed from the old revision would be refused or skip
/// the gap), tell its controller through its change stream, and leave doubt by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_overtaken_by_a_compaction_resumes_from_a_fresh_listing_with_no_change_lost() {
    let mut cluster = EtcdCluster::start(false);
    let endpoints = cluster.endpoints();
    // The reader reaches etcd through member 0 only, so stopping it breaks the reader's watch
    // and keeps it from listing again until the member is back; the writer uses the others.
    let mut through_m0 = cluster.settings("/fleet", "host-a");
    through_m0.endpoints = vec![endpoints[0].clone()];
    let mut through_m1_m2 = cluster.settings("/fleet", "host-b");
    through_m1_m2.endpoints = endpoints[1..].to_vec();
    let reader = Store::new(EtcdStore::open(&through_m0).unwrap());
    let writer = Store::new(EtcdStore::open(&through_m1_m2).unwrap());

    for name in ["kept", "changed", "deleted"] {
        apply(&writer, name).await;
    }
    eventually(
        Duration::from_secs(5),
        "the reader to follow the writer",
        || reader.sessions().is_ok_and(|s| s.len() == 3),
    )
    .await;
    let before_gap = etcd_revision(&cluster, &endpoints[1]);
    let mut changes = reader.subscribe();
    changes.borrow_and_update();
    let generation = reader.generation();

    cluster.stop_member(0);
    // Cut off, the reader fails closed instead of answering from its cache.
    eventually(
        Duration::from_secs(15),
        "the cut-off reader to fail closed",
        || reader.health().is_err(),
    )
    .await;
    assert!(matches!(reader.sessions(), Err(StoreError::Io(_))));

    // The gap: records created, changed and deleted, then etcd compacted past all of it.
    apply(&writer, "created-in-gap").await;
    writer
        .update_session("changed", |s| {
            s.end(
                EndReason::Succeeded,
                T0,
                reaper::core::model::Duration(Duration::ZERO),
            );
            Ok(())
        })
        .await
        .unwrap();
    let deleted = OwnerRef {
        kind: OwnerKind::Session,
        name: Name::new("deleted").unwrap(),
    };
    assert!(writer.remove(&deleted).await.unwrap());
    let compacted_to = etcd_revision(&cluster, &endpoints[1]);
    assert!(compacted_to > before_gap);
    let compact = etcdctl_out(
        &cluster,
        &endpoints[1],
        &["compact", &compacted_to.to_string()],
    );
    assert!(compact.0, "etcdctl compact: {}", compact.1);
    // etcd now refuses the revisions the reader's old watch would resume from.
    let old = etcdctl_out(
        &cluster,
        &endpoints[1],
        &[
            "get",
            "/fleet/",
            "--prefix",
            &format!("--rev={}", before_gap + 1),
        ],
    );
    assert!(
        !old.0 && old.1.contains("compacted"),
        "revision {} should be compacted: {}",
        before_gap + 1,
        old.1
    );

    cluster.start_member(0);
    cluster.wait_ready(&[0]);
    // Back by itself: no sync() here, the store's own follow loop must list and watch again.
    eventually(Duration::from_secs(30), "the reader to leave doubt", || {
        reader.health().is_ok()
    })
    .await;
    let names = |store: &Store| -> Vec<String> {
        store
            .sessions()
            .unwrap()
            .iter()
            .map(|s| s.metadata.name.to_string())
            .collect()
    };
    assert_eq!(names(&reader), ["changed", "created-in-gap", "kept"]);
    let changed = reader.session("changed").unwrap().unwrap();
    assert_eq!(
        changed.status.phase,
        SessionPhase::Ended,
        "the change made in the gap"
    );
    assert!(
        changes.has_changed().unwrap() && reader.generation() > generation,
        "the change stream must move so that the controller runs a pass"
    );

    // And it follows a live watch again: a later write arrives without a sync.
    changes.borrow_and_update();
    apply(&writer, "after-gap").await;
    eventually(
        Duration::from_secs(5),
        "the reader to see a write after the gap",
        || reader.session("after-gap").is_ok_and(|s| s.is_some()),
    )
    .await;
    assert!(changes.has_changed().unwrap());
    assert_eq!(
        names(&reader),
        names(&writer),
        "reader and writer must agree after the gap"
    );
}

/// docs/fleet.md's least privilege, command for command: with `--client-cert-auth`, etcd takes
/// the user from the client certificate's CN (the test CA's client certificate says
/// `CN=client`); that user's only role reaches `/reaper/`. The store works under that prefix
/// (records, watch, host lease) and is refused under any other, even `/reaper2` next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_the_prefix_works_there_and_cannot_read_or_write_outside() {
    let cluster = EtcdCluster::start(true);
    let endpoint = cluster.endpoints()[0].clone();
    let admin = |args: &[&str]| {
        let (ok, out) = etcdctl_out(&cluster, &endpoint, args);
        assert!(ok, "etcdctl {args:?}: {out}");
    };
    // Before `auth enable` anyone the CA trusts may set auth up; root keeps a password.
    admin(&[
        "user",
        "add",
        "root",
        "--new-user-password=test-root-pw",
        "--interactive=false",
    ]);
    admin(&["user", "grant-role", "root", "root"]);
    admin(&["role", "add", "reaper"]);
    admin(&[
        "role",
        "grant-permission",
        "reaper",
        "readwrite",
        "--prefix=true",
        "/reaper/",
    ]);
    admin(&["user", "add", "client", "--no-password"]);
    admin(&["user", "grant-role", "client", "reaper"]);
    admin(&["auth", "enable"]);

    let store = Store::new(
        EtcdStore::open(&cluster.settings("/reaper", "host-a")).expect("the prefix's own user"),
    );
    apply(&store, "allowed").await;
    store.sync().await.unwrap();
    assert!(store.session("allowed").unwrap().is_some());
    let watcher = Store::new(EtcdStore::open(&cluster.settings("/reaper", "host-b")).unwrap());
    apply(&store, "watched").await;
    eventually(Duration::from_secs(5), "the watch under the prefix", || {
        watcher.session("watched").is_ok_and(|s| s.is_some())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "host-a's lease under the prefix",
        || {
            watcher
                .backend()
                .live_hosts()
                .is_ok_and(|h| h.contains("host-a"))
        },
    )
    .await;

    for outside in ["/other", "/reaper2"] {
        match EtcdStore::open(&cluster.settings(outside, "host-a")) {
            Err(StoreError::Io(e)) => assert!(e.contains("permission denied"), "{outside}: {e}"),
            Err(e) => panic!("{outside}: refused, but not as an I/O error: {e}"),
            Ok(_) => panic!("the prefix's user read {outside}"),
        }
        let key = format!("{outside}/records/session/x");
        for args in [
            vec!["put", key.as_str(), "{}"],
            vec!["get", outside, "--prefix"],
        ] {
            let (ok, out) = etcdctl_out(&cluster, &endpoint, &args);
            assert!(
                !ok && out.contains("permission denied"),
                "etcdctl {args:?} as the prefix's user: {out}"
            );
        }
    }
    // Root, by password, still reads everything: nothing was written outside the prefix.
    let (ok, out) = etcdctl_out(
        &cluster,
        &endpoint,
        &[
            "--user=root:test-root-pw",
            "get",
            "",
            "--prefix",
            "--keys-only",
        ],
    );
    assert!(
        ok && out.contains("/reaper/records/session/allowed"),
        "root: {out}"
    );
    assert!(
        out.lines()
            .filter(|l| !l.is_empty())
            .all(|k| k.starts_with("/reaper/")),
        "keys outside the prefix: {out}"
    );
}

/// The cluster's current revision, as `endpoint` reports it.
fn etcd_revision(cluster: &EtcdCluster, endpoint: &str) -> i64 {
    let (ok, text) = etcdctl_out(
        cluster,
        endpoint,
        &["get", "/fleet/", "--prefix", "--keys-only", "-w", "json"],
    );
    assert!(ok, "etcdctl get: {text}");
    let at = text
        .find("\"revision\":")
        .expect("a revision in etcdctl's header");
    text[at + 11..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a numeric revision")
}

/// Runs etcdctl against one endpoint: whether it succeeded, and stdout and stderr.
fn etcdctl_out(cluster: &EtcdCluster, endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = common::run_with_timeout(
        &mut cluster.etcdctl(&[endpoint], args),
        None,
        Duration::from_secs(10),
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
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
