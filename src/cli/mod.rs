//! Over 500 lines: the clap definition of every verb, which is the CLI's reference, and the short client call behind each.
//!
//! The command line: `reaper serve` runs the daemon; every other verb is a thin client of the
//! daemon's API on its Unix socket.

mod custom_columns;
mod describe;
mod hosts;
mod jsonpath;
pub mod output;
mod register;
pub mod relative_time;
pub mod run;
mod selector;
mod serve_args;
mod wait;
mod watch;

use serve_args::socket_help;
pub use serve_args::{serve_overrides, ServeArgs};

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use crate::api::client::{Client, ClientError};
use crate::api::wire::{
    self, ApplyFile, ApplyRequest, ApplyResponse, CleanupRequest, CleanupResponse, EndRequest,
    HeartbeatRequest, ImportRequest, ImportResponse, Preview, RecordView, ReportRequest, Status,
};
use crate::core::model::{Name, OwnerKind, OwnerRef, Timestamp};
use output::{Described, ListOutput, Listed, Output};
use selector::Selector;

#[derive(Parser, Debug)]
#[command(
    name = "reaper",
    version,
    about = "Removes the Docker objects of ended workflow sessions and failed agents, and nothing else."
)]
pub struct Cli {
    #[arg(long, env = "REAPER_SOCKET", global = true, help = socket_help())]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller daemon.
    #[command(
        after_help = "Examples:\n  reaper serve                              # the embedded defaults\n  \
        reaper serve --config /etc/reaper/config.yaml\n  \
        reaper serve --dry-run                    # logs what it would remove, removes nothing\n  \
        reaper serve --once                       # passes until nothing more is removed, then exits"
    )]
    Serve(Box<ServeArgs>),
    /// Apply Session and Agent manifests (a file, a directory of *.yaml/*.yml, or - for stdin).
    #[command(after_help = "Examples:\n  reaper apply -f session.yaml\n  \
        reaper apply -f manifests/\n  \
        cat session.yaml | reaper apply -f -")]
    Apply {
        /// A manifest file, a directory of *.yaml/*.yml files, or - for stdin; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List records (or the fleet's hosts): all of a kind, or the NAMEs given, filtered by labels.
    #[command(
        after_help = "Examples:\n  reaper get sessions\n  reaper get sessions tdd-run-42 tdd-run-43 -o wide\n  \
        reaper get hosts                     # NAME STATE SAFE-MODE VERSION LAST-RENEWAL AGE\n  \
        reaper get hosts gpu-07 -o yaml\n  \
        reaper get sessions -l team=tdd,tier!=ci --no-headers\n  reaper get agents -o name\n  \
        reaper get sessions -o jsonpath='{range .items[*]}{.metadata.name}{\"\\n\"}{end}'\n  \
        reaper get sessions -o custom-columns=NAME:.metadata.name,PHASE:.status.phase\n  \
        reaper get sessions -w    # then a row each time a session changes; Ctrl-C ends it"
    )]
    Get {
        /// sessions, agents or hosts.
        what: Plural,
        /// Only these records or hosts (all of the kind when none is given).
        names: Vec<String>,
        /// Only records whose labels match: key=value, key!=value, key, !key; comma-separated
        /// (all must hold), repeatable. Not for hosts.
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
        selector: Vec<String>,
        #[arg(short = 'o', long, value_parser = ListOutput::parse, default_value = "table",
              help = ListOutput::HELP)]
        output: ListOutput,
        /// Tables without their header line.
        #[arg(long)]
        no_headers: bool,
        /// A NAME that does not exist is not an error.
        #[arg(long)]
        ignore_not_found: bool,
        /// After the current records, print a row (or document) each time one changes, until
        /// interrupted. Not for hosts.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show a record, its status and conditions, and the Docker objects it owns now.
    #[command(after_help = "Examples:\n  reaper describe session tdd-run-42\n  \
        reaper describe agent my-agent -o yaml")]
    Describe {
        /// session or agent.
        kind: Kind,
        /// The record's name.
        name: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Delete a record (its objects are removed first), or forget a gone host.
    #[command(
        after_help = "Examples:\n  reaper delete session tdd-run-42 --wait\n  \
        reaper delete agent my-agent --ignore-not-found\n  \
        reaper delete host gpu-07            # only once `reaper get hosts` shows it gone"
    )]
    Delete {
        /// session, agent or host.
        kind: Deletable,
        /// The record's (or host's) name.
        name: String,
        /// Wait until the record (and so its objects) is gone. A host is forgotten at once.
        #[arg(long)]
        wait: bool,
        /// A record (or host) that does not exist is not an error.
        #[arg(long)]
        ignore_not_found: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "5m")]
        timeout: crate::core::model::Duration,
    },
    /// Run a command inside a new session: its objects go when it exits, or when `reaper run`
    /// dies and the heartbeat lapses. Exits with the command's status.
    #[command(after_help = "Examples:\n  reaper run --ttl 2h -- ./workflow.sh\n  \
        reaper run --session tdd-run-42 -- sh -c 'docker run -d --label-file \"$REAPER_LABEL_FILE\" executor'\n\n\
        CMD gets REAPER_SESSION (the name) and REAPER_LABEL_FILE (a `docker run --label-file` file\n\
        with the session's ownership label). Exit status: CMD's, 128+N when a signal N ended it,\n\
        125 when reaper could not start it (daemon unreachable, name taken), 126/127 when CMD\n\
        cannot be executed or is not found.")]
    Run(Box<run::RunArgs>),
    /// Session lifecycle: start, end, heartbeat.
    #[command(
        subcommand,
        after_help = "Examples:\n  reaper session start tdd-run-42 --ttl 2h\n  \
        reaper session heartbeat tdd-run-42\n  reaper session end tdd-run-42"
    )]
    Session(SessionCommand),
    /// Agent lifecycle: report a phase.
    #[command(
        subcommand,
        after_help = "Example:\n  reaper agent report my-agent failed"
    )]
    Agent(AgentCommand),
    /// Show what would be removed right now, and why, without removing it.
    #[command(after_help = "Examples:\n  reaper orphans\n  \
        reaper orphans -o json")]
    Orphans {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Remove now: everything removable (orphans without waiting for their grace), or one owner's
    /// objects. `cleanup session NAME` also ends the session for good.
    ///
    /// `cleanup session NAME` ends an Active session for good (phase Ended, reason manual, as
    /// `reaper session end` does) and removes its objects now; applying NAME again is refused
    /// until `reaper delete session NAME`. `cleanup agent NAME` removes the agent's objects and
    /// build dir and sets it Stopped. NAME needs no record: without one, what the ownership rules
    /// attribute to NAME goes (reaper.session/reaper.agent labels, the adoption label keys,
    /// `<agentNamePrefix>NAME` container and image names), but no build dir or path. The preview
    /// lists each object and why it is NAME's; without a terminal on stdin it refuses unless
    /// --yes is given.
    #[command(
        after_help = "Examples:\n  reaper cleanup --dry-run                  # what would go now\n  \
        reaper cleanup session tdd-run-42         # asks first at a terminal\n  \
        reaper cleanup agent my-agent --yes"
    )]
    Cleanup {
        /// `session NAME` or `agent NAME`; nothing for everything removable.
        #[arg(num_args = 0..=2, value_names = ["KIND", "NAME"])]
        target: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Wait until records reach a phase, or are deleted (as kubectl wait does); prints
    /// `KIND/NAME condition met` for each.
    #[command(after_help = "Examples:\n  reaper session end tdd-run-42 && \
        reaper wait session tdd-run-42 --for phase=Cleaned --timeout 2m\n  \
        reaper wait agent my-agent --for phase=running\n  \
        reaper wait session tdd-run-42 tdd-run-43 --for delete\n\n\
        Exit status: 0 once every NAME meets the condition; 1 on timeout, or when a NAME does not\n\
        exist (with --for delete, a NAME that does not exist has met it).")]
    Wait {
        /// session or agent.
        kind: Kind,
        /// The records' names.
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long = "for", value_name = "CONDITION", value_parser = wait::Condition::parse,
              help = wait::Condition::HELP)]
        condition: wait::Condition,
        /// How long to wait.
        #[arg(long, default_value = "30s")]
        timeout: crate::core::model::Duration,
    },
    /// Daemon, store and Docker health, with counts.
    #[command(after_help = "Examples:\n  reaper status\n  \
        reaper status -o json")]
    Status {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Disk pressure: usage of the filesystem holding Docker's data root, the watermarks, and
    /// which of our idle images are evicted now, in order, with sizes (as last measured).
    #[command(after_help = "Examples:\n  reaper disk\n  \
        reaper disk -o json")]
    Disk {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Daemon config files.
    #[command(
        subcommand,
        after_help = "Example:\n  reaper config check /etc/reaper/config.yaml"
    )]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh or fish).
    #[command(
        after_help = "Examples:\n  reaper completion bash > /etc/bash_completion.d/reaper\n  \
        reaper completion zsh > \"${fpath[1]}/_reaper\"\n  \
        reaper completion fish > ~/.config/fish/completions/reaper.fish"
    )]
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `reaper man | man -l -`.
    #[command(hide = true)]
    Man,
    /// Save or restore every record with its status, as YAML.
    #[command(
        subcommand,
        after_help = "Examples:\n  reaper store export > records.yaml\n  reaper store import -f records.yaml"
    )]
    Store(StoreCommand),
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Print every record with its status as multi-document YAML.
    #[command(after_help = "Examples:\n  reaper store export > records.yaml\n  \
        reaper store export --data-dir /var/lib/reaper > records.yaml   # daemon stopped")]
    Export {
        /// Read the store directly instead of asking the daemon (the daemon must be stopped).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore records (with status) from an export; existing records of the same name are replaced.
    #[command(after_help = "Examples:\n  reaper store import -f records.yaml\n  \
        reaper store import -f records.yaml --data-dir /var/lib/reaper   # daemon stopped")]
    Import {
        /// An export (`reaper store export`), or - for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Write the store directly instead of through the daemon (the daemon must be stopped).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Register a new Active session without writing YAML (as `kubectl create` does).
    #[command(
        after_help = "Example:\n  reaper session start tdd-run-42 --ttl 2h --heartbeat 60s --label team=tdd"
    )]
    Start {
        /// The new session's name (refused when in use, even by a finished session).
        #[arg(value_parser = register::session_name)]
        name: Name,
        #[command(flatten)]
        flags: register::SessionFlags,
        /// The session expires when no `reaper session heartbeat` came for this long.
        #[arg(long, value_parser = register::positive_duration)]
        heartbeat: Option<crate::core::model::Duration>,
    },
    /// The workflow is over: clean up now.
    #[command(after_help = "Examples:\n  reaper session end tdd-run-42\n  \
        reaper session end tdd-run-42 --failed")]
    End {
        /// The session's name.
        name: String,
        /// The workflow failed (recorded in status; cleanup is the same).
        #[arg(long)]
        failed: bool,
    },
    /// Renew the session's heartbeat.
    #[command(
        after_help = "Example:\n  reaper session heartbeat tdd-run-42   # within every heartbeatTimeout"
    )]
    Heartbeat {
        /// The session's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Report an agent's phase: starting, running, failed or stopped (any case).
    #[command(after_help = "Examples:\n  reaper agent report my-agent running\n  \
        reaper agent report my-agent failed    # its containers, images and build dir go")]
    Report {
        /// The agent's name.
        name: String,
        /// The agent's new phase.
        #[arg(value_enum, ignore_case = true)]
        phase: PhaseArg,
    },
}

