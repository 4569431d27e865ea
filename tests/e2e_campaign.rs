//! A randomised campaign against the real engine: foreign objects, look-alikes, objects of
//! another instance, our own objects with live owners and with dead ones, through several
//! rounds of session/agent churn (apply, end, delete, expire, fail, stop). After every round an
//! inventory diff proves that everything foreign or live-owned still exists and everything
//! dead-owned is gone.
//!
//! Scale it up with `REAPER_CAMPAIGN_ROUNDS` (default 3) and `REAPER_CAMPAIGN_OWNERS` (owners
//! per kind per round, default 3); replay a run with `REAPER_CAMPAIGN_SEED`.

mod common;

use common::*;
use std::time::Duration;

/// A small deterministic generator: the seed printed at the start replays the whole run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What should happen to an object once the round settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Survives,
    Removed,
}

/// Foreign objects that must survive every round: nothing in them is ours.
fn foreign(tag: &str) -> Vec<Obj> {
    let mut out = Vec::new();
    let lookalikes: &[&[(&str, &str)]] = &[
        &[],
        &[
            ("reaper.instance", "another-host"),
            ("reaper.session", "gone"),
        ],
        &[
            ("reaper.instance", "another-host"),
            ("reaper.agent", "gone"),
        ],
        &[("reaper.session-x", "gone")],
        &[("reaper.sessionx", "gone")],
        &[("REAPER.SESSION", "gone")],
        &[("reaper.session", "Has Space")],
        &[("reaper.session", "a=b")],
        &[("reaper.agent", "UPPER")],
        &[("session_id", "not a name")],
        &[("session-id", "gone")],
    ];
    for (i, labels) in lookalikes.iter().enumerate() {
        let running = i % 4 == 0;
        let mut c = Container::new(&format!("camp-{tag}-foreign-{i}")).labels(labels);
        c = if running { c.running() } else { c.created() };
        out.push((Kind::Container, c.create()));
        if i % 3 == 0 {
            out.push((
                Kind::Volume,
                volume(&format!("camp-{tag}-fvol-{i}"), labels),
            ));
        }
        if i % 4 == 1 {
            out.push((
                Kind::Network,
                network(&format!("camp-{tag}-fnet-{i}"), labels),
            ));
        }
    }
    // Names that look like an agent's but are not: no suffix, a prefix before it, no dash, or a
    // remainder that is not a valid agent name.
    for name in [
        format!("camp{tag}-anvyl-agent"),
        format!("xanvyl-agent-camp{tag}"),
        format!("anvyl-agentcamp{tag}"),
        format!("anvyl-agent-UPPERcamp{tag}"),
    ] {
        out.push((Kind::Container, Container::new(&name).created().create()));
    }
    out.push((Kind::Image, image(&format!("camp-{tag}-foreign:1"), &[])));
    out.push((
        Kind::Image,
        image(
            &format!("camp-{tag}-other-instance:1"),
            &[
                ("reaper.instance", "another-host"),
                ("reaper.session", "gone"),
            ],
        ),
    ));
    out
}

