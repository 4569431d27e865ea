//! Disk pressure end to end (issue 17): a second private dockerd of the test's own, whose data
//! root is a small tmpfs, filled with images of a few MiB (`docker load` of images made here,
//! with the creation times the test picks). reaper evicts our idle images least recently used
//! first, until usage is below the low watermark, and leaves alone what is foreign, in use by a
//! running or a stopped container, younger than minImageAge, or kept; a restart keeps the last
//! uses it learnt, and a dry run only shows the plan.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// The tmpfs under the engine's data root.
const DATA_ROOT_MIB: u64 = 96;
/// Images and last uses younger than this stay.
const MIN_IMAGE_AGE_SECS: u64 = 20;

/// A private dockerd of this test only, its data root on a size-limited tmpfs; stopped,
/// unmounted and removed on drop (by [`PrivateEngine`]).
struct SmallEngine {
    engine: PrivateEngine,
}

impl SmallEngine {
    fn start() -> SmallEngine {
        let engine = PrivateEngine::start_with(|dir| {
            let size = format!("size={DATA_ROOT_MIB}m");
            let data = dir.join("data").display().to_string();
            let out = run_with_timeout(
                Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs", &data]),
                None,
                DOCKER_TIMEOUT,
            );
            assert!(out.status.success(), "mount tmpfs: {}", stderr_of(&out));
            // vfs works on tmpfs everywhere; overlay2 on tmpfs depends on the kernel.
            std::fs::write(dir.join("daemon.json"), r#"{"storage-driver": "vfs"}"#)
                .expect("daemon.json");
        });
        SmallEngine { engine }
    }

    fn data(&self) -> PathBuf {
        self.engine.data()
    }

    fn host(&self) -> String {
        self.engine.host()
    }

    fn docker_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.engine.docker_stdin(args, stdin)
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        self.engine.docker_ok(args)
    }

    fn exists(&self, kind: &str, name: &str) -> bool {
        self.docker_stdin(&[kind, "inspect", name], None)
            .status
            .success()
    }

    fn image_size(&self, reference: &str) -> u64 {
        self.docker_ok(&["image", "inspect", "-f", "{{.Size}}", reference])
            .parse()
            .expect("a size")
    }

    /// Loads an image `reference` made here: one layer of `mib` MiB of random bytes (and a
    /// static busybox when it must run), these labels, created at `created` (RFC 3339).
    fn load(&self, reference: &str, labels: &[(&str, &str)], created: &str, mib: u64, runs: bool) {
        let work = tempfile::tempdir().expect("work dir");
        let rootfs = work.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        let mut blob = vec![0u8; (mib * MIB) as usize];
        let mut urandom = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
        std::io::Read::read_exact(&mut urandom, &mut blob).expect("random bytes");
        std::fs::write(rootfs.join("blob"), &blob).expect("blob");
        if runs {
            let busybox = which("busybox");
            std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("busybox");
        }
        let image = work.path().join("image");
        std::fs::create_dir_all(image.join("layer")).expect("image dir");
        tar(&rootfs, &image.join("layer/layer.tar"));
        let diff_id = sha256(&image.join("layer/layer.tar"));
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {
                "Labels": labels,
                "Env": ["PATH=/bin"],
                "Cmd": ["/bin/busybox", "sleep", "3600"],
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        });
        std::fs::write(image.join("config.json"), config.to_string()).expect("config");
        let manifest = json!([{
            "Config": "config.json",
            "RepoTags": [reference],
            "Layers": ["layer/layer.tar"],
        }]);
        std::fs::write(image.join("manifest.json"), manifest.to_string()).expect("manifest");
        let archive = work.path().join("image.tar");
        tar(&image, &archive);
        let bytes = std::fs::read(&archive).expect("image tar");
        let out = self.docker_stdin(&["load"], Some(&bytes));
        assert!(
            out.status.success(),
            "docker load {reference}: {}",
            stderr_of(&out)
        );
    }

    /// Used and total bytes of the data root's filesystem, as reaper measures them.
    fn usage(&self) -> (u64, u64) {
        let u = reaper::disk::measure(&self.data()).expect("measure the tmpfs");
        (u.bytes.used, u.bytes.total)
    }
}