/// An agent phase as `agent report` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    Starting,
    Running,
    Failed,
    Stopped,
}

impl From<PhaseArg> for crate::core::model::AgentPhase {
    fn from(p: PhaseArg) -> Self {
        use crate::core::model::AgentPhase;
        match p {
            PhaseArg::Starting => AgentPhase::Starting,
            PhaseArg::Running => AgentPhase::Running,
            PhaseArg::Failed => AgentPhase::Failed,
            PhaseArg::Stopped => AgentPhase::Stopped,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file without starting anything.
    #[command(after_help = "Example:\n  reaper config check /etc/reaper/config.yaml")]
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Plural {
    #[value(alias = "session")]
    Sessions,
    #[value(alias = "agent")]
    Agents,
    #[value(alias = "host")]
    Hosts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "sessions")]
    Session,
    #[value(alias = "agents")]
    Agent,
}

/// What `reaper delete` deletes: a record, or a gone host's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Deletable {
    #[value(alias = "sessions")]
    Session,
    #[value(alias = "agents")]
    Agent,
    #[value(alias = "hosts")]
    Host,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Session => "sessions",
            Kind::Agent => "agents",
        }
    }
}

/// An error the user sees, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let mut message = e.to_string();
        if let ClientError::Api { details, .. } = &e {
            for d in details {
                message.push_str("\n  ");
                message.push_str(d);
            }
        }
        Failure::new(1, message)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(1, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

pub async fn run_client(socket: &Path, command: Command) -> Outcome {
    let c = Client::new(socket);
    match command {
        Command::Serve(_)
        | Command::Config(_)
        | Command::Run(_)
        | Command::Completion { .. }
        | Command::Man => Err(Failure::new(2, "not a client command")),
        Command::Store(cmd) => store_command(&c, cmd).await,
        Command::Apply { files } => apply(&c, &files).await,
        Command::Get {
            what,
            names,
            selector,
            output,
            no_headers,
            ignore_not_found,
            watch,
        } => {
            if what == Plural::Hosts {
                if !selector.is_empty() || watch {
                    return Err(Failure::new(
                        2,
                        "hosts have no labels and no watch: -l and -w are for sessions and agents",
                    ));
                }
                let g = hosts::GetHosts {
                    names: &names,
                    output: &output,
                    no_headers,
                    ignore_not_found,
                };
                return hosts::get(&c, g).await;
            }
            let selector = Selector::parse(selector.iter().map(String::as_str))
                .map_err(|e| Failure::new(2, e))?;
            if watch {
                let w = watch::Watch {
                    plural: plural_of(what),
                    names: &names,
                    selector: &selector,
                    output: &output,
                    no_headers,
                    ignore_not_found,
                };
                return watch::run(&c, w).await;
            }
            let (listed, missing) = get(&c, what, &names, ignore_not_found).await?;
            let listed = match listed {
                Listed::One(r) if !selector.matches(r.labels()) => Listed::All(Vec::new()),
                Listed::All(mut v) => {
                    v.retain(|r| selector.matches(r.labels()));
                    Listed::All(v)
                }
                one => one,
            };
            if !listed.items().is_empty() || missing.is_empty() {
                print!(
                    "{}",
                    output::records_as(
                        &listed,
                        what == Plural::Agents,
                        &output,
                        no_headers,
                        Timestamp::now(),
                    )
                );
            }
            match missing.is_empty() {
                true => Ok(()),
                false => Err(Failure::new(1, missing.join("\nerror: "))),
            }
        }
        Command::Describe { kind, name, output } => {
            let path = format!("/v1/{}/{name}", kind.plural());
            let described = Described {
                record: c.get(&path).await?,
                matches: c.get(&format!("{path}/match")).await?,
                objects: c.get(&format!("{path}/objects")).await?,
                events: c.get(&format!("{path}/events")).await?,
            };
            let now = crate::core::model::Timestamp::now();
            print!("{}", output::describe(&described, output, now));
            Ok(())
        }
        Command::Delete {
            kind,
            name,
            wait,
            ignore_not_found,
            timeout,
        } => {
            let kind = match kind {
                Deletable::Host => return hosts::delete(&c, &name, ignore_not_found).await,
                Deletable::Session => Kind::Session,
                Deletable::Agent => Kind::Agent,
            };
            let path = format!("/v1/{}/{name}", kind.plural());
            match c.delete::<RecordView>(&path).await {
                Err(e) if ignore_not_found && e.is_not_found() => return Ok(()),
                other => other?,
            };
            println!("{}/{name} deletion requested", kind_str(kind));
            if wait {
                let names = [name.clone()];
                let gone = wait::Condition::Deleted;
                wait::until(&c, kind, &names, &gone, timeout.std(), |_| {}).await?;
                println!("{}/{name} deleted", kind_str(kind));
            }
            Ok(())
        }
        Command::Wait {
            kind,
            names,
            condition,
            timeout,
        } => wait::wait(&c, kind, &names, &condition, timeout.std()).await,
        Command::Session(SessionCommand::Start {
            name,
            flags,
            heartbeat,
        }) => {
            register::register(&c, &name, &flags, heartbeat, "reaper session start").await?;
            println!("session/{name} created");
            Ok(())
        }
        Command::Session(SessionCommand::End { name, failed }) => {
            let record: RecordView = c
                .post(&format!("/v1/sessions/{name}/end"), &EndRequest { failed })
                .await?;
            let phase = match &record {
                RecordView::Session { session, .. } => session.status.phase.as_str(),
                RecordView::Agent { .. } => "ended",
            };
            println!("session/{name} {phase}");
            Ok(())
        }
        Command::Session(SessionCommand::Heartbeat { name }) => {
            let _: RecordView = c
                .post(
                    &format!("/v1/sessions/{name}/heartbeat"),
                    &HeartbeatRequest {},
                )
                .await?;
            Ok(())
        }
        Command::Agent(AgentCommand::Report { name, phase }) => {
            let phase = crate::core::model::AgentPhase::from(phase);
            let _: RecordView = c
                .post(
                    &format!("/v1/agents/{name}/report"),
                    &ReportRequest { phase },
                )
                .await?;
            println!("agent/{name} {}", phase.as_str());
            Ok(())
        }
        Command::Orphans { output } => {
            let preview: Preview = c.get("/v1/orphans").await?;
            print!("{}", output::orphans(&preview, output, Timestamp::now()));
            Ok(())
        }
        Command::Cleanup {
            target,
            yes,
            dry_run,
        } => cleanup(&c, &target, yes, dry_run).await,
        Command::Status { output } => {
            let status: Status = c.get("/v1/status").await?;
            print!("{}", output::status(&status, output, Timestamp::now()));
            Ok(())
        }
        Command::Disk { output } => {
            let status: Status = c.get("/v1/status").await?;
            print!("{}", output::disk(&status.health.disk, output));
            Ok(())
        }
    }
}

/// The completion script for `shell`, generated from the same clap definition as the parser.
pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "reaper",
        &mut out,
    );
    out
}

