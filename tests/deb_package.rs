//! The Debian package: built with `scripts/package --dev` (cargo-deb), then installed with
//! `dpkg -i`, checked (files, modes, the user), removed and purged. Installing a system
//! package is for CI machines (`CI=true`, as root) or when asked with `REAPER_TEST_DEB=1`;
//! elsewhere the package is built and its contents checked without installing it.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// cargo-deb may have to be built from crates.io first (a few minutes on two cores).
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

const FILES: &[(&str, u32)] = &[
    ("/usr/bin/reaper", 0o755),
    ("/lib/systemd/system/reaper.service", 0o644),
    ("/etc/reaper/config.yaml", 0o640),
    ("/usr/share/bash-completion/completions/reaper", 0o644),
    ("/usr/share/zsh/vendor-completions/_reaper", 0o644),
    ("/usr/share/fish/vendor_completions.d/reaper.fish", 0o644),
    ("/usr/share/man/man1/reaper.1.gz", 0o644),
];

/// Both tests use one build: two `scripts/package` runs at once would share target/deb-assets.
fn build_package() -> String {
    static DEB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DEB.get_or_init(build).clone()
}

fn build() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package");
    let out = run_with_timeout(Command::new(script).arg("--dev"), None, PACKAGE_TIMEOUT);
    assert!(
        out.status.success(),
        "scripts/package --dev failed:\n{}",
        stderr_of(&out)
    );
    let deb = stdout_of(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        deb.ends_with(&format!("reaper_{}_amd64.deb", env!("CARGO_PKG_VERSION"))),
        "unexpected package name {deb:?}"
    );
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(deb)
        .display()
        .to_string()
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    run_with_timeout(Command::new(cmd).args(args), None, Duration::from_secs(120))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        stderr_of(&out)
    );
    stdout_of(&out)
}

fn installing_is_allowed() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false");
    set("CI") || set("REAPER_TEST_DEB")
}

#[test]
fn the_package_holds_the_binary_unit_config_completions_and_man_page() {
    let deb = build_package();
    let listing = ok("dpkg-deb", &["-c", &deb]);
    for (path, mode) in FILES {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .unwrap_or_else(|| panic!("{path} missing from the package:\n{listing}"));
        let want = format!("{:o}", mode);
        let perms = line.split_whitespace().next().unwrap_or_default();
        let octal: u32 = perms
            .chars()
            .skip(1)
            .fold(0, |acc, c| (acc << 1) | u32::from(c != '-'));
        assert_eq!(format!("{octal:o}"), want, "mode of {path}: {line}");
    }
    let package = ok("dpkg-deb", &["-f", &deb, "Package"]);
    assert_eq!(package.trim(), "reaper");
    let control = tempfile::tempdir().unwrap();
    ok("dpkg-deb", &["-e", &deb, control.path().to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/reaper/config.yaml");
}

#[test]
fn the_package_installs_removes_and_purges_cleanly() {
    if !installing_is_allowed() {
        eprintln!(
            "NOT RUN: installing a system package is for CI (CI=true) or REAPER_TEST_DEB=1; \
             the package's contents are still checked by the other test"
        );
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the package test installs with dpkg and must run as root (CI runs as root)"
    );
    let deb = build_package();
    // A leftover from an interrupted run would hide what this install does.
    let _ = run("dpkg", &["--purge", "reaper"]);

    ok("dpkg", &["-i", &deb]);
    for (path, mode) in FILES {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "mode of {path}");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/reaper.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/reaper serve --config /etc/reaper/config.yaml"),
        "{unit}"
    );
    assert!(
        ok(
            "bash",
            &[
                "-c",
                ". /usr/share/bash-completion/completions/reaper && complete -p reaper"
            ]
        )
        .contains("reaper"),
        "bash completion does not register"
    );
    let man = ok("sh", &["-c", "zcat /usr/share/man/man1/reaper.1.gz"]);
    assert!(man.contains(".TH reaper 1"), "{man}");

    // The user: a system account in groups reaper and docker.
    let passwd = ok("getent", &["passwd", "reaper"]);
    let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "reaper is not a system user: {passwd}");
    let groups = ok("id", &["-nG", "reaper"]);
    assert!(groups.split_whitespace().any(|g| g == "reaper"), "{groups}");
    assert!(
        groups.split_whitespace().any(|g| g == "docker"),
        "reaper is not in the docker group: {groups}"
    );
    let data = std::fs::metadata("/var/lib/reaper").unwrap();
    assert_eq!(data.uid(), uid, "/var/lib/reaper owner");
    assert_eq!(data.permissions().mode() & 0o7777, 0o750);
    let manifests = std::fs::metadata("/etc/reaper/manifests").unwrap();
    assert!(manifests.is_dir());
    let config = std::fs::metadata("/etc/reaper/config.yaml").unwrap();
    let reaper_gid: u32 = ok("getent", &["group", "reaper"])
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        config.gid(),
        reaper_gid,
        "config.yaml is readable by group reaper"
    );

    let version = ok("/usr/bin/reaper", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("reaper {}", env!("CARGO_PKG_VERSION"))
    );
    let check = ok(
        "/usr/bin/reaper",
        &["config", "check", "/etc/reaper/config.yaml"],
    );
    assert_eq!(check.trim(), "/etc/reaper/config.yaml: ok");

    // remove keeps the data and the config.
    std::fs::write("/var/lib/reaper/keep-me", "store").unwrap();
    ok("dpkg", &["--remove", "reaper"]);
    assert!(
        !Path::new("/usr/bin/reaper").exists(),
        "remove left the binary"
    );
    assert!(
        Path::new("/etc/reaper/config.yaml").exists(),
        "remove lost the config"
    );
    assert!(
        Path::new("/var/lib/reaper/keep-me").exists(),
        "remove lost the data"
    );

    // purge removes everything, the user included.
    ok("dpkg", &["--purge", "reaper"]);
    for gone in [
        "/etc/reaper",
        "/var/lib/reaper",
        "/usr/share/doc/reaper",
        "/lib/systemd/system/reaper.service",
    ] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
    assert!(
        !run("getent", &["passwd", "reaper"]).status.success(),
        "purge left the user"
    );
    assert!(
        !run("getent", &["group", "reaper"]).status.success(),
        "purge left the group"
    );
    assert!(
        !run("dpkg", &["-s", "reaper"]).status.success(),
        "dpkg still knows the package"
    );
}
