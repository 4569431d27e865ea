//! Nothing lost, whatever happens (issue 4): crashes mid-cleanup, Docker going away, a damaged
//! store, a full disk and reaper's own downtime, against the real binary and the private engine.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small deterministic PRNG (xorshift), seeded from the clock and printed, so a failing run
/// can be told apart from another.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("random seed: {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn session_doc(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  cleanup:\n    stopTimeout: 1s\n---\n"
    )
}

fn session_names(r: &Reaper) -> Vec<String> {
    r.list("sessions")
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn alive(r: &mut Reaper) -> bool {
    r.wait_exit(Duration::ZERO).is_none() && r.pid().is_some()
}

/// Creates `per` containers for each session (the first `running` of each started), in
/// parallel, labelled `reaper.session=<session>`.
fn containers_for(sessions: &[String], per: usize, running: usize) -> Vec<(String, Obj)> {
    let jobs: Vec<(String, String, bool)> = sessions
        .iter()
        .flat_map(|s| (0..per).map(move |i| (s.clone(), format!("{s}-c{i}"), i < running)))
        .collect();
    let chunks: Vec<Vec<(String, String, bool)>> = jobs
        .chunks(jobs.len().div_ceil(4).max(1))
        .map(|c| c.to_vec())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                chunk
                    .into_iter()
                    .map(|(s, name, run)| {
                        let c = Container::new(&name).label("reaper.session", &s);
                        let id = if run { c.running() } else { c.created() }.create();
                        (s, (Kind::Container, id))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("container creation thread"))
        .collect()
}

#[test]
fn kill_9_mid_cleanup_twenty_times_loses_nothing() {
    const SESSIONS: usize = 10;
    const PER: usize = 10;
    const KILLS: usize = 20;
    // Nothing here waits for the resync: a restarted daemon passes at once. The interval only
    // sets the bound the issue asks for ("gone within one resync interval").
    let resync = Duration::from_secs(20);
    let _scope = Scope::new(&["e2e-fk-"]);
    let bystanders = Bystanders::create("killnine");
    let mut rng = Rng::new();
    // One removal at a time, so the cleanup of 100 containers spans many kills.
    let mut r = Reaper::start(&["--resync-interval", "20s", "--concurrency", "1"]);

    let names: Vec<String> = (0..SESSIONS).map(|i| format!("e2e-fk-s{i}")).collect();
    let docs: String = names.iter().map(|n| session_doc(n, "")).collect();
    r.apply(&format!("{docs}{}", session_doc("e2e-fk-live", "")));
    // All running: each removal is a graceful stop plus a delete, so a session's cleanup takes
    // long enough (one at a time) that the kills land in the middle of it even on a quiet machine.
    let objs = containers_for(&names, PER, PER);
    let live: Vec<Obj> = containers_for(&["e2e-fk-live".to_string()], 3, 1)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    let mut applied: Vec<String> = names.clone();
    applied.push("e2e-fk-live".into());
    let mut ended: Vec<String> = Vec::new();
    let ended_objs = |ended: &[String]| -> Vec<Obj> {
        objs.iter()
            .filter(|(s, _)| ended.contains(s))
            .map(|(_, o)| o.clone())
            .collect()
    };
    let mut mid_cleanup = 0;
    let started = Instant::now();

    for kill in 0..KILLS {
        // End one more session every other kill, so a cleanup is always under way.
        if kill.is_multiple_of(2) {
            let s = &names[kill / 2];
            r.cli_ok(&["session", "end", s]);
            ended.push(s.clone());
        }
        // And a new record right before the crash: acknowledged means durable.
        let fresh = format!("e2e-fk-k{kill}");
        r.apply(&session_doc(&fresh, ""));
        applied.push(fresh);
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        r.kill9();
        // Was a cleanup under way? (Counted just after the kill: nothing moves meanwhile.)
        if existence(&ended_objs(&ended)).into_iter().any(|e| e) {
            mid_cleanup += 1;
        }
        r.spawn();
        r.wait_ready();
        let have = session_names(&r);
        let lost: Vec<&String> = applied.iter().filter(|n| !have.contains(n)).collect();
        assert!(
            lost.is_empty(),
            "after kill {kill}, records applied before the crash are missing: {lost:?}\n{}",
            r.log_tail()
        );
    }
    let after_last = Instant::now();
    let ended_objs = ended_objs(&ended);
    assert_eq!(ended_objs.len(), SESSIONS * PER);
    let left_at_restart = existence(&ended_objs).into_iter().filter(|e| *e).count();
    eprintln!(
        "{mid_cleanup}/{KILLS} kills landed mid-cleanup; {:?} for the kill loop",
        started.elapsed()
    );
    assert!(
        mid_cleanup >= KILLS / 2,
        "only {mid_cleanup} of {KILLS} kills happened while a cleanup was under way"
    );
    // Everything left must go within one resync interval of the last restart (measured and
    // printed), even one removal at a time.
    let times = gone_times(&ended_objs, after_last, resync);
    let last = times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "after the last restart: {left_at_restart} objects were left; all gone after {last:?}"
    );
    for s in &ended {
        r.wait_until(&format!("{s} is Cleaned"), resync * 3, || {
            r.phase("sessions", s) == "Cleaned"
        });
    }
    assert!(
        all_exist(&live),
        "a live session's objects were removed: {:?}",
        missing(&live)
    );
    bystanders.assert_all_alive();
}

#[test]
fn docker_stopped_mid_cleanup_then_cleanup_completes() {
    let _scope = Scope::new(&["e2e-fd-"]);
    let bystanders = Bystanders::create("dockerdown");
    let mut r = Reaper::start(&["--resync-interval", "2s", "--concurrency", "1"]);
    let m = r.metrics_addr();
    r.apply(&session_doc("e2e-fd-s", ""));
    let objs: Vec<Obj> = containers_for(&["e2e-fd-s".to_string()], 10, 10)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    r.wait_until("reaper_docker_up is 1", Duration::from_secs(10), || {
        metric(&m, "reaper_docker_up") == Some(1.0)
    });

    r.cli_ok(&["session", "end", "e2e-fd-s"]);
    // Stop the engine while removals are in flight (running containers take ~1 s each).
    std::thread::sleep(Duration::from_millis(1500));
    let down = Instant::now();
    stop_docker_engine();
    r.wait_until("reaper_docker_up is 0", Duration::from_secs(15), || {
        metric(&m, "reaper_docker_up") == Some(0.0)
    });
    let remaining = Duration::from_secs(10).saturating_sub(down.elapsed());
    std::thread::sleep(remaining);
    assert!(
        alive(&mut r),
        "reaper exited while Docker was down\n{}",
        r.log_tail()
    );
    start_docker_engine();
    let up = Instant::now();
    let t = r.wait_until(
        "reaper_docker_up is 1 again",
        Duration::from_secs(30),
        || metric(&m, "reaper_docker_up") == Some(1.0),
    );
    eprintln!("docker up again noticed after {t:?}");
    gone_times(&objs, up, Duration::from_secs(30));
    r.wait_until("the session is Cleaned", Duration::from_secs(15), || {
        r.phase("sessions", "e2e-fd-s") == "Cleaned"
    });
    assert!(alive(&mut r), "reaper exited\n{}", r.log_tail());
    assert!(!r.log().contains("panicked"), "{}", r.log_tail());
    bystanders.assert_all_alive();
}

/// Every regular file under `dir` except reaper's own marker, recursively.
fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sled_files(&p));
        } else if p.file_name().is_some_and(|n| n != "reaper-store") {
            out.push(p);
        }
    }
    out
}