/// The man page, generated from the clap definition.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out)?;
    Ok(out)
}

/// The records `reaper get` asked for: all of a kind, one, or several (in the order named),
/// and the errors of names that do not exist (none with `ignore_not_found`).
async fn get(
    c: &Client,
    what: Plural,
    names: &[String],
    ignore_not_found: bool,
) -> Result<(Listed, Vec<String>), Failure> {
    let plural = plural_of(what);
    if names.is_empty() {
        return Ok((
            Listed::All(c.get(&format!("/v1/{plural}")).await?),
            Vec::new(),
        ));
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match c.get::<RecordView>(&format!("/v1/{plural}/{name}")).await {
            Ok(r) => found.push(r),
            Err(e) if e.is_not_found() => {
                if !ignore_not_found {
                    missing.push(e.to_string());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let listed = match (names.len(), found.pop()) {
        (1, Some(one)) => Listed::One(Box::new(one)),
        (_, last) => Listed::All(found.into_iter().chain(last).collect()),
    };
    Ok((listed, missing))
}

fn plural_of(p: Plural) -> &'static str {
    match p {
        Plural::Sessions => "sessions",
        Plural::Agents => "agents",
        Plural::Hosts => "hosts",
    }
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Session => "session",
        Kind::Agent => "agent",
    }
}

/// Reads `-f` arguments: files, directories (their *.yaml / *.yml, sorted), or `-` for stdin.
pub fn read_manifest_files(args: &[String]) -> Result<Vec<ApplyFile>, Failure> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            out.push(read_capped("<stdin>", std::io::stdin().lock())?);
            continue;
        }
        let path = Path::new(arg);
        let meta = std::fs::metadata(path).map_err(|e| Failure::new(1, format!("{arg}: {e}")))?;
        let files = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Failure::new(1, format!("{arg}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                        && p.is_file()
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            let name = f.display().to_string();
            let file =
                std::fs::File::open(&f).map_err(|e| Failure::new(1, format!("{name}: {e}")))?;
            let limit = crate::core::manifest::MAX_STREAM_BYTES as u64;
            if file.metadata().is_ok_and(|m| m.len() > limit) {
                // Refuse before reading a byte of it.
                return Err(Failure::new(
                    1,
                    format!("{name}: larger than {limit} bytes; nothing was applied"),
                ));
            }
            out.push(read_capped(&name, file)?);
        }
    }
    Ok(out)
}

