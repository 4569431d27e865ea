//! `reaper store import` of a document without its status (issue 13, section 5): a manifest
//! imported as a record was created in 1970, expired at once and put 56 years into the cleanup
//! latency metric for good. Import refuses it, through the daemon and offline, pointing to
//! `reaper apply`, and imports nothing of the batch; a real export still imports.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn cleanup_latency_sum(r: &Reaper) -> f64 {
    scrape(&r.metrics_addr())
        .lines()
        .filter(|l| l.starts_with("reaper_owner_end_to_cleanup_seconds_sum"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn refused(out: &std::process::Output, parts: &[&str]) {
    let err = stderr_of(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "import must fail; stdout: {} stderr: {err}",
        stdout_of(out)
    );
    assert!(!stdout_of(out).contains("Imported"), "{}", stdout_of(out));
    for p in parts {
        assert!(err.contains(p), "{p:?} missing from: {err}");
    }
}

#[test]
fn an_import_without_status_is_refused_and_reaches_no_record_or_metric() {
    let _scope = Scope::new(&["e2e-im-"]);
    let mut r = Reaper::start(&["--resync-interval", "1s"]);
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-im-keep}\nspec: {ttl: 1h}\n",
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/session.yaml");
    let example = example.display().to_string();

    // The reproduction: a manifest given to import.
    let out = r.cli(&["store", "import", "-f", &example]);
    refused(
        &out,
        &[
            &format!("{example}: document 1 (Session tdd-run-42) has no `status:`"),
            "apply it with `reaper apply -f` instead",
            "Nothing was imported",
        ],
    );
    // A status without createdAt, with a good record in the same batch: the daemon refuses
    // the whole batch.
    let export = r.cli_ok(&["store", "export"]);
    assert!(export.contains("e2e-im-keep"), "{export}");
    let half = write_file(
        r.dir(),
        "half.yaml",
        &format!(
            "{}---\napiVersion: reaper/v1\nkind: Session\nmetadata: {{name: e2e-im-half}}\n\
             spec: {{ttl: 1h}}\nstatus: {{phase: Active}}\n",
            export.replace("e2e-im-keep", "e2e-im-copy")
        ),
    );
    let half = half.display().to_string();
    let out = r.cli(&["store", "import", "-f", &half]);
    refused(
        &out,
        &[
            "session/e2e-im-half has no status.createdAt",
            "`reaper apply -f`",
            "nothing was imported",
        ],
    );
    for name in ["tdd-run-42", "e2e-im-half", "e2e-im-copy"] {
        assert_eq!(r.phase("sessions", name), "", "{name} must not be imported");
    }
    // Passes ran meanwhile; nothing expired and the latency metric saw nothing from 1970.
    std::thread::sleep(Duration::from_millis(2500));
    let sum = cleanup_latency_sum(&r);
    assert!(sum < 60.0, "cleanup latency sum {sum}");
    assert_eq!(r.phase("sessions", "e2e-im-keep"), "Active");

    // A real export imports (with another name, so it is a new record).
    let copy = write_file(
        r.dir(),
        "copy.yaml",
        &export.replace("e2e-im-keep", "e2e-im-copy"),
    );
    let out = r.cli_ok(&["store", "import", "-f", &copy.display().to_string()]);
    assert!(out.contains("Imported 1 record(s)."), "{out}");
    assert_eq!(r.phase("sessions", "e2e-im-copy"), "Active");

    // Offline, straight into a stopped daemon's store: the same refusals.
    r.stop();
    let data_dir = r.data_dir().display().to_string();
    let out = r.cli(&["store", "import", "-f", &example, "--data-dir", &data_dir]);
    refused(&out, &["has no `status:`", "`reaper apply -f`"]);
    let out = r.cli(&["store", "import", "-f", &half, "--data-dir", &data_dir]);
    refused(
        &out,
        &[
            &format!("{half}: session/e2e-im-half has no status.createdAt"),
            "nothing was imported",
        ],
    );
    let offline = r.cli_ok(&["store", "export", "--data-dir", &data_dir]);
    assert!(!offline.contains("e2e-im-half"), "{offline}");
    assert!(!offline.contains("tdd-run-42"), "{offline}");
}