fn assert_safe_mode(r: &mut Reaper, orphan: &[Obj], what: &str) {
    let m = r.metrics_addr();
    r.wait_until(
        &format!("{what}: reaper_safe_mode is 1"),
        Duration::from_secs(10),
        || metric(&m, "reaper_safe_mode") == Some(1.0),
    );
    let status = r.cli(&["status"]);
    let text = format!("{}{}", stdout_of(&status), stderr_of(&status));
    assert!(
        text.contains("safe mode:  ON") && text.contains("store:      ERROR"),
        "{what}: reaper status does not say safe mode and why:\n{text}"
    );
    // The orphan is past its 1 s grace: a trusting daemon would remove it at once.
    assert_holds_for(
        &format!("{what}: nothing is deleted"),
        Duration::from_secs(4),
        || all_exist(orphan),
    );
    assert!(alive(r), "{what}: reaper exited\n{}", r.log_tail());
    let log = r.log();
    assert!(
        !log.contains("panicked"),
        "{what}: a panic\n{}",
        r.log_tail()
    );
    assert!(
        log.contains("store"),
        "{what}: the log says nothing about the store\n{}",
        r.log_tail()
    );
}

#[test]
fn a_damaged_store_means_safe_mode_and_nothing_deleted() {
    let _scope = Scope::new(&["e2e-fs-"]);
    let bystanders = Bystanders::create("damaged");
    let mut r = Reaper::start(&["--resync-interval", "1s", "--orphan-grace-period", "1s"]);
    r.apply(&format!(
        "{}{}",
        session_doc("e2e-fs-a", ""),
        session_doc("e2e-fs-b", "")
    ));
    r.stop();
    // An object of a session the store knows nothing about: an orphan, soon past its grace.
    let orphan = vec![(
        Kind::Container,
        Container::new("e2e-fs-orphan")
            .label("reaper.session", "e2e-fs-ghost")
            .create(),
    )];
    std::thread::sleep(Duration::from_millis(1500));
    let store = r.data_dir().join("store");

    // Scrambled: every sled file overwritten with noise of the same length.
    let mut rng = Rng::new();
    for f in sled_files(&store) {
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        let noise: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        std::fs::write(&f, noise).unwrap();
    }
    r.spawn();
    r.wait_ready();
    assert_safe_mode(&mut r, &orphan, "scrambled store");
    r.kill9();

    // Truncated: every sled file emptied.
    for f in sled_files(&store) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .and_then(|f| f.set_len(0))
            .unwrap();
    }
    r.spawn();
    r.wait_ready();
    assert_safe_mode(&mut r, &orphan, "truncated store");
    bystanders.assert_all_alive();
}