#[test]
fn a_random_campaign_never_touches_what_is_not_ours_and_leaves_nothing_dead_behind() {
    let seed = env_num(
        "REAPER_CAMPAIGN_SEED",
        std::process::id() as u64 * 2_654_435_761 + 1,
    );
    let rounds = env_num("REAPER_CAMPAIGN_ROUNDS", 3);
    let owners = env_num("REAPER_CAMPAIGN_OWNERS", 3);
    println!(
        "campaign: seed={seed} rounds={rounds} owners={owners} (REAPER_CAMPAIGN_SEED replays it)"
    );
    let mut rng = Rng(seed.max(1));
    let tag = format!("c{}", std::process::id());
    let _scope = Scope::new(&[
        &format!("camp-{tag}"),
        &format!("camp{tag}"),
        &format!("anvyl-agent-{tag}"),
    ]);
    let bystanders = Bystanders::create(&tag);
    let foreign = foreign(&tag);

    let reaper = Reaper::start(&["--orphan-grace-period", "2s", "--resync-interval", "1s"]);
    // Live owners carried over from earlier rounds, and everything they own.
    let mut live_objects: Vec<Obj> = Vec::new();
    // Live sessions get heartbeats every 500 ms for the whole run (a lapse would expire them).
    let beats = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let (beats, stop, socket) = (beats.clone(), stop.clone(), reaper.socket());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let names = beats.lock().map(|b| b.clone()).unwrap_or_default();
                for name in names {
                    let _ = run_with_timeout(
                        std::process::Command::new(Reaper::bin())
                            .arg("--socket")
                            .arg(&socket)
                            .args(["session", "heartbeat", &name]),
                        None,
                        Duration::from_secs(10),
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    for round in 0..rounds {
        let mut expected: Vec<(Obj, Fate, String)> = Vec::new();
        let mut manifests = String::new();
        let mut session_fates: Vec<(String, u64)> = Vec::new();
        for i in 0..owners {
            let name = format!("{tag}-r{round}-s{i}");
            let fate = rng.below(5); // 0 live, 1 end, 2 end --failed, 3 delete, 4 heartbeat lapses
                                     // Live sessions with a heartbeat get one from a background thread; fate 4 never does.
            let hb = if fate == 4 || (fate == 0 && rng.chance(50)) {
                "  heartbeatTimeout: 2s\n"
            } else {
                ""
            };
            manifests.push_str(&format!(
                "---\napiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {name}}}\nspec:\n{hb}  match: {{labels: {{camp-run: \"{name}\"}}}}\n"
            ));
            session_fates.push((name, fate));
        }
        let mut agent_fates: Vec<(String, u64)> = Vec::new();
        for i in 0..owners {
            let name = format!("{tag}-r{round}-a{i}");
            manifests.push_str(&format!(
                "---\napiVersion: reaper/v1\nkind: Agent\nmetadata: {{name: {name}}}\n"
            ));
            agent_fates.push((name, rng.below(3))); // 0 running, 1 failed, 2 stopped
        }
        reaper.apply(&manifests);
        for (name, fate) in &session_fates {
            if *fate == 0 {
                beats.lock().unwrap().push(name.clone());
            }
        }
        for (name, _) in &agent_fates {
            reaper.cli_ok(&["agent", "report", name, "running"]);
        }

        // Objects for every owner: by label, by adoption key, by the record's match rule, by name.
        for (name, fate) in &session_fates {
            let removed = *fate != 0;
            let fate_of = |removed: bool| {
                if removed {
                    Fate::Removed
                } else {
                    Fate::Survives
                }
            };
            let how = rng.below(3);
            let labels: Vec<(&str, &str)> = match how {
                0 => vec![("reaper.session", name.as_str())],
                1 => vec![("session_id", name.as_str()), ("reaper.instance", "e2e")],
                _ => vec![("camp-run", name.as_str())],
            };
            let c = Container::new(&format!("camp-{tag}-{name}-c")).labels(&labels);
            let c = if rng.chance(50) {
                c.running()
            } else {
                c.created()
            };
            expected.push((
                (Kind::Container, c.create()),
                fate_of(removed),
                name.clone(),
            ));
            if rng.chance(60) {
                let v = volume(
                    &format!("camp-{tag}-{name}-v"),
                    &[("reaper.session", name.as_str())],
                );
                expected.push(((Kind::Volume, v), fate_of(removed), name.clone()));
            }
            if rng.chance(40) {
                let n = network(
                    &format!("camp-{tag}-{name}-n"),
                    &[("reaper.session", name.as_str())],
                );
                expected.push(((Kind::Network, n), fate_of(removed), name.clone()));
            }
        }
        for (name, fate) in &agent_fates {
            let c = Container::new(&format!("anvyl-agent-{name}"))
                .running()
                .create();
            // A Stopped agent loses its containers; a Failed one its images too.
            expected.push((
                (Kind::Container, c),
                if *fate == 0 {
                    Fate::Survives
                } else {
                    Fate::Removed
                },
                name.clone(),
            ));
            let img = image(&format!("anvyl-agent-{name}:latest"), &[]);
            expected.push((
                (Kind::Image, img),
                if *fate == 1 {
                    Fate::Removed
                } else {
                    Fate::Survives
                },
                name.clone(),
            ));
        }
        // Orphans: ours, naming owners that do not exist.
        for i in 0..owners {
            let ghost = format!("{tag}-r{round}-ghost{i}");
            let c = Container::new(&format!("camp-{tag}-{ghost}"))
                .label("reaper.session", &ghost)
                .created()
                .create();
            expected.push(((Kind::Container, c), Fate::Removed, ghost.clone()));
        }

        // Churn.
        for (name, fate) in &session_fates {
            match fate {
                0 => {} // live: beats (if it has a heartbeat) started right after apply
                1 => drop(reaper.cli_ok(&["session", "end", name])),
                2 => drop(reaper.cli_ok(&["session", "end", name, "--failed"])),
                3 => drop(reaper.cli_ok(&["delete", "session", name])),
                _ => {} // heartbeat never sent: expires after 2 s
            }
        }
        for (name, fate) in &agent_fates {
            match fate {
                1 => drop(reaper.cli_ok(&["agent", "report", name, "failed"])),
                2 => drop(reaper.cli_ok(&["agent", "report", name, "stopped"])),
                _ => {}
            }
        }

        // Settle: the dead-owned go (grace 2 s, heartbeat 2 s), live ones keep beating.
        let doomed: Vec<Obj> = expected
            .iter()
            .filter(|e| e.1 == Fate::Removed)
            .map(|e| e.0.clone())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        while !all_gone(&doomed) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} (seed {seed}): dead-owned objects still present after 45 s: {:?}\n{}",
                present(&doomed),
                reaper.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // A few more resyncs, so anything wrongly doomed would have gone by now.
        std::thread::sleep(Duration::from_secs(3));

        live_objects.extend(
            expected
                .iter()
                .filter(|e| e.1 == Fate::Survives)
                .map(|e| e.0.clone()),
        );
        let must_exist: Vec<Obj> = foreign.iter().chain(live_objects.iter()).cloned().collect();
        assert!(
            all_exist(&must_exist),
            "round {round} (seed {seed}): foreign or live-owned objects vanished: {:?}\n{}",
            missing(&must_exist),
            reaper.log_tail()
        );
        bystanders.assert_all_alive();
        println!(
            "round {round}: {} removed as expected, {} foreign + {} live-owned intact",
            doomed.len(),
            foreign.len(),
            live_objects.len()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = beater.join();
}
