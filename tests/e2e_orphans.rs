//! Unregistered objects: ours by label, adoption key or agent name prefix, but with no record.
//! They are orphans, removed once older than the grace period, and never before.

mod common;

use common::*;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(3);

#[test]
fn orphans_are_removed_only_after_the_grace_period() {
    let _scope = Scope::new(&["e2e-orph-"]);
    let bystanders = Bystanders::create("orph");
    // Kept alive (and its log printed on failure) until the end of the test.
    let _reaper = Reaper::start(&["--orphan-grace-period", "3s", "--resync-interval", "2s"]);

    // Each object with the instant before its creation: its Docker `Created` time is later.
    let mut objs: Vec<(Obj, Instant)> = Vec::new();
    let mut add = |make: &dyn Fn() -> Obj| {
        let before = Instant::now();
        objs.push((make(), before));
    };
    let ghost = [("reaper.session", "e2e-orph-ghost")];
    add(&|| {
        (
            Kind::Container,
            Container::new("e2e-orph-sess")
                .labels(&ghost)
                .running()
                .create(),
        )
    });
    add(&|| {
        (
            Kind::Container,
            Container::new("e2e-orph-new")
                .labels(&ghost)
                .created()
                .create(),
        )
    });
    add(&|| {
        let labels = [
            ("reaper.session", "e2e-orph-ghost"),
            ("reaper.instance", INSTANCE),
        ];
        (
            Kind::Container,
            Container::new("e2e-orph-ours").labels(&labels).create(),
        )
    });
    add(&|| {
        (
            Kind::Container,
            Container::new("e2e-orph-agent")
                .label("reaper.agent", "e2e-orph-ghost")
                .create(),
        )
    });
    add(&|| {
        (
            Kind::Container,
            Container::new("e2e-orph-sid")
                .label("session_id", "e2e-orph-ghost")
                .create(),
        )
    });
    add(&|| {
        (
            Kind::Container,
            Container::new("anvyl-agent-e2e-orph-x").created().create(),
        )
    });
    add(&|| (Kind::Network, network("e2e-orph-net", &ghost)));
    add(&|| (Kind::Volume, volume("e2e-orph-vol", &ghost)));
    add(&|| (Kind::Image, image("e2e-orph-img:1", &ghost)));
    add(&|| (Kind::Image, image("anvyl-agent-e2e-orph-x:latest", &[])));
    let list: Vec<Obj> = objs.iter().map(|(o, _)| o.clone()).collect();
    let first = objs[0].1;

    // Docker's list APIs report `Created` in whole seconds, so an object may look up to 1 s
    // older than it is: allow that much, and no more.
    let slack = Duration::from_millis(1200);
    // All still there one second after the last was created (and before the first's grace).
    let check_until = objs.iter().map(|(_, t)| *t).max().unwrap_or(first) + Duration::from_secs(1);
    while Instant::now() < check_until.min(first + GRACE - slack) {
        assert!(
            all_exist(&list),
            "removed before the grace period: {:?}",
            missing(&list)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let times = gone_times(&list, first, GRACE + Duration::from_secs(10));
    for (((kind, id), created), gone) in objs.iter().zip(&times) {
        let age = gone.saturating_sub(created.duration_since(first));
        eprintln!("orphan {} {id}: gone when {age:?} old", kind.as_str());
        assert!(
            age >= GRACE - slack,
            "orphan {} {id} removed when only {age:?} old (grace {GRACE:?})",
            kind.as_str()
        );
        assert!(
            age <= GRACE + Duration::from_secs(8),
            "orphan {} {id} removed only when {age:?} old",
            kind.as_str()
        );
    }
    bystanders.assert_all_alive();
}

#[test]
fn objects_of_a_registered_live_session_are_not_orphans() {
    let _scope = Scope::new(&["e2e-orph-"]);
    let bystanders = Bystanders::create("notorph");
    let r = Reaper::start(&["--orphan-grace-period", "1s", "--resync-interval", "1s"]);
    r.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-orph-live}\nspec: {}\n");
    r.apply("apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-orph-agent}\nspec: {}\n");
    r.cli_ok(&["agent", "report", "e2e-orph-agent", "starting"]);
    let live: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-orph-live-c")
                .label("reaper.session", "e2e-orph-live")
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-orph-live-sid")
                .label("session_id", "e2e-orph-live")
                .created()
                .create(),
        ),
        (
            Kind::Container,
            Container::new("anvyl-agent-e2e-orph-agent").create(),
        ),
    ];
    // Past the grace period and two resyncs: a live owner keeps everything.
    assert_holds_for(
        "objects with a live owner exist",
        Duration::from_millis(3500),
        || all_exist(&live),
    );
    bystanders.assert_all_alive();
}

/// An image built or pulled long ago and tagged `anvyl-agent-…` a moment ago is a new orphan:
/// its grace counts from when the tag appeared, not from the image's creation (issue 13).
#[test]
fn a_freshly_tagged_old_image_gets_its_whole_grace_from_the_tag() {
    const TAG_GRACE: Duration = Duration::from_secs(4);
    let reference = "anvyl-agent-e2e-orph-tag:latest";
    let _scope = Scope::new(&["anvyl-agent-e2e-orph-tag"]);
    let bystanders = Bystanders::create("orphtag");
    let _reaper = Reaper::start(&["--orphan-grace-period", "4s", "--resync-interval", "1s"]);

    // The test image was imported when the suite started: make sure it is well past the grace.
    let created = docker_ok(&["image", "inspect", "-f", "{{.Created}}", TEST_IMAGE]);
    let created = reaper::core::model::Timestamp::parse_rfc3339(created.trim())
        .unwrap_or_else(|| panic!("creation time of {TEST_IMAGE}: {created:?}"));
    let age = reaper::core::model::Timestamp::now().since(created);
    std::thread::sleep((TAG_GRACE * 2).saturating_sub(age));

    let tagged = Instant::now();
    docker_ok(&["tag", TEST_IMAGE, reference]);
    let obj = vec![(Kind::Image, reference.to_string())];
    // Counted from the image's creation it would be untagged by the next pass (within ~1 s).
    assert_holds_for(
        "a freshly tagged old image stays within its grace",
        TAG_GRACE - Duration::from_millis(1200),
        || all_exist(&obj),
    );
    wait_until(
        "the tag is removed once its grace has passed",
        TAG_GRACE + Duration::from_secs(8),
        || all_gone(&obj),
    );
    let after = tagged.elapsed();
    assert!(
        after >= TAG_GRACE - Duration::from_millis(1200),
        "untagged {after:?} after the tag appeared"
    );
    assert!(
        exists(Kind::Image, TEST_IMAGE),
        "only the reference goes, never the image's other tags"
    );
    bystanders.assert_all_alive();
}