/// A tmpfs mounted over a directory for the test's lifetime.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = run_with_timeout(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(at),
            None,
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "mount tmpfs on {} failed (these tests run as root): {}",
            at.display(),
            stderr_of(&out)
        );
        Tmpfs(at.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new("umount").arg("-l").arg(&self.0),
            None,
            Duration::from_secs(10),
        );
    }
}

/// Fills the filesystem holding `dir` with a file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_fails_writes_clearly_and_recovers_by_itself() {
    let _scope = Scope::new(&["e2e-ff-"]);
    let mut r = Reaper::prepare(&[]);
    let _tmpfs = Tmpfs::mount(&r.data_dir(), "4m");
    r.spawn();
    r.wait_ready();
    r.apply(&session_doc("e2e-ff-before", ""));
    let filler = fill(&r.data_dir());

    // Batches of new sessions until one fails: sled may still have room in its current
    // segment for the first ones. The failing one must fail fast, clearly, and entirely.
    let mut failed = None;
    for batch in 0..40 {
        let names: Vec<String> = (0..50).map(|i| format!("e2e-ff-b{batch}-{i}")).collect();
        let docs: String = names
            .iter()
            .map(|n| session_doc(n, "  match:\n    labels: {padding: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n"))
            .collect();
        let started = Instant::now();
        let out = r.cli_stdin(&["apply", "-f", "-"], &docs);
        let took = started.elapsed();
        if !out.status.success() {
            failed = Some((names, stderr_of(&out), took));
            break;
        }
    }
    let (names, err, took) = failed.unwrap_or_else(|| {
        panic!(
            "40 batches of 50 sessions were all accepted on a full 4 MiB disk\n{}",
            r.log_tail()
        )
    });
    eprintln!("apply on a full disk failed after {took:?}: {}", err.trim());
    assert!(
        took < Duration::from_secs(10),
        "apply on a full disk took {took:?}"
    );
    assert!(
        err.to_lowercase().contains("disk full") || err.to_lowercase().contains("no space"),
        "the error does not say the disk is full: {err}"
    );
    // Nothing half-applied (reads may fail while the disk is full; retry until they answer).
    let mut have = None;
    let _ = try_wait_until(Duration::from_secs(10), || {
        let out = r.cli(&["get", "sessions", "-o", "json"]);
        have = serde_json::from_slice::<Value>(&out.stdout).ok();
        have.is_some()
    });
    if let Some(v) = have {
        let present: Vec<&str> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .filter(|n| names.iter().any(|x| x == n))
            .collect();
        assert!(present.is_empty(), "half-applied batch: {present:?}");
    }

    // Space returns: the same apply succeeds without restarting anything.
    std::fs::remove_file(&filler).unwrap();
    let docs: String = names.iter().map(|n| session_doc(n, "")).collect();
    r.wait_until(
        "apply succeeds once space is back",
        Duration::from_secs(15),
        || r.cli_stdin(&["apply", "-f", "-"], &docs).status.success(),
    );
    let have = session_names(&r);
    assert!(names.iter().all(|n| have.contains(n)));
    assert!(have.contains(&"e2e-ff-before".to_string()));
    assert!(alive(&mut r), "{}", r.log_tail());
    assert!(!r.log().contains("panicked"), "{}", r.log_tail());
}

