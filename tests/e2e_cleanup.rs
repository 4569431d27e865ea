//! Manual cleanup: `cleanup --yes` removes orphans at once (grace ignored) but never what a
//! live owner holds; without a TTY and without `--yes` it refuses and removes nothing.

mod common;

use common::*;
use std::time::Duration;

fn orphans() -> Vec<Obj> {
    let ghost = [("reaper.session", "e2e-mc-ghost")];
    vec![
        (
            Kind::Container,
            Container::new("e2e-mc-ghost-run")
                .labels(&ghost)
                .running()
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-mc-ghost-new")
                .labels(&ghost)
                .created()
                .create(),
        ),
        (
            Kind::Container,
            Container::new("anvyl-agent-e2e-mc-ghost").create(),
        ),
        (Kind::Network, network("e2e-mc-ghost-net", &ghost)),
        (Kind::Volume, volume("e2e-mc-ghost-vol", &ghost)),
    ]
}

fn assert_refuses_without_yes(r: &Reaper, args: &[&str], objs: &[Obj]) {
    let out = r.cli(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "reaper {} without a TTY and without --yes must refuse with exit code 2; got {} ({})",
        args.join(" "),
        out.status,
        stderr_of(&out).trim()
    );
    assert!(
        stderr_of(&out).contains("--yes"),
        "the refusal must tell the user to pass --yes: {}",
        stderr_of(&out)
    );
    assert_holds_for(
        "a refused cleanup removes nothing",
        Duration::from_millis(1000),
        || all_exist(objs),
    );
}

#[test]
fn cleanup_yes_removes_orphans_at_once_and_spares_live_owners() {
    let _scope = Scope::new(&["e2e-mc-"]);
    let bystanders = Bystanders::create("cleanup");
    // Default grace period (5m): only a manual cleanup can remove these orphans now.
    let r = Reaper::start(&["--resync-interval", "2s"]);
    r.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-mc-live}\nspec: {}\n");
    let live: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-mc-live-c")
                .label("reaper.session", "e2e-mc-live")
                .create(),
        ),
        (
            Kind::Volume,
            volume("e2e-mc-live-vol", &[("reaper.session", "e2e-mc-live")]),
        ),
    ];
    let ghosts = orphans();
    let mut everything = ghosts.clone();
    everything.extend(live.iter().cloned());

    assert_holds_for(
        "orphans within the grace period survive resyncs",
        Duration::from_millis(2300),
        || all_exist(&everything),
    );
    assert_refuses_without_yes(&r, &["cleanup"], &everything);

    let out = r.cli_ok(&["cleanup", "--yes"]);
    eprintln!("cleanup --yes printed:\n{out}");
    r.wait_until(
        "cleanup --yes removed every orphan",
        Duration::from_secs(10),
        || all_gone(&ghosts),
    );
    assert!(
        all_exist(&live),
        "cleanup --yes removed objects of a live session: {:?}",
        missing(&live)
    );
    assert_eq!(r.phase("sessions", "e2e-mc-live"), "Active");
    bystanders.assert_all_alive();
}

#[test]
fn cleanup_of_one_agent_or_session_touches_only_that_owner() {
    let _scope = Scope::new(&["e2e-mc-"]);
    let bystanders = Bystanders::create("cleanup1");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    r.apply(
        "apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-mc-a1}\nspec: {buildDir: e2e-mc-a1}\n---\n\
         apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-mc-a2}\nspec: {buildDir: e2e-mc-a2}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-mc-s1}\nspec: {}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-mc-s2}\nspec: {}\n",
    );
    let mut agent_objs = Vec::new();
    for agent in ["e2e-mc-a1", "e2e-mc-a2"] {
        r.cli_ok(&["agent", "report", agent, "starting"]);
        write_file(&r.paths_root().join(agent), "build/out.bin", "x");
        let reference = format!("anvyl-agent-{agent}:latest");
        let img = image(&reference, &[]);
        let c = Container::new(&format!("anvyl-agent-{agent}"))
            .image(&reference)
            .create();
        r.cli_ok(&["agent", "report", agent, "running"]);
        agent_objs.push(vec![(Kind::Container, c), (Kind::Image, img)]);
    }
    let s1: Vec<Obj> = vec![(
        Kind::Container,
        Container::new("e2e-mc-s1-c")
            .label("reaper.session", "e2e-mc-s1")
            .create(),
    )];
    let s2: Vec<Obj> = vec![(
        Kind::Container,
        Container::new("e2e-mc-s2-c")
            .label("reaper.session", "e2e-mc-s2")
            .create(),
    )];
    let ghosts = orphans();

    assert_refuses_without_yes(&r, &["cleanup", "agent", "e2e-mc-a1"], &agent_objs[0]);

    r.cli_ok(&["cleanup", "agent", "e2e-mc-a1", "--yes"]);
    r.wait_until(
        "cleanup agent removed its container and image",
        Duration::from_secs(10),
        || all_gone(&agent_objs[0]),
    );
    r.wait_until(
        "cleanup agent deleted its build dir",
        Duration::from_secs(10),
        || !r.paths_root().join("e2e-mc-a1").exists(),
    );
    assert!(
        all_exist(&agent_objs[1]),
        "the other agent lost objects: {:?}",
        missing(&agent_objs[1])
    );
    assert!(
        r.paths_root().join("e2e-mc-a2/build/out.bin").exists(),
        "the other agent's build dir was touched"
    );

    r.cli_ok(&["cleanup", "session", "e2e-mc-s1", "--yes"]);
    r.wait_until(
        "cleanup session removed its container",
        Duration::from_secs(10),
        || all_gone(&s1),
    );
    assert!(
        all_exist(&s2),
        "the other session lost objects: {:?}",
        missing(&s2)
    );
    // A targeted cleanup is not a cleanup of orphans.
    assert!(
        all_exist(&ghosts),
        "a targeted cleanup removed orphans: {:?}",
        missing(&ghosts)
    );
    bystanders.assert_all_alive();
}
