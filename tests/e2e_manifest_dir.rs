//! The declarative manifest directory (`reaper serve --manifests DIR`) against the real binary
//! and the private engine: files appear, change, lose documents, disappear and break, and the
//! records and their Docker objects follow, within 2 s, without ever touching what a broken
//! file declared before.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The promise: a change is noticed within 2 s. The CLI poll itself costs a few tens
/// of milliseconds, which this allowance covers.
const NOTICE: Duration = Duration::from_millis(2500);

fn session_doc(name: &str, rev: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\n  labels: {{rev: \"{rev}\"}}\n\
         spec:\n  match:\n    labels: {{md-test: {name}}}\n  cleanup:\n    stopTimeout: 1s\n"
    )
}

/// Writes like an editor or a configuration tool: a hidden temp file, then a rename.
fn put(dir: &Path, file: &str, text: &str) -> PathBuf {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write temp manifest");
    let path = dir.join(file);
    std::fs::rename(&tmp, &path).expect("rename manifest into place");
    path
}

fn record(r: &Reaper, name: &str) -> Option<Value> {
    let out = r.cli(&["get", "sessions", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn rev(r: &Reaper, name: &str) -> String {
    record(r, name)
        .and_then(|v| v["metadata"]["labels"]["rev"].as_str().map(String::from))
        .unwrap_or_default()
}

fn deleting(r: &Reaper, name: &str) -> bool {
    record(r, name).is_none_or(|v| !v["status"]["deletingSince"].is_null())
}

fn containers(prefix: &str, session: &str, n: usize) -> Vec<Obj> {
    (0..n)
        .map(|i| {
            (
                Kind::Container,
                Container::new(&format!("{prefix}-{session}-{i}"))
                    .label("md-test", session)
                    .create(),
            )
        })
        .collect()
}

#[test]
fn the_manifest_directory_is_declared_state() {
    let _scope = Scope::new(&["e2e-md-"]);
    let bystanders = Bystanders::create("mandir");
    let mut r = Reaper::prepare(&[]);
    let dir = r.dir().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    r.set_extra(&[
        "--manifests",
        &dir.display().to_string(),
        "--resync-interval",
        "2s",
    ]);
    r.spawn();
    r.wait_ready();

    // A file appears: applied, owned by the file.
    let started = Instant::now();
    let a = put(
        &dir,
        "a.yaml",
        &format!(
            "{}---\n{}",
            session_doc("e2e-md-a", "1"),
            session_doc("e2e-md-b", "1")
        ),
    );
    let took = r.wait_until("a.yaml is applied", NOTICE, || {
        record(&r, "e2e-md-a").is_some() && record(&r, "e2e-md-b").is_some()
    });
    eprintln!("new file applied after {:?}", started.elapsed());
    assert!(took <= NOTICE);
    let a_src = a.display().to_string();
    assert_eq!(
        record(&r, "e2e-md-a").unwrap()["status"]["source"].as_str(),
        Some(a_src.as_str())
    );
    let objs_a = containers("e2e-md", "e2e-md-a", 2);
    let objs_b = containers("e2e-md", "e2e-md-b", 2);

    // Edited: configured in place, objects untouched.
    let started = Instant::now();
    put(
        &dir,
        "a.yaml",
        &format!(
            "{}---\n{}",
            session_doc("e2e-md-a", "2"),
            session_doc("e2e-md-b", "1")
        ),
    );
    r.wait_until("the edit is applied", NOTICE, || rev(&r, "e2e-md-a") == "2");
    eprintln!("edit applied after {:?}", started.elapsed());
    assert!(all_exist(&objs_a) && all_exist(&objs_b));

    // The CLI may not change or delete a file-owned record, and says which file owns it.
    let out = r.cli_stdin(&["apply", "-f", "-"], &session_doc("e2e-md-a", "cli"));
    assert!(
        !out.status.success(),
        "apply of a file-owned record succeeded"
    );
    assert!(
        stderr_of(&out).contains(&a_src),
        "apply error: {}",
        stderr_of(&out)
    );
    let out = r.cli(&["delete", "session", "e2e-md-a"]);
    assert!(
        !out.status.success(),
        "delete of a file-owned record succeeded"
    );
    assert!(
        stderr_of(&out).contains(&a_src),
        "delete error: {}",
        stderr_of(&out)
    );
    assert_eq!(rev(&r, "e2e-md-a"), "2");
    assert!(!deleting(&r, "e2e-md-a"));

    // A bad file (a typo, and b's document dropped): reported, and nothing changes.
    let metrics = r.metrics_addr();
    put(
        &dir,
        "a.yaml",
        &format!("{}    bogus: 1\n", session_doc("e2e-md-a", "3")),
    );
    r.wait_until("reaper_manifest_errors is 1", NOTICE, || {
        metric(&metrics, "reaper_manifest_errors") == Some(1.0)
    });
    assert_holds_for(
        "the records of the broken file stay as they were",
        Duration::from_secs(3),
        || rev(&r, "e2e-md-a") == "2" && !deleting(&r, "e2e-md-a") && !deleting(&r, "e2e-md-b"),
    );
    assert!(
        all_exist(&objs_a) && all_exist(&objs_b),
        "objects of a broken file's records were touched"
    );
    assert!(
        r.log().contains("a.yaml"),
        "the log does not name the bad file\n{}",
        r.log_tail()
    );

    // Fixed, with b's document removed: b is deleted and its objects cleaned up; a stays.
    let started = Instant::now();
    put(&dir, "a.yaml", &session_doc("e2e-md-a", "4"));
    r.wait_until("the fixed file is applied", NOTICE, || {
        rev(&r, "e2e-md-a") == "4"
    });
    r.wait_until("reaper_manifest_errors is 0", NOTICE, || {
        metric(&metrics, "reaper_manifest_errors") == Some(0.0)
    });
    let gone = gone_times(&objs_b, started, Duration::from_secs(15));
    eprintln!(
        "removed document: objects gone after {:?}",
        gone.iter().max()
    );
    r.wait_until("e2e-md-b's record is gone", Duration::from_secs(10), || {
        record(&r, "e2e-md-b").is_none()
    });
    assert!(
        all_exist(&objs_a),
        "a's objects: missing {:?}",
        missing(&objs_a)
    );

    // The file is deleted: a is deleted and its objects cleaned up.
    let started = Instant::now();
    std::fs::remove_file(&a).unwrap();
    let gone = gone_times(&objs_a, started, Duration::from_secs(15));
    eprintln!("deleted file: objects gone after {:?}", gone.iter().max());
    r.wait_until("e2e-md-a's record is gone", Duration::from_secs(10), || {
        record(&r, "e2e-md-a").is_none()
    });

    bystanders.assert_all_alive();
}

#[test]
fn a_bad_file_is_shown_in_reaper_status() {
    let mut r = Reaper::prepare(&[]);
    let dir = r.dir().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    let bad = put(
        &dir,
        "broken.yaml",
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: x}\nspec: {tll: 1h}\n",
    );
    r.set_extra(&["--manifests", &dir.display().to_string()]);
    r.spawn();
    r.wait_ready();
    let shown = bad.display().to_string();
    r.wait_until("reaper status -o json names the bad file", NOTICE, || {
        let out = r.cli(&["status", "-o", "json"]);
        stdout_of(&out).contains(&shown)
    });
    let text = r.cli_ok(&["status"]);
    assert!(
        text.contains(&shown),
        "reaper status does not name {shown}:\n{text}"
    );
    assert!(record(&r, "x").is_none());
}
