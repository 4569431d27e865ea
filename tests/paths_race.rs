//! An attacker races reaper's build-directory removal and tries to make it delete outside the
//! paths root (the `remove_dir_all` symlink race, CVE-2022-21658).
//!
//! The attacker thread atomically swaps, in a tight loop, a directory under the root for a
//! symlink to a sentinel directory outside it (`renameat2(RENAME_EXCHANGE)` with a link it keeps
//! under a spare name), in two places: the target itself (`build`) and a directory inside the
//! tree (`build/inner`). Meanwhile the main thread recreates the tree and removes it, thousands
//! of times. Errors from the removal are acceptable under attack; touching the sentinel is not.
//!
//! `REAPER_RACE_ITERATIONS` raises the iteration count for a long run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use reaper::core::model::RelPath;
use reaper::paths::{exists_below, remove_below, Removal};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;

const DEFAULT_ITERATIONS: u64 = 10_000;
/// The whole race must finish within this, or the test fails saying how far it got.
/// A bound against a hang, not a speed target: an idle machine does 10,000 iterations in a few
/// seconds, a loaded shared one in about a minute.
const TIME_LIMIT: Duration = Duration::from_secs(300);

/// Files outside the root that a removal which followed the attacker's link would delete: the
/// tree under attack holds the same names.
const SENTINEL_FILES: [&str; 3] = ["precious", "inner/precious", "inner/deep/precious"];

#[derive(Default)]
struct Counters {
    exchanges: AtomicU64,
    /// Symlinks the attacker created at the target's spare name; only `remove_below` deletes them.
    top_links_made: AtomicU64,
    /// Same, for the directory inside the tree.
    inner_links_made: AtomicU64,
}

/// Stops the attacker even when the main thread panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

fn open_dir(dir: impl AsFd, name: &str) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).ok()
}

/// One round of the attack on `name` in `dir`: make sure a link to the sentinel waits at
/// `spare`, then exchange the two names atomically. Works only through handles opened with
/// `O_NOFOLLOW`, so the attacker itself never writes into the sentinel.
fn swap(dir: &OwnedFd, name: &str, spare: &str, outside: &Path, made: &AtomicU64, c: &Counters) {
    if rustix::fs::symlinkat(outside, dir, spare).is_ok() {
        made.fetch_add(1, Relaxed);
    }
    match rustix::fs::renameat_with(dir, name, dir, spare, RenameFlags::EXCHANGE) {
        Ok(()) => {
            c.exchanges.fetch_add(1, Relaxed);
        }
        // `name` was removed: put back whatever waits at the spare name (often the link), so
        // the removal meets it as its target.
        Err(Errno::NOENT) => {
            let _ = rustix::fs::renameat_with(dir, spare, dir, name, RenameFlags::NOREPLACE);
        }
        Err(_) => {}
    }
}