#[test]
fn reaper_downtime_does_not_expire_heartbeat_sessions() {
    let _scope = Scope::new(&["e2e-fh-"]);
    let mut r = Reaper::start(&["--resync-interval", "1s"]);
    let hb = "  heartbeatTimeout: 3s\n";
    r.apply(&format!(
        "{}{}",
        session_doc("e2e-fh-quiet", hb),
        session_doc("e2e-fh-beating", hb)
    ));
    let objs = vec![(
        Kind::Container,
        Container::new("e2e-fh-quiet-c")
            .label("reaper.session", "e2e-fh-quiet")
            .create(),
    )];
    r.cli_ok(&["session", "heartbeat", "e2e-fh-quiet"]);
    r.cli_ok(&["session", "heartbeat", "e2e-fh-beating"]);
    r.stop();
    std::thread::sleep(Duration::from_secs(6));
    r.spawn();
    r.wait_ready();
    let restarted = Instant::now();

    // Down for twice the timeout, yet nothing expires right away...
    let mut last_beat = Instant::now();
    assert_holds_for(
        "both sessions stay Active after the restart",
        Duration::from_secs(2),
        || {
            if last_beat.elapsed() > Duration::from_millis(500) {
                r.cli_ok(&["session", "heartbeat", "e2e-fh-beating"]);
                last_beat = Instant::now();
            }
            r.phase("sessions", "e2e-fh-quiet") == "Active"
                && r.phase("sessions", "e2e-fh-beating") == "Active"
        },
    );
    assert!(all_exist(&objs));
    // ...and the quiet one expires once heartbeats stay absent for 3 s after the restart.
    r.wait_until("e2e-fh-quiet expires", Duration::from_secs(8), || {
        if last_beat.elapsed() > Duration::from_millis(500) {
            r.cli_ok(&["session", "heartbeat", "e2e-fh-beating"]);
            last_beat = Instant::now();
        }
        let p = r.phase("sessions", "e2e-fh-quiet");
        p == "Expired" || p == "Cleaned"
    });
    let expired_after = restarted.elapsed();
    eprintln!("quiet session expired {expired_after:?} after the restart answered");
    assert!(
        expired_after >= Duration::from_millis(2500),
        "expired only {expired_after:?} after the restart"
    );
    assert_eq!(r.phase("sessions", "e2e-fh-beating"), "Active");
    gone_times(&objs, restarted, Duration::from_secs(15));
}