/// Reads at most the manifest size limit (plus one byte to notice more), so a huge input is
/// refused without being held in memory, and invalid UTF-8 is refused with its position.
fn read_capped(name: &str, reader: impl Read) -> Result<ApplyFile, Failure> {
    let limit = crate::core::manifest::MAX_STREAM_BYTES;
    let mut bytes = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(1, format!("{name}: {e}")))?;
    if bytes.len() > limit {
        return Err(Failure::new(
            1,
            format!("{name}: larger than {limit} bytes; nothing was applied"),
        ));
    }
    match String::from_utf8(bytes) {
        Ok(content) => Ok(ApplyFile {
            name: name.to_string(),
            content,
        }),
        Err(e) => {
            let located = crate::core::manifest::decode_utf8(name, e.as_bytes()).err();
            let why = located.map_or_else(|| "not valid UTF-8".to_string(), |l| l.to_string());
            Err(Failure::new(1, format!("{why}; nothing was applied")))
        }
    }
}

async fn apply(c: &Client, args: &[String]) -> Outcome {
    let files = read_manifest_files(args)?;
    let applied: ApplyResponse = c
        .post(
            "/v1/apply",
            &ApplyRequest {
                files,
                create: false,
            },
        )
        .await?;
    for w in &applied.warnings {
        eprintln!("warning: {w}");
    }
    for r in &applied.results {
        println!("{}/{} {}", r.kind.as_str(), r.name, r.action.as_str());
    }
    Ok(())
}