fn attacker(root: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let Ok(root_fd) = rustix::fs::open(&root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    else {
        return;
    };
    while !stop.load(Relaxed) {
        swap(
            &root_fd,
            "build",
            "build.swap",
            &outside,
            &c.top_links_made,
            &c,
        );
        if let Some(build) = open_dir(&root_fd, "build") {
            swap(
                &build,
                "inner",
                "inner.swap",
                &outside,
                &c.inner_links_made,
                &c,
            );
        }
    }
}

/// The tree a build leaves behind, made where the attacker does not look, then renamed into
/// place.
fn make_tree(stage: &Path) {
    fs::create_dir_all(stage.join("inner/deep")).unwrap();
    fs::create_dir_all(stage.join("other/empty")).unwrap();
    for f in SENTINEL_FILES {
        fs::write(stage.join(f), "build output").unwrap();
    }
    fs::write(stage.join("other/artifact"), "x").unwrap();
}

fn assert_sentinel_intact(outside: &Path, iteration: u64) {
    for f in SENTINEL_FILES {
        let p = outside.join(f);
        match fs::read_to_string(&p) {
            Ok(s) if s == "keep" => {}
            other => panic!(
                "iteration {iteration}: the removal escaped the root: {} is {other:?}",
                p.display()
            ),
        }
    }
}

/// Every path below `dir`, not following symlinks.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn a_concurrent_symlink_swap_never_makes_removal_escape_the_root() {
    let iterations: u64 = std::env::var("REAPER_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir_all(outside.join("inner/deep")).unwrap();
    for f in SENTINEL_FILES {
        fs::write(outside.join(f), "keep").unwrap();
    }
    let sentinel_listing = listing(&outside);

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let guard = StopOnDrop(stop.clone());
    let handle = {
        let (root, outside) = (root.clone(), outside.clone());
        let (stop, counters) = (stop.clone(), counters.clone());
        thread::spawn(move || attacker(root, outside, stop, counters))
    };

    let whole = RelPath::new("build").unwrap();
    let nested = RelPath::new("build/inner").unwrap();
    let stage = root.join("stage");
    let (mut removed, mut already_gone, mut refused, mut other_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut error_samples = Vec::new();
    let started = Instant::now();
    for i in 0..iterations {
        assert!(
            started.elapsed() < TIME_LIMIT,
            "only {i} of {iterations} iterations within {TIME_LIMIT:?}"
        );
        if !stage.exists() {
            make_tree(&stage);
        }
        // Fails while something is at `build` (a leftover link or tree); the removal below
        // deals with that, and the stage is used next time.
        let _ = fs::rename(&stage, root.join("build"));
        // Mostly the whole tree (the attacker swaps the target and a directory inside it);
        // sometimes a path through `build`, to race the walk to the target.
        let rel = if i % 4 == 3 { &nested } else { &whole };
        match remove_below(&root, rel) {
            Ok(Removal::Removed) => removed += 1,
            Ok(Removal::AlreadyGone) => already_gone += 1,
            Err(e) if e.is_refusal() => refused += 1,
            Err(e) => {
                other_errors += 1;
                if error_samples.len() < 5 {
                    error_samples.push(e.to_string());
                }
            }
        }
        assert_sentinel_intact(&outside, i);
    }
    let elapsed = started.elapsed();
    drop(guard);
    handle.join().unwrap();

    // Links the attacker made and that are gone now were unlinked by `remove_below`: nothing
    // else deletes. Count the ones still lying around first.
    let top_left = ["build", "build.swap"]
        .iter()
        .filter(|n| is_symlink(&root.join(n)))
        .count() as u64;
    let inner_left = ["build", "build.swap"]
        .iter()
        .flat_map(|d| ["inner", "inner.swap"].map(|n| root.join(d).join(n)))
        .filter(|p| is_symlink(p))
        .count() as u64;
    let top_unlinked = counters.top_links_made.load(Relaxed) - top_left;
    let inner_unlinked = counters.inner_links_made.load(Relaxed) - inner_left;
    let exchanges = counters.exchanges.load(Relaxed);
    println!(
        "{iterations} iterations in {elapsed:.1?}: removed {removed}, already gone \
         {already_gone}, refused {refused}, other errors {other_errors} {error_samples:?}; \
         attacker exchanges {exchanges}; links met and unlinked as the target {top_unlinked}, \
         inside the tree {inner_unlinked}"
    );

    // Nothing outside the root changed: not deleted, not added.
    assert_eq!(listing(&outside), sentinel_listing);
    assert_sentinel_intact(&outside, iterations);

    // The race really happened, in every state that matters:
    // the removal met the link as its target and unlinked it (the link, not the sentinel);
    assert!(
        top_unlinked >= 10,
        "the target was rarely a symlink: {top_unlinked}"
    );
    // it met links inside the tree;
    assert!(
        inner_unlinked >= 10,
        "the tree rarely held a symlink: {inner_unlinked}"
    );
    // it met a link on the way to `build/inner` and refused to follow it;
    assert!(refused >= 10, "the walk rarely met a symlink: {refused}");
    // and it still did its job most of the time.
    assert!(
        removed >= iterations / 4,
        "removal rarely succeeded: {removed}"
    );

    // Without an attacker, the removal cleans up whatever the race left.
    for name in ["build", "build.swap", "stage"] {
        let rel = RelPath::new(name).unwrap();
        remove_below(&root, &rel).unwrap();
        assert!(!exists_below(&root, &rel).unwrap(), "{name}");
    }
    assert_eq!(listing(&root), Vec::<String>::new());
    assert_eq!(listing(&outside), sentinel_listing);
    assert!(fs::symlink_metadata(&outside).unwrap().file_type().is_dir());
}
