//! Bad manifests: each kind gets a clear error naming the file, the document and the line,
//! and nothing of the batch is applied. A `status:` block only warns.

mod common;

use common::*;
use std::path::Path;

/// One bad manifest and what its error must say.
struct Case {
    file: &'static str,
    /// 1-based index of the bad document.
    document: usize,
    /// Text on the line the error must name (the first line containing it, or any of these).
    lines: &'static [&'static str],
    /// Words of which the error must contain at least one (the field or the offending value).
    words: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        file: "bad/unknown-field.yaml",
        document: 1,
        lines: &["tll:"],
        words: &["tll"],
    },
    Case {
        file: "bad/bad-duration.yaml",
        document: 1,
        lines: &["heartbeatTimeout:"],
        words: &["2 hours", "heartbeatTimeout"],
    },
    Case {
        file: "bad/bad-name.yaml",
        document: 1,
        lines: &["name: Bad_Name"],
        words: &["Bad_Name"],
    },
    Case {
        file: "bad/duplicate-key.yaml",
        document: 1,
        lines: &["ttl: 2h", "ttl: 3h"],
        words: &["duplicate", "ttl"],
    },
    Case {
        file: "bad/wrong-api-version.yaml",
        document: 1,
        lines: &["apiVersion:"],
        words: &["reaper/v2", "apiVersion"],
    },
    Case {
        file: "bad/wrong-kind.yaml",
        document: 1,
        lines: &["kind: Pod"],
        words: &["Pod", "kind"],
    },
    Case {
        file: "bad/bad-label.yaml",
        document: 1,
        lines: &["session=id"],
        words: &["session=id"],
    },
    Case {
        file: "bad/zero-ttl.yaml",
        document: 1,
        lines: &["ttl: 0s"],
        words: &["spec.ttl: must be greater than 0s"],
    },
    Case {
        file: "bad/zero-heartbeat.yaml",
        document: 1,
        lines: &["heartbeatTimeout: 0s"],
        words: &["spec.heartbeatTimeout: must be greater than 0s"],
    },
    Case {
        file: "bad/second-of-two.yaml",
        document: 2,
        lines: &["bulidDir:"],
        words: &["bulidDir"],
    },
];

fn mentions_document(stderr: &str, n: usize) -> bool {
    let s = stderr.to_lowercase();
    [
        format!("document {n}"),
        format!("document #{n}"),
        format!("document: {n}"),
        format!("document={n}"),
        format!("doc {n}"),
        format!("doc #{n}"),
    ]
    .iter()
    .any(|p| s.contains(p.as_str()))
}

fn mentions_line(stderr: &str, n: usize) -> bool {
    let s = stderr.to_lowercase();
    [
        format!("line {n}"),
        format!("line: {n}"),
        format!("line={n}"),
        format!(":{n}:"),
    ]
    .iter()
    .any(|p| {
        // "line 1" must not match "line 12".
        s.match_indices(p.as_str())
            .any(|(i, m)| !s[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn assert_nothing_applied(r: &Reaper, after: &str) {
    for kind in ["sessions", "agents"] {
        let list = r.list(kind);
        assert!(
            list.is_empty(),
            "after {after}, get {kind} shows applied records: {list:#?}"
        );
    }
}

fn assert_rejected(r: &Reaper, path: &Path, case: &Case) {
    let shown = path.display().to_string();
    let out = r.cli(&["apply", "-f", &shown]);
    let stderr = stderr_of(&out);
    assert!(
        !out.status.success(),
        "apply of {} succeeded; stdout: {}",
        case.file,
        stdout_of(&out)
    );
    let file_name = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    assert!(
        stderr.contains(file_name),
        "the error for {} does not name the file: {stderr}",
        case.file
    );
    assert!(
        mentions_document(&stderr, case.document),
        "the error for {} does not name document {}: {stderr}",
        case.file,
        case.document
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let lines: Vec<usize> = case.lines.iter().map(|l| line_of(&text, l)).collect();
    assert!(
        lines.iter().any(|&n| mentions_line(&stderr, n)),
        "the error for {} does not name line {lines:?}: {stderr}",
        case.file
    );
    assert!(
        case.words.iter().any(|w| stderr.contains(w)),
        "the error for {} mentions none of {:?}: {stderr}",
        case.file,
        case.words
    );
    assert_nothing_applied(r, case.file);
}

#[test]
fn each_kind_of_bad_manifest_is_rejected_clearly_and_applies_nothing() {
    let bystanders = Bystanders::create("badinput");
    let r = Reaper::start(&[]);
    for case in CASES {
        assert_rejected(&r, &fixture(case.file), case);
    }

    // A document over 1 MiB, after a valid one.
    let mut big = String::from(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-big-ok}\nspec: {}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: e2e-big\n  labels:\n",
    );
    let value = "x".repeat(4000);
    for i in 0..300 {
        big.push_str(&format!("    k{i}: \"{value}\"\n"));
    }
    big.push_str("spec: {}\n");
    assert!(big.len() > 1024 * 1024);
    let path = write_file(r.dir(), "oversized.yaml", &big);
    let out = r.cli(&["apply", "-f", &path.display().to_string()]);
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "an oversized document was accepted");
    assert!(
        stderr.contains("oversized.yaml"),
        "the error does not name the file: {stderr}"
    );
    assert!(
        mentions_document(&stderr, 2),
        "the error does not name document 2: {stderr}"
    );
    assert_nothing_applied(&r, "an oversized document");

    // A directory is one batch: one bad file means none of its files is applied.
    let dir = r.dir().join("batch");
    write_file(
        &dir,
        "a-good.yaml",
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-dir-ok}\nspec: {}\n",
    );
    write_file(
        &dir,
        "b-bad.yaml",
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-dir-bad}\nspec: {ttl: soon}\n",
    );
    let out = r.cli(&["apply", "-f", &dir.display().to_string()]);
    assert!(
        !out.status.success(),
        "a directory with a bad file was applied"
    );
    assert!(
        stderr_of(&out).contains("b-bad.yaml"),
        "the error does not name the bad file: {}",
        stderr_of(&out)
    );
    assert_nothing_applied(&r, "a directory with one bad file");

    // From stdin, the error still points at the line.
    let stdin = "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-stdin}\n\
                 spec:\n  ttl: 1h\n  colour: red\n";
    let out = r.cli_stdin(&["apply", "-f", "-"], stdin);
    assert!(
        !out.status.success(),
        "an unknown field from stdin was accepted"
    );
    assert!(
        mentions_line(&stderr_of(&out), 6),
        "the stdin error does not name line 6: {}",
        stderr_of(&out)
    );
    assert_nothing_applied(&r, "bad stdin");
    bystanders.assert_all_alive();
}

#[test]
fn a_status_block_is_ignored_with_a_warning() {
    let r = Reaper::start(&[]);
    let out = r.cli(&[
        "apply",
        "-f",
        &fixture("status-block.yaml").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "a status block must only warn: {}",
        stderr_of(&out)
    );
    let stderr = stderr_of(&out).to_lowercase();
    assert!(
        stderr.contains("status") && (stderr.contains("warn") || stderr.contains("ignor")),
        "no warning about the status block: {stderr}"
    );
    let rec = r.session("e2e-status-ignored");
    assert_eq!(
        rec["status"]["phase"], "Active",
        "the applied status was not ignored: {rec:#}"
    );
}