async fn cleanup(c: &Client, target: &[String], yes: bool, dry_run: bool) -> Outcome {
    let owner = match target {
        [] => None,
        [kind, name] => {
            let kind = match kind.as_str() {
                "session" | "sessions" => OwnerKind::Session,
                "agent" | "agents" => OwnerKind::Agent,
                other => {
                    return Err(Failure::new(
                        2,
                        format!("invalid target kind {other:?}: expected session or agent"),
                    ))
                }
            };
            let name = Name::new(name).map_err(|e| Failure::new(1, e))?;
            Some(OwnerRef { kind, name })
        }
        _ => {
            return Err(Failure::new(
                2,
                "cleanup takes `session NAME`, `agent NAME`, or nothing",
            ))
        }
    };
    let request = |dry_run| CleanupRequest {
        owner: owner.clone(),
        dry_run,
    };
    let record = match &owner {
        Some(o) => owner_record(c, o).await?,
        None => None,
    };
    // A session cleaned up by hand ends for good: say so before anything happens.
    let ends = match &record {
        Some(RecordView::Session { session, .. }) => {
            session.status.phase == crate::core::model::SessionPhase::Active
        }
        _ => false,
    };
    let preview: CleanupResponse = c.post("/v1/cleanup", &request(true)).await?;
    let planned = preview.planned;
    if planned.is_empty() && !ends {
        match &owner {
            Some(o) => println!("nothing to clean for {} {}", o.kind.as_str(), o.name),
            None => println!("Nothing to clean up."),
        }
        return Ok(());
    }
    if let Some(o) = &owner {
        print!("{}", cleanup_note(o, record.as_ref(), ends));
    }
    if !planned.is_empty() {
        print!("{}", output::removals(&planned));
    }
    if dry_run {
        return Ok(());
    }
    let what = match (&owner, ends) {
        (Some(o), true) if planned.is_empty() => format!("end session/{}", o.name),
        (Some(o), true) => format!(
            "end session/{} and remove {} object(s)",
            o.name,
            planned.len()
        ),
        _ => format!("remove {} object(s)", planned.len()),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::new(
                2,
                format!(
                    "refusing to {what} without confirmation: stdin is not a terminal; pass --yes"
                ),
            ));
        }
        let mut question = what.clone();
        question[..1].make_ascii_uppercase();
        print!("{question}? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing removed.");
            return Ok(());
        }
    }
    let done: CleanupResponse = c.post("/v1/cleanup", &request(false)).await?;
    let failed = done.failed;
    if let (Some(o), true) = (&owner, ends) {
        println!(
            "session/{} ended (reason manual); its name is refused by apply until `reaper delete session {}`.",
            o.name, o.name
        );
    }
    println!("Removed {} object(s).", done.removed.len());
    if owner.is_some() {
        // Each object that went, and why it was the owner's.
        let gone: Vec<_> = done
            .planned
            .into_iter()
            .filter(|r| done.removed.contains(&r.target))
            .collect();
        if !gone.is_empty() {
            print!("{}", output::removals(&gone));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        for f in &failed {
            let (_, _, name) = output::target_fields(&f.target);
            eprintln!("failed: {name}: {}", f.error);
        }
        Err(Failure::new(
            1,
            format!(
                "{} removal(s) failed; they will be retried by the daemon",
                failed.len()
            ),
        ))
    }
}

