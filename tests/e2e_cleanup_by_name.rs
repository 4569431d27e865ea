//! Manual cleanup by name (issue 13): `reaper cleanup agent|session NAME` works without a
//! record, removing at once (no grace) what the ownership rules attribute to NAME and nothing
//! else, listing each object and why it is NAME's; and `cleanup session NAME` on a live session
//! says, before and after, that it ends the session for good.

mod common;

use common::*;
use std::time::Duration;

const AGENT: &str = "e2e-cn-my-agent";

/// The line of `out` that mentions `name` (panics with the whole output if none).
fn line_with<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"))
}

#[test]
fn cleanup_of_an_agent_without_a_record_removes_what_its_name_owns_and_nothing_else() {
    let _scope = Scope::new(&["e2e-cn-"]);
    let bystanders = Bystanders::create("byname");
    // Default grace period (5m): nothing here is old enough to go by itself.
    let r = Reaper::start(&["--resync-interval", "2s"]);
    r.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-cn-live}\nspec: {}\n");
    let label = [("reaper.agent", AGENT)];
    let reference = format!("anvyl-agent-{AGENT}:latest");
    let image_id = image(&reference, &[]);
    let ours: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new(&format!("anvyl-agent-{AGENT}"))
                .image(&reference)
                .running()
                .create(),
        ),
        (Kind::Network, network("e2e-cn-agent-net", &label)),
        (Kind::Volume, volume("e2e-cn-agent-vol", &label)),
        (Kind::Image, image_id),
    ];
    let look_alike = format!("anvyl-agent-{AGENT}2");
    let theirs: Vec<Obj> = vec![
        // Another agent whose name starts with this one's.
        (Kind::Container, Container::new(&look_alike).create()),
        (Kind::Image, image(&format!("{look_alike}:latest"), &[])),
        // The bare name, unlabelled: not ours at all.
        (Kind::Container, Container::new(AGENT).create()),
        // Another agent's label.
        (
            Kind::Volume,
            volume("e2e-cn-other-vol", &[("reaper.agent", "e2e-cn-other")]),
        ),
        // Also claimed by a live session: kept.
        (
            Kind::Container,
            Container::new("e2e-cn-shared")
                .label("reaper.agent", AGENT)
                .label("reaper.session", "e2e-cn-live")
                .create(),
        ),
    ];
    // Without a record reaper does not know a build dir: a directory of that name stays.
    let build_dir = r.paths_root().join(AGENT);
    write_file(&build_dir, "out.bin", "x");
    let mut everything = ours.clone();
    everything.extend(theirs.iter().cloned());

    // No TTY, no --yes: refused, nothing removed.
    let out = r.cli(&["cleanup", "agent", AGENT]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("refusing to remove 4 object(s) without confirmation")
            && stderr_of(&out).contains("--yes"),
        "{}",
        stderr_of(&out)
    );
    // The preview: each object and why it is the agent's, nothing else.
    let preview = r.cli_ok(&["cleanup", "agent", AGENT, "--dry-run"]);
    eprintln!("cleanup --dry-run printed:\n{preview}");
    assert!(
        preview.contains(&format!("No agent record named {AGENT}")),
        "{preview}"
    );
    let why_name =
        |what: &str| format!("{what} anvyl-agent-{AGENT} (adoption.agentNamePrefix anvyl-agent-)");
    let container_line = line_with(&preview, &format!("anvyl-agent-{AGENT}"));
    assert!(
        container_line.contains(&why_name("container name")),
        "{container_line}"
    );
    assert!(
        line_with(&preview, &reference).contains(&why_name("image repository")),
        "{preview}"
    );
    for name in ["e2e-cn-agent-net", "e2e-cn-agent-vol"] {
        let line = line_with(&preview, name);
        assert!(
            line.contains(&format!("label reaper.agent={AGENT}")) && line.contains("manual"),
            "{line}"
        );
    }
    for name in [look_alike.as_str(), "e2e-cn-shared", "e2e-cn-other-vol"] {
        assert!(
            !preview.contains(name),
            "{name} is not the agent's:\n{preview}"
        );
    }
    assert!(
        !preview.lines().any(|l| l.starts_with("path")),
        "no build dir without a record:\n{preview}"
    );
    assert_holds_for(
        "a refusal and a dry run remove nothing",
        Duration::from_millis(2500),
        || all_exist(&everything),
    );

    let done = r.cli_ok(&["cleanup", "agent", AGENT, "--yes"]);
    eprintln!("cleanup --yes printed:\n{done}");
    assert!(done.contains("Removed 4 object(s)."), "{done}");
    let summary = done
        .split("Removed 4 object(s).")
        .nth(1)
        .unwrap_or_default();
    assert!(
        line_with(summary, &format!("anvyl-agent-{AGENT}")).contains(&why_name("container name")),
        "the summary says why each object went:\n{done}"
    );
    assert!(
        line_with(summary, "e2e-cn-agent-vol").contains("label reaper.agent="),
        "{done}"
    );
    assert!(all_gone(&ours), "still there: {:?}", present(&ours));
    assert!(
        all_exist(&theirs),
        "bystanders of the name were removed: {:?}",
        missing(&theirs)
    );
    assert!(
        build_dir.join("out.bin").exists(),
        "a build dir was removed without a record"
    );
    // No record appeared, and nothing is left: not an error.
    assert_eq!(r.phase("agents", AGENT), "");
    let again = r.cli_ok(&["cleanup", "agent", AGENT, "--yes"]);
    assert_eq!(again.trim(), format!("nothing to clean for agent {AGENT}"));
    let never = r.cli_ok(&["cleanup", "agent", "e2e-cn-never-seen"]);
    assert_eq!(never.trim(), "nothing to clean for agent e2e-cn-never-seen");
    assert_eq!(r.phase("sessions", "e2e-cn-live"), "Active");
    bystanders.assert_all_alive();
}

