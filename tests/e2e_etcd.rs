//! The daemon on the etcd backend (issue 14's foundation): a private 3-member etcd cluster with
//! mTLS, one reaper on the private engine. A sled host's export imports into it (migration).
//! An ended session's objects go; with two of three
//! members stopped (no quorum) nothing is deleted, not even an orphan, and status and metrics
//! say safe mode; once the members are back the pending cleanups complete by themselves.
//! Bystanders stay throughout.

mod common;

use common::etcd::EtcdCluster;
use common::*;
use reaper::core::model::{EndReason, Name, Record, Session, Timestamp};
use reaper::store::{Store, API_SOURCE};
use std::path::Path;
use std::time::Duration;

/// A stopped sled host's data dir with two sessions, one of them ended (a status to carry).
fn sled_host_with_records(data_dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(&data_dir.join("store")).unwrap();
        let now = Timestamp::now();
        let records = ["e2e-etcd-m1", "e2e-etcd-m2"]
            .map(|n| Record::Session(Session::named(Name::new(n).unwrap())));
        store
            .apply(records.to_vec(), API_SOURCE, now)
            .await
            .unwrap();
        store
            .update_session("e2e-etcd-m2", |s| {
                s.end(EndReason::Succeeded, now, Default::default());
                Ok(())
            })
            .await
            .unwrap();
    });
}

fn session_yaml(name: &str, cleanup: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  cleanup: {{{cleanup}}}\n"
    )
}

fn containers_of(session: &str) -> Vec<Obj> {
    let label = [("reaper.session", session)];
    vec![
        (
            Kind::Container,
            Container::new(&format!("{session}-run"))
                .labels(&label)
                .running()
                .create(),
        ),
        (
            Kind::Container,
            Container::new(&format!("{session}-idle"))
                .labels(&label)
                .create(),
        ),
    ]
}

const STORE_UP: &str = "reaper_store_up{backend=\"etcd\"}";

#[test]
fn cleans_up_through_etcd_and_deletes_nothing_while_quorum_is_lost() {
    let _scope = Scope::new(&["e2e-etcd-"]);
    let bystanders = Bystanders::create("etcd");
    let mut cluster = EtcdCluster::start(true);
    assert!(cluster.client_certs().is_some(), "an mTLS cluster");
    let mut args = cluster.serve_args("/e2e");
    args.extend(
        [
            "--resync-interval",
            "1s",
            "--orphan-grace-period",
            "1s",
            "--host-name",
            "host-a",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = Reaper::start(&args);

    // Migration: a sled host's records, exported from its data dir, imported into etcd through
    // the daemon, status included.
    let sled_dir = tempfile::tempdir().unwrap();
    sled_host_with_records(sled_dir.path());
    let exported = r.cli_ok(&[
        "store",
        "export",
        "--data-dir",
        &sled_dir.path().display().to_string(),
    ]);
    let file = write_file(sled_dir.path(), "export.yaml", &exported);
    r.cli_ok(&["store", "import", "-f", &file.display().to_string()]);
    assert_eq!(r.phase("sessions", "e2e-etcd-m1"), "Active");
    assert!(
        ["Ended", "Cleaned"].contains(&r.phase("sessions", "e2e-etcd-m2").as_str()),
        "the ended session's status was not carried over"
    );

    // Applied and ended through this reaper: the record is in etcd, its containers go.
    r.apply(&session_yaml("e2e-etcd-s1", ""));
    let s1 = containers_of("e2e-etcd-s1");
    let stored = run_with_timeout(
        &mut cluster.etcdctl(
            &[&cluster.endpoints()[0]],
            &["get", "--keys-only", "/e2e/records/session/e2e-etcd-s1"],
        ),
        None,
        Duration::from_secs(10),
    );
    assert!(
        String::from_utf8_lossy(&stored.stdout).contains("/e2e/records/session/e2e-etcd-s1"),
        "the session is not in etcd: {stored:?}"
    );
    r.cli_ok(&["session", "end", "e2e-etcd-s1"]);
    r.wait_until(
        "the ended session's containers are removed",
        Duration::from_secs(20),
        || all_gone(&s1),
    );
    r.wait_until("the store is up", Duration::from_secs(10), || {
        metric(&r.metrics_addr(), STORE_UP) == Some(1.0)
    });

    // Ended with a short delay, then quorum lost before the delay passes.
    r.apply(&session_yaml("e2e-etcd-s2", "delay: 2s"));
    let s2 = containers_of("e2e-etcd-s2");
    r.cli_ok(&["session", "end", "e2e-etcd-s2"]);
    cluster.stop_member(1);
    cluster.stop_member(2);
    // An orphan that appears during the outage: its owner record may exist, unseen.
    let ghost = [(
        Kind::Container,
        Container::new("e2e-etcd-ghost")
            .label("reaper.session", "e2e-etcd-ghost")
            .create(),
    )];
    let mut pending = s2.clone();
    pending.extend(ghost.iter().cloned());
    r.wait_until("status shows safe mode", Duration::from_secs(20), || {
        r.cli(&["status"]).status.success()
            && String::from_utf8_lossy(&r.cli(&["status"]).stdout).contains("safe mode:  ON")
    });
    assert_eq!(metric(&r.metrics_addr(), "reaper_safe_mode"), Some(1.0));
    assert_eq!(metric(&r.metrics_addr(), STORE_UP), Some(0.0));
    assert_holds_for(
        "nothing is deleted while etcd has no quorum (the delay has passed, the orphan's grace too)",
        Duration::from_secs(5),
        || all_exist(&pending),
    );
    let status = r.cli_ok(&["status"]);
    assert!(status.contains("safe mode:  ON"), "{status}");
    assert!(
        status.contains("etcd"),
        "status should say the store is etcd: {status}"
    );

    // Members back: the reaper resumes by itself and finishes the pending cleanups.
    cluster.start_member(1);
    cluster.start_member(2);
    r.wait_until(
        "the pending cleanups complete once etcd is back",
        Duration::from_secs(30),
        || all_gone(&pending),
    );
    r.wait_until("safe mode ends", Duration::from_secs(10), || {
        metric(&r.metrics_addr(), "reaper_safe_mode") == Some(0.0)
            && metric(&r.metrics_addr(), STORE_UP) == Some(1.0)
    });
    r.wait_until("the session is Cleaned", Duration::from_secs(10), || {
        r.phase("sessions", "e2e-etcd-s2") == "Cleaned"
    });
    bystanders.assert_all_alive();
}
