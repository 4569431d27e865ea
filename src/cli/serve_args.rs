//! `reaper serve`'s flags: every config key (declared once, in `config::ConfigFile`) plus the
//! two that are not keys, `--config` and `--once`. `--help` shows each key's default as it
//! would be for this user.

use clap::{Arg, Args};
use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::ConfigFile;

#[derive(Args, Debug, Default)]
#[command(mut_args = show_defaults())]
pub struct ServeArgs {
    /// A `kind: Config` file; flags override it, and it overrides the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run passes until nothing more is removed, then exit; the exit code says whether any
    /// removal failed.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub keys: ConfigFile,
}

/// The flags as a config layer, with the global `--socket`, so that flags override the file key
/// by key.
pub fn serve_overrides(a: &ServeArgs, socket: Option<PathBuf>) -> ConfigFile {
    ConfigFile {
        socket,
        ..a.keys.clone()
    }
}

/// The global `--socket`'s help: the API socket's default is the client's too.
pub(crate) fn socket_help() -> String {
    let default = crate::config::default_socket_path();
    format!("The daemon's API socket [default: {}]", default.display())
}

/// Appends `[default: …]` to the help of each flag whose key has a default, as clap does for
/// its own defaults (which would make every flag look given).
fn show_defaults() -> impl FnMut(Arg) -> Arg {
    let shown: HashMap<&'static str, String> = ConfigFile::defaults_here()
        .keys()
        .into_iter()
        .filter_map(|k| Some((k.field(), k.shown?)))
        .collect();
    move |arg| match (shown.get(arg.get_id().as_str()), arg.get_help()) {
        (Some(default), Some(help)) => {
            let help = format!("{help} [default: {default}]");
            arg.help(help)
        }
        _ => arg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{AdoptionFile, DockerFile, EngineQuirksFile, API_TOKEN_ENV};
    use crate::core::model::SerialExitsSetting;
    use clap::{CommandFactory, Parser};

    fn serve(flags: &[&str]) -> ServeArgs {
        let argv = ["reaper", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Serve(args)) => *args,
            other => panic!("{flags:?}: {other:?}"),
        }
    }

    /// Flags not given leave their keys unset, so they never hide the file's values.
    #[test]
    fn no_flags_set_no_keys() {
        let mut keys = serve(&[]).keys;
        if std::env::var_os(API_TOKEN_ENV).is_some() {
            keys.api_token = None;
        }
        assert_eq!(keys, ConfigFile::default());
    }

    #[test]
    fn flags_fill_the_same_keys_as_the_file() {
        let args = serve(&[
            "--docker-host=tcp://proxy:2375",
            "--dry-run",
            "--session-label-key",
            "run_id",
            "--session-label-key=job",
            "--serial-exits",
            "on",
            "--concurrency",
            "3",
            "--once",
        ]);
        assert!(args.once);
        let socket = Some(PathBuf::from("/s.sock"));
        let keys = serve_overrides(&args, socket.clone());
        assert_eq!(
            keys,
            ConfigFile {
                docker: Some(DockerFile {
                    host: Some("tcp://proxy:2375".into())
                }),
                dry_run: Some(true),
                adoption: Some(AdoptionFile {
                    session_label_keys: Some(vec!["run_id".into(), "job".into()]),
                    agent_name_prefix: None,
                }),
                engine_quirks: Some(EngineQuirksFile {
                    serial_exits: Some(SerialExitsSetting::On),
                }),
                concurrency: Some(3),
                socket,
                api_token: keys.api_token.clone(), // from the environment, if set there
                ..ConfigFile::default()
            }
        );
        assert!(Cli::try_parse_from(["reaper", "serve", "--dry-run=false"]).is_err());
        assert!(Cli::try_parse_from(["reaper", "serve", "--concurrency", "x"]).is_err());
    }

    #[test]
    fn store_flags_fill_the_store_keys() {
        let args = serve(&[
            "--store-backend",
            "etcd",
            "--etcd-endpoint",
            "http://e1:2379",
            "--etcd-endpoint=http://e2:2379",
            "--etcd-prefix",
            "/fleet",
            "--host-name",
            "gpu-07",
        ]);
        let keys = serve_overrides(&args, None);
        let store = keys.store.expect("store keys");
        assert_eq!(store.backend, Some(crate::config::StoreBackend::Etcd));
        let etcd = store.etcd.expect("store.etcd keys");
        assert_eq!(
            etcd.endpoints,
            Some(vec!["http://e1:2379".into(), "http://e2:2379".into()])
        );
        assert_eq!(etcd.prefix.as_deref(), Some("/fleet"));
        assert_eq!(keys.host_name.as_deref(), Some("gpu-07"));
        // A section flag alone sets its section.
        let only_tls = serve(&["--etcd-ca-file", "/ca.pem"])
            .keys
            .store
            .expect("store keys");
        assert_eq!(
            only_tls.etcd.and_then(|e| e.ca_file),
            Some("/ca.pem".into())
        );
        assert_eq!(serve(&[]).keys.store, None);
    }

    fn serve_command() -> clap::Command {
        let mut cli = Cli::command();
        cli.build();
        cli.find_subcommand("serve").cloned().expect("serve")
    }

    /// Issue 15: `reaper serve --help` describes every flag and shows every key's default.
    #[test]
    fn every_flag_has_help_and_shows_its_default() {
        let serve = serve_command();
        for arg in serve.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(!help.trim().is_empty(), "{:?} has no help", arg.get_long());
        }
        let defaults = ConfigFile::defaults_here().keys();
        for key in defaults.iter().filter(|k| k.shown.is_some()) {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_id() == key.field())
                .unwrap_or_else(|| panic!("no flag for {}", key.name()));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let shown = format!("[default: {}]", key.shown.as_deref().unwrap_or_default());
            assert!(help.ends_with(&shown), "{}: {help}", key.name());
        }
        assert!(defaults
            .iter()
            .any(|k| k.name() == "concurrency" && k.shown.as_deref() == Some("8")));
    }

    /// README's Configuration table lists every key with its flag (and environment variable),
    /// and nothing else.
    #[test]
    fn the_readme_lists_every_key_with_its_flag() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Configuration section");
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect()
        };
        let rows: Vec<(String, Vec<String>)> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                let key = ticked(cells[1]).first().cloned().unwrap_or_default();
                (key, ticked(cells.get(2).copied().unwrap_or_default()))
            })
            .collect();
        let serve = serve_command();
        let expected: Vec<(String, Vec<String>)> = ConfigFile::default()
            .keys()
            .iter()
            .map(|k| {
                // `socket` is the global `--socket`, shared with the client commands.
                let flag = serve.get_arguments().find(|a| a.get_id() == k.field());
                let mut cell = Vec::new();
                if let Some(long) = flag.and_then(|a| a.get_long()) {
                    cell.push(format!("--{long}"));
                }
                if let Some(env) = flag.and_then(|a| a.get_env()) {
                    cell.push(env.to_string_lossy().into_owned());
                }
                (k.name(), cell)
            })
            .collect();
        assert_eq!(rows, expected);
    }
}