#[test]
fn cleanup_of_a_session_without_a_record_follows_labels_and_adoption_keys() {
    let _scope = Scope::new(&["e2e-cs-"]);
    let bystanders = Bystanders::create("bynames");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let s = "e2e-cs-run-7";
    let ours: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-cs-exec")
                .label("session_id", s)
                .running()
                .create(),
        ),
        (
            Kind::Network,
            network("e2e-cs-net", &[("reaper.session", s)]),
        ),
    ];
    let theirs: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-cs-exec-70")
                .label("session_id", "e2e-cs-run-70")
                .create(),
        ),
        (Kind::Volume, volume("e2e-cs-vol", &[("other_key", s)])),
    ];
    let done = r.cli_ok(&["cleanup", "session", s, "--yes"]);
    eprintln!("cleanup session --yes printed:\n{done}");
    assert!(
        done.contains(&format!("No session record named {s}")),
        "{done}"
    );
    assert!(
        line_with(&done, "e2e-cs-exec")
            .contains(&format!("label session_id={s} (adoption.sessionLabelKeys)")),
        "{done}"
    );
    assert!(
        line_with(&done, "e2e-cs-net").contains(&format!("label reaper.session={s}")),
        "{done}"
    );
    assert!(done.contains("Removed 2 object(s)."), "{done}");
    assert!(!done.contains("ended"), "no session was ended: {done}");
    assert!(all_gone(&ours), "still there: {:?}", present(&ours));
    assert!(all_exist(&theirs), "removed: {:?}", missing(&theirs));
    assert_eq!(r.phase("sessions", s), "", "no record was created");
    bystanders.assert_all_alive();
}

/// Runs `reaper ARGS` with a terminal on stdin (util-linux `script`), typing `input`; returns
/// what the terminal showed.
fn with_tty(r: &Reaper, args: &[&str], input: &str) -> String {
    let command = format!(
        "{} --socket {} {}",
        Reaper::bin(),
        r.socket().display(),
        args.join(" ")
    );
    let out = run_with_timeout(
        std::process::Command::new("script").args(["-qec", &command, "/dev/null"]),
        Some(input.as_bytes()),
        CLI_TIMEOUT,
    );
    stdout_of(&out).replace('\r', "")
}