/// The owner's record, or `None` when it has none (a cleanup by name alone).
async fn owner_record(c: &Client, o: &OwnerRef) -> Result<Option<RecordView>, Failure> {
    let path = format!("/v1/{}s/{}", o.kind.as_str(), o.name);
    match c.get::<RecordView>(&path).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a cleanup of one owner does besides removing objects, printed before the list.
fn cleanup_note(o: &OwnerRef, record: Option<&RecordView>, ends: bool) -> String {
    let (kind, name) = (o.kind.as_str(), &o.name);
    match record {
        None => format!(
            "No {kind} record named {name}: what the ownership rules attribute to the name goes \
             at once (no build dir or paths).\n"
        ),
        Some(_) if ends => format!(
            "session/{name} is Active: this cleanup ends it for good (phase Ended, reason manual), \
             like `reaper session end`; applying {name} again is refused until \
             `reaper delete session {name}`.\n"
        ),
        Some(_) => String::new(),
    }
}

async fn store_command(c: &Client, cmd: StoreCommand) -> Outcome {
    let offline = |dir: &Path| {
        let store_dir = dir.join("store");
        crate::store::Store::open(&store_dir).map_err(|e| {
            let message = match crate::store::lock::lock_holder(&store_dir) {
                // The daemon (or another command) holds it: say only that.
                Some(pid) => crate::store::lock::in_use_message(&store_dir, Some(pid)),
                None => format!("cannot open the store in {}: {e}", dir.display()),
            };
            Failure::new(1, message)
        })
    };
    match cmd {
        StoreCommand::Export { data_dir } => {
            let records: Vec<RecordView> = match data_dir {
                Some(dir) => {
                    let store = offline(&dir)?;
                    let records = store.export().map_err(|e| Failure::new(1, e.to_string()))?;
                    records.into_iter().map(RecordView::from).collect()
                }
                None => c.get("/v1/export").await?,
            };
            for r in records {
                print!(
                    "---\n{}",
                    serde_yaml::to_string(&r).map_err(|e| Failure::new(1, e.to_string()))?
                );
            }
            Ok(())
        }
        StoreCommand::Import { file, data_dir } => {
            let input = read_manifest_files(std::slice::from_ref(&file))?;
            let mut records = Vec::new();
            for f in &input {
                records.extend(
                    wire::parse_export(&f.content)
                        .map_err(|e| Failure::new(1, format!("{}: {e}", f.name)))?,
                );
            }
            let n = match data_dir {
                Some(dir) => {
                    let records: Vec<crate::core::model::Record> = records
                        .into_iter()
                        .map(crate::core::model::Record::from)
                        .collect();
                    // As the daemon does: a record without its status is refused, all or nothing.
                    for r in &records {
                        r.check_importable().map_err(|e| {
                            Failure::new(1, format!("{file}: {e}; nothing was imported"))
                        })?;
                    }
                    let store = offline(&dir)?;
                    store
                        .import(records)
                        .await
                        .map_err(|e| Failure::new(1, e.to_string()))?
                }
                None => {
                    let imported: ImportResponse =
                        c.post("/v1/import", &ImportRequest { records }).await?;
                    imported.imported
                }
            };
            println!("Imported {n} record(s).");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Help that teaches: every command a user can reach shows examples, and every argument
    /// says what it is.
    #[test]
    fn every_command_has_examples_and_every_argument_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                let path = format!("{path} {}", sub.get_name());
                let examples = sub.get_after_help().map(|h| h.to_string());
                if !examples.is_some_and(|h| h.starts_with("Example")) {
                    missing.push(format!("{path}: no example section"));
                }
                for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                    let id = arg.get_id().as_str();
                    if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                        missing.push(format!("{path}: argument {id} has no description"));
                    }
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "reaper", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