fn which(program: &str) -> PathBuf {
    let out = run_with_timeout(
        Command::new("sh").args(["-c", &format!("command -v {program}")]),
        None,
        DOCKER_TIMEOUT,
    );
    assert!(out.status.success(), "{program} is needed");
    PathBuf::from(stdout_of(&out).trim())
}

fn tar(dir: &Path, to: &Path) {
    let out = run_with_timeout(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(to)
            .arg("."),
        None,
        DOCKER_TIMEOUT,
    );
    assert!(out.status.success(), "tar: {}", stderr_of(&out));
}

fn sha256(file: &Path) -> String {
    let out = run_with_timeout(Command::new("sha256sum").arg(file), None, DOCKER_TIMEOUT);
    assert!(out.status.success(), "sha256sum: {}", stderr_of(&out));
    stdout_of(&out)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// One sample of a labelled or unlabelled series, e.g. `reaper_disk_usage_ratio{resource="bytes"}`.
fn sample(addr: &str, series: &str) -> Option<f64> {
    scrape(addr).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn disk(reaper: &Reaper) -> Value {
    reaper.json(&["disk", "-o", "json"])
}

fn planned(d: &Value) -> Vec<String> {
    d["evictions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["image"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn evicts_our_idle_images_least_recently_used_first_until_below_the_low_watermark() {
    let engine = SmallEngine::start();
    let u = unique("dp");
    let old = |day: u32| format!("2020-01-{day:02}T00:00:00Z");
    // What must stay, all older than every candidate, so only the rules keep them.
    let foreign = format!("disk-foreign-{u}:1");
    let kept_by_pattern = format!("anvyl-agent-base-{u}:1");
    let kept_by_label = format!("anvyl-agent-{u}-kept:1");
    let used_running = format!("anvyl-agent-{u}-run:1");
    let used_stopped = format!("anvyl-agent-{u}-stopped:1");
    engine.load(&foreign, &[], &old(1), 4, false);
    engine.load(&kept_by_pattern, &[], &old(1), 4, false);
    engine.load(
        &kept_by_label,
        &[("reaper.keep", "true")],
        &old(1),
        4,
        false,
    );
    engine.load(&used_running, &[], &old(1), 1, true);
    engine.load(&used_stopped, &[], &old(1), 1, true);
    let running = format!("disk-run-{u}");
    let stopped = format!("disk-stopped-{u}");
    engine.docker_ok(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        &running,
        &used_running,
    ]);
    engine.docker_ok(&[
        "run",
        "--init",
        "--network",
        "none",
        "--name",
        &stopped,
        &used_stopped,
        "/bin/busybox",
        "true",
    ]);
    // The candidates, created in this order; e1 is then used (a container created from it).
    let candidates: Vec<String> = (1..=4).map(|i| format!("anvyl-agent-{u}-e{i}:1")).collect();
    for (i, reference) in candidates.iter().enumerate() {
        engine.load(reference, &[], &old(2 + i as u32), 4, false);
    }

    // Phase 1: no pressure (a watermark of 100% is never passed). reaper measures, and learns
    // e1's last use from a container's create event; the container is gone at once.
    let common_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--docker-host",
            &engine.host(),
            "--orphan-grace-period",
            "1h",
            "--resync-interval",
            "1s",
            "--disk-keep",
            "anvyl-agent-base-*",
            "--disk-min-image-age",
            &format!("{MIN_IMAGE_AGE_SECS}s"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = common_args(&["--disk-high-watermark", "100%"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut reaper = Reaper::start(&args);
    reaper.wait_until("the data root is measured", Duration::from_secs(10), || {
        disk(&reaper)["available"] == json!(true)
    });
    let d = disk(&reaper);
    assert_eq!(d["dataRoot"], json!(engine.data().display().to_string()));
    assert_eq!(d["pressure"], json!(false));
    assert!(planned(&d).is_empty(), "{d}");
    let addr = reaper.metrics_addr();
    assert_eq!(sample(&addr, "reaper_disk_pressure_available"), Some(1.0));

    // A container created from e1 and removed at once: its `create` event is what tells.
    let user = format!("disk-user-{u}");
    engine.docker_ok(&[
        "create",
        "--network",
        "none",
        "--name",
        &user,
        &candidates[0],
    ]);
    let used_at = Instant::now();
    engine.docker_ok(&["rm", &user]);
    let passes =
        |addr: &str| sample(addr, r#"reaper_reconciles_total{result="success"}"#).unwrap_or(0.0);
    let before = passes(&addr);
    wait_until("two more passes", Duration::from_secs(15), || {
        passes(&addr) >= before + 2.0
    });
    reaper.stop();

    // Phase 2: watermarks set from the usage now, so that exactly three candidates must go.
    // Wait until e1's last use is older than minImageAge: only its order may keep it.
    let wait = Duration::from_secs(MIN_IMAGE_AGE_SECS + 1).saturating_sub(used_at.elapsed());
    std::thread::sleep(wait);
    let young = format!("anvyl-agent-{u}-young:1");
    let now = reaper::core::model::Timestamp::now().to_string();
    engine.load(&young, &[], &now, 4, false);
    let (used, total) = engine.usage();
    let size = candidates
        .iter()
        .map(|c| engine.image_size(c))
        .max()
        .unwrap();
    assert!(size >= 4 * MIB, "{size}");
    let high = used as f64 / total as f64 - 0.005;
    let low = (used as f64 - 2.5 * size as f64) / total as f64;
    let (high, low) = (format!("{high:.6}"), format!("{low:.6}"));
    let pressure_args =
        common_args(&["--disk-high-watermark", &high, "--disk-low-watermark", &low]);

    // A dry run logs and shows the plan, and evicts nothing. The restart kept e1's last use:
    // it goes after every other candidate, so it is not needed.
    let mut dry = pressure_args.clone();
    dry.push("--dry-run".into());
    reaper.set_extra(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    reaper.spawn();
    reaper.wait_ready();
    reaper.wait_until("pressure is measured", Duration::from_secs(10), || {
        disk(&reaper)["pressure"] == json!(true)
    });
    let d = disk(&reaper);
    assert_eq!(planned(&d), candidates[1..4].to_vec(), "{d:#}");
    assert_eq!(d["exhausted"], json!(false));
    assert!(reaper.log().contains("Dry run: would evict."));
    assert_eq!(
        sample(&reaper.metrics_addr(), "reaper_disk_pressure"),
        Some(1.0)
    );
    assert_holds_for("a dry run evicts nothing", Duration::from_secs(2), || {
        candidates.iter().all(|c| engine.exists("image", c))
    });
    assert_eq!(
        sample(&reaper.metrics_addr(), "reaper_disk_evictions_total"),
        Some(0.0)
    );
    reaper.stop();

    // For real: e2, e3 and e4 go, in that order, and nothing else.
    reaper.set_extra(&pressure_args.iter().map(String::as_str).collect::<Vec<_>>());
    reaper.spawn();
    reaper.wait_ready();
    wait_until(
        "three candidates are evicted",
        Duration::from_secs(20),
        || candidates[1..4].iter().all(|c| !engine.exists("image", c)),
    );
    let addr = reaper.metrics_addr();
    wait_until("the evictions are counted", Duration::from_secs(10), || {
        sample(&addr, "reaper_disk_evictions_total") == Some(3.0)
    });
    assert!(sample(&addr, "reaper_disk_evicted_bytes_total").unwrap_or(0.0) >= 3.0 * size as f64);
    reaper.wait_until(
        "usage is below the high watermark",
        Duration::from_secs(10),
        || disk(&reaper)["pressure"] == json!(false),
    );
    let ratio = sample(&addr, r#"reaper_disk_usage_ratio{resource="bytes"}"#).unwrap();
    assert!(ratio < high.parse::<f64>().unwrap(), "{ratio} {high}");
    assert_holds_for(
        "the last used candidate, foreign, kept, used and young images stay",
        Duration::from_secs(3),
        || {
            [
                &candidates[0],
                &foreign,
                &kept_by_pattern,
                &kept_by_label,
                &used_running,
                &used_stopped,
                &young,
            ]
            .iter()
            .all(|i| engine.exists("image", i))
        },
    );
    // The bystander containers too, the running one still running.
    assert!(engine.exists("container", &stopped));
    assert_eq!(
        engine.docker_ok(&["inspect", "-f", "{{.State.Running}}", &running]),
        "true"
    );
    let removed: Vec<&str> = reaper
        .log()
        .lines()
        .filter(|l| l.contains("Removed.") && l.contains("diskPressure"))
        .map(|_| "x")
        .collect();
    assert_eq!(removed.len(), 3, "{}", reaper.log_tail());
    reaper.stop();
}