/// Issue 13, section 5: `cleanup session NAME --yes` ends a live session for good. The help, the
/// preview, the refusal and the summary say so; the session is Ended (reason manual) and its
/// name is refused by apply until its record is deleted.
#[test]
fn cleanup_of_a_live_session_says_it_ends_it_for_good() {
    let _scope = Scope::new(&["e2e-ce-"]);
    let bystanders = Bystanders::create("ends");
    let r = Reaper::start(&["--resync-interval", "2s"]);

    let help = run_with_timeout(
        std::process::Command::new(Reaper::bin()).args(["cleanup", "--help"]),
        None,
        CLI_TIMEOUT,
    );
    let help = stdout_of(&help)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("`cleanup session NAME` ends an Active session for good")
            && help.contains("refused until `reaper delete session NAME`"),
        "{help}"
    );

    let s = "e2e-ce-live";
    let manifest =
        format!("apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {s}}}\nspec: {{}}\n");
    r.apply(&manifest);
    let objs: Vec<Obj> = vec![(
        Kind::Container,
        Container::new("e2e-ce-live-c")
            .label("reaper.session", s)
            .running()
            .create(),
    )];
    let preview = r.cli_ok(&["cleanup", "session", s, "--dry-run"]);
    assert!(
        preview.contains(&format!(
            "session/{s} is Active: this cleanup ends it for good"
        )),
        "{preview}"
    );
    assert!(line_with(&preview, "e2e-ce-live-c").contains(&format!("label reaper.session={s}")));
    let out = r.cli(&["cleanup", "session", s]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains(&format!(
            "refusing to end session/{s} and remove 1 object(s) without confirmation"
        )),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        r.phase("sessions", s),
        "Active",
        "a preview and a refusal end nothing"
    );
    // At a terminal, the question says it too; "no" ends and removes nothing.
    let asked = with_tty(&r, &["cleanup", "session", s], "n\n");
    assert!(
        asked.contains(&format!("End session/{s} and remove 1 object(s)? [y/N]")),
        "{asked}"
    );
    assert!(asked.contains("Nothing removed."), "{asked}");
    assert_eq!(
        r.phase("sessions", s),
        "Active",
        "an answer of no ends nothing"
    );
    assert!(all_exist(&objs));

    let done = r.cli_ok(&["cleanup", "session", s, "--yes"]);
    assert!(
        done.contains(&format!("session/{s} ended (reason manual)")),
        "{done}"
    );
    assert!(done.contains("Removed 1 object(s)."), "{done}");
    assert!(all_gone(&objs));
    let record = r.session(s);
    assert_eq!(record["status"]["endReason"], "manual", "{record}");
    r.wait_until("the session is cleaned", Duration::from_secs(10), || {
        r.phase("sessions", s) == "Cleaned"
    });
    let out = r.cli_stdin(&["apply", "-f", "-"], &manifest);
    assert!(!out.status.success(), "its name is not reused");
    assert!(
        stderr_of(&out).contains("is cleaned now"),
        "{}",
        stderr_of(&out)
    );

    // A live session with nothing to remove is still ended, and says so.
    let empty = "e2e-ce-empty";
    r.apply(&format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {empty}}}\nspec: {{}}\n"
    ));
    let out = r.cli(&["cleanup", "session", empty]);
    assert!(
        stderr_of(&out).contains(&format!(
            "refusing to end session/{empty} without confirmation"
        )),
        "{}",
        stderr_of(&out)
    );
    let done = with_tty(&r, &["cleanup", "session", empty], "y\n");
    assert!(
        done.contains(&format!("End session/{empty}? [y/N]"))
            && done.contains(&format!("session/{empty} ended (reason manual)")),
        "{done}"
    );
    assert_ne!(r.phase("sessions", empty), "Active");
    // Once ended, there is nothing more to do.
    let again = r.cli_ok(&["cleanup", "session", empty, "--yes"]);
    assert_eq!(
        again.trim(),
        format!("nothing to clean for session {empty}")
    );
    bystanders.assert_all_alive();
}
