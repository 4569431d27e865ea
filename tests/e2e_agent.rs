//! Agent launchers: when an agent fails, its containers and images are removed, its build
//! directory is deleted, and its phase reads Stopped. Nothing beside the build dir is touched.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a launcher does for one agent: register it as starting, build its image, prepare its
/// build dir, start its container, report it running.
struct LaunchedAgent {
    container: String,
    image: String,
    build_dir: PathBuf,
}

fn launch(r: &Reaper, agent: &str) -> LaunchedAgent {
    r.cli_ok(&["agent", "report", agent, "starting"]);
    let build_dir = r.paths_root().join(agent);
    write_file(&build_dir, "Dockerfile", "FROM reaper-test/busybox:1\n");
    write_file(&build_dir, "src/main.sh", "echo hi\n");
    write_file(&build_dir, "target/deep/er/artifact.bin", "0101");
    let reference = format!("anvyl-agent-{agent}:latest");
    let image = image(&reference, &[]);
    let container = Container::new(&format!("anvyl-agent-{agent}"))
        .image(&reference)
        .running()
        .create();
    r.cli_ok(&["agent", "report", agent, "running"]);
    assert_eq!(r.phase("agents", agent), "Running");
    LaunchedAgent {
        container,
        image,
        build_dir,
    }
}

#[test]
fn a_failed_agent_loses_its_containers_images_and_build_dir_and_reads_stopped() {
    let _scope = Scope::new(&["anvyl-agent-e2e-agent-"]);
    let bystanders = Bystanders::create("agent");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let applied = r.apply_file(&fixture("agents.yaml"));
    assert!(
        applied.contains("agent/e2e-agent-a1 created"),
        "apply output: {applied}"
    );

    let a1 = launch(&r, "e2e-agent-a1");
    let a2 = launch(&r, "e2e-agent-a2");
    // Files next to the build dir, with names that share its prefix.
    let sibling_file = write_file(&r.paths_root(), "e2e-agent-a1.log", "keep me");
    let sibling_dir = write_file(&r.paths_root(), "e2e-agent-a1-cache/keep.txt", "keep me");
    let a1_objs: Vec<Obj> = vec![
        (Kind::Container, a1.container.clone()),
        (Kind::Image, a1.image.clone()),
    ];
    let a2_objs: Vec<Obj> = vec![
        (Kind::Container, a2.container.clone()),
        (Kind::Image, a2.image.clone()),
    ];

    assert_holds_for(
        "running agents keep everything",
        Duration::from_millis(2300),
        || {
            all_exist(&a1_objs)
                && all_exist(&a2_objs)
                && a1.build_dir.exists()
                && is_running(&a1.container)
        },
    );

    r.cli_ok(&["agent", "report", "e2e-agent-a1", "failed"]);
    let failed = Instant::now();
    r.wait_until(
        "the failed agent's container and image are gone",
        Duration::from_secs(10),
        || all_gone(&a1_objs),
    );
    r.wait_until(
        "the failed agent's build dir is deleted",
        Duration::from_secs(10),
        || !a1.build_dir.exists(),
    );
    eprintln!(
        "failed agent cleaned up {:?} after the report",
        failed.elapsed()
    );
    r.wait_until(
        "the failed agent reads Stopped",
        Duration::from_secs(10),
        || r.phase("agents", "e2e-agent-a1") == "Stopped",
    );
    let rec = r.agent("e2e-agent-a1");
    let (containers, _, _, images, paths) = removed_counts(&rec);
    assert_eq!(
        (containers, images, paths),
        (1, 1, 1),
        "status.removed: {rec:#}"
    );

    assert!(
        sibling_file.exists(),
        "a file next to the build dir was deleted"
    );
    assert!(
        sibling_dir.exists(),
        "a directory sharing the build dir's prefix was deleted"
    );
    assert!(r.paths_root().exists(), "the paths root itself was deleted");
    assert!(
        all_exist(&a2_objs) && is_running(&a2.container),
        "the other agent lost objects: {:?}",
        missing(&a2_objs)
    );
    assert!(
        a2.build_dir.join("src/main.sh").exists(),
        "the other agent's build dir was touched"
    );
    assert_eq!(r.phase("agents", "e2e-agent-a2"), "Running");
    bystanders.assert_all_alive();
}

#[test]
fn a_running_agent_whose_container_dies_is_set_stopped_and_its_leftovers_removed() {
    let _scope = Scope::new(&["anvyl-agent-e2e-agent-"]);
    let bystanders = Bystanders::create("agentdies");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    r.apply_file(&fixture("agents.yaml"));
    let a1 = launch(&r, "e2e-agent-a1");

    docker_ok(&["kill", &a1.container]);
    r.wait_until(
        "the agent whose container died reads Stopped",
        Duration::from_secs(10),
        || r.phase("agents", "e2e-agent-a1") == "Stopped",
    );
    r.wait_until(
        "the stopped agent's leftover container is removed",
        Duration::from_secs(10),
        || !exists(Kind::Container, &a1.container),
    );
    // Only a failure removes images and the build dir.
    assert_holds_for(
        "a stopped agent keeps its image and build dir",
        Duration::from_millis(500),
        || exists(Kind::Image, &a1.image) && a1.build_dir.exists(),
    );
    bystanders.assert_all_alive();
}

#[test]
fn agent_running_grace_sets_how_long_a_running_agent_may_have_no_container() {
    let bystanders = Bystanders::create("agentgrace");
    let r = Reaper::start(&["--agent-running-grace", "3s", "--resync-interval", "1s"]);
    r.apply("apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-agent-g}\nspec: {}\n");
    let reported = Instant::now();
    r.cli_ok(&["agent", "report", "e2e-agent-g", "running"]);
    assert_holds_for(
        "a running agent without a container stays Running within agentRunningGrace",
        Duration::from_millis(2500),
        || r.phase("agents", "e2e-agent-g") == "Running",
    );
    // Well before the 10 s default: the key, not the old constant, decides.
    r.wait_until(
        "the agent reads Stopped once agentRunningGrace has passed",
        Duration::from_secs(4),
        || r.phase("agents", "e2e-agent-g") == "Stopped",
    );
    assert!(reported.elapsed() >= Duration::from_millis(2900));
    bystanders.assert_all_alive();
}
