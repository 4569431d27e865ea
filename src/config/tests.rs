//! Over 500 lines: one test per config rule and per located error message; the messages are the contract.
//!
//! The config's unit tests: defaults, precedence and the located error messages.

use super::*;
use crate::core::yaml::MAX_DOCUMENT_BYTES;

const HEAD: &str = "apiVersion: reaper/v1\nkind: Config\n";

fn user_env() -> Env {
    Env {
        root: false,
        uid: 1000,
        home: Some("/home/u".into()),
        xdg_state_home: None,
        xdg_runtime_dir: Some("/run/user/1000".into()),
        docker_host: None,
        host_name: Some("gpu-07".into()),
    }
}

fn root_env() -> Env {
    Env {
        root: true,
        uid: 0,
        home: Some("/root".into()),
        host_name: Some("gpu-07".into()),
        ..Env::default()
    }
}

fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
    ConfigFile::parse("c.yaml", text)
}

fn one_problem(text: &str) -> ManifestError {
    let err = parse(text).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    problems[0].clone()
}

fn resolve(file: ConfigFile, flags: ConfigFile, env: &Env) -> Config {
    resolve_in(file, flags, env).unwrap()
}

#[test]
fn the_example_parses_and_documents_the_real_defaults() {
    let example = ConfigFile::parse(
        "config.example.yaml",
        include_str!("../../manifests/config.example.yaml"),
    )
    .unwrap();
    assert_eq!(example.source.as_deref(), Some("config.example.yaml"));
    assert_eq!(example.concurrency, Some(8));
    for env in [user_env(), root_env()] {
        let from_example = resolve(example.clone(), ConfigFile::default(), &env);
        let defaults = resolve(ConfigFile::default(), ConfigFile::default(), &env);
        assert_eq!(from_example, defaults);
    }
    // The commented-out keys are valid too, and equal to the root defaults.
    let keys = [
        "docker:",
        "  host:",
        "dataDir:",
        "socket:",
        "pathsRoot:",
        "manifests:",
        "apiToken:",
    ];
    let uncommented: String = include_str!("../../manifests/config.example.yaml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let full = ConfigFile::parse("full.yaml", &uncommented).unwrap();
    assert!(
        full.data_dir.is_some() && full.manifests.is_some() && full.api_token.is_some(),
        "{full:?}"
    );
    let mut expected = resolve(ConfigFile::default(), ConfigFile::default(), &root_env());
    expected.manifests = Some("/etc/reaper/manifests".into());
    expected.api_token = full.api_token.clone();
    assert_eq!(resolve(full, ConfigFile::default(), &root_env()), expected);
}

/// The keys a layer leaves unset, by their names in the file.
fn unset_keys(layer: &ConfigFile) -> Vec<String> {
    let keys = layer.keys().into_iter();
    keys.filter(|k| !k.set).map(|k| k.name()).collect()
}

/// Every key of the definition is in the example, set or commented out (and, as unknown keys
/// are errors, nothing else is).
#[test]
fn the_example_documents_every_key() {
    let keys = ConfigFile::default().keys();
    let words: std::collections::BTreeSet<String> = keys
        .iter()
        .flat_map(|k| k.name().split('.').map(String::from).collect::<Vec<_>>())
        .collect();
    let is_key = |line: &str| {
        let word = line.trim_start().split(':').next().unwrap_or_default();
        line.contains(':') && words.contains(word)
    };
    let uncommented: String = include_str!("../../manifests/config.example.yaml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_key(rest) => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let full = ConfigFile::parse("full.yaml", &uncommented).unwrap();
    let missing = unset_keys(&full);
    assert!(
        missing.is_empty(),
        "not in config.example.yaml: {missing:?}"
    );
    assert!(keys.len() >= 20, "{keys:?}");
}

/// A key whose default is written in `defaults` resolves to it; one without stays unset.
#[test]
fn keys_without_a_default_are_the_optional_ones() {
    let defaults = ConfigFile::defaults(&root_env(), Some(Path::new("/d")));
    assert_eq!(
        unset_keys(&defaults),
        [
            "apiVersion",
            "kind",
            "manifests",
            "cleanupDelayOnFailure",
            "apiToken",
            "apiListen",
            "store.etcd.endpoints",
            "store.etcd.caFile",
            "store.etcd.certFile",
            "store.etcd.keyFile"
        ]
    );
    // Without a data dir, what follows it has no default yet.
    let unknown = ConfigFile::defaults(&root_env(), None);
    assert_eq!(
        (unknown.data_dir, unknown.socket, unknown.paths_root),
        (None, None, None)
    );
}

#[test]
fn defaults_for_root() {
    let c = resolve(ConfigFile::default(), ConfigFile::default(), &root_env());
    assert_eq!(c.docker_host, DEFAULT_DOCKER_HOST);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/reaper"));
    assert_eq!(c.socket, PathBuf::from("/run/reaper/reaper.sock"));
    assert_eq!(c.paths_root, PathBuf::from("/var/lib/reaper/paths"));
    assert_eq!(
        c.metrics_listen,
        "127.0.0.1:9733".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.instance, "");
    assert_eq!(c.session_label_keys, vec!["session_id".to_string()]);
    assert_eq!(c.agent_name_prefix, "anvyl-agent-");
    assert_eq!(c.manifests, None);
    assert_eq!(c.orphan_grace_period, Duration::from_secs(300));
    assert_eq!(c.max_orphan_removals_per_pass, 50);
    assert_eq!(c.agent_running_grace, Duration::from_secs(10));
    assert_eq!(c.resync_interval, Duration::from_secs(30));
    assert_eq!(c.history_retention, Duration::from_secs(86_400));
    assert_eq!(c.concurrency, 8);
    assert_eq!(c.docker_timeout, Duration::from_secs(30));
    assert!(!c.dry_run);
    assert_eq!(c.serial_exits, SerialExitsSetting::Auto);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.api_token, None);
}

#[test]
fn defaults_for_a_user_follow_xdg() {
    let c = resolve(ConfigFile::default(), ConfigFile::default(), &user_env());
    assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/state/reaper"));
    assert_eq!(c.socket, PathBuf::from("/run/user/1000/reaper/reaper.sock"));
    assert_eq!(
        c.paths_root,
        PathBuf::from("/home/u/.local/state/reaper/paths")
    );

    let env = Env {
        xdg_state_home: Some("/state".into()),
        xdg_runtime_dir: None,
        ..user_env()
    };
    let c = resolve(ConfigFile::default(), ConfigFile::default(), &env);
    assert_eq!(c.data_dir, PathBuf::from("/state/reaper"));
    assert_eq!(c.socket, PathBuf::from("/state/reaper/reaper.sock"));

    // The socket follows a data dir given on the command line when there is no runtime dir.
    let flags = ConfigFile {
        data_dir: Some("/d".into()),
        ..Default::default()
    };
    let c = resolve(
        ConfigFile::default(),
        flags,
        &Env {
            xdg_runtime_dir: None,
            ..user_env()
        },
    );
    assert_eq!(
        (c.socket, c.paths_root),
        (PathBuf::from("/d/reaper.sock"), PathBuf::from("/d/paths"))
    );

    let env = Env {
        docker_host: Some("tcp://proxy:2375".into()),
        ..user_env()
    };
    assert_eq!(
        resolve(ConfigFile::default(), ConfigFile::default(), &env).docker_host,
        "tcp://proxy:2375"
    );
}

#[test]
fn no_home_means_a_clear_error_not_a_panic() {
    let env = Env {
        root: false,
        uid: 1000,
        ..Env::default()
    };
    let err = resolve_in(ConfigFile::default(), ConfigFile::default(), &env).unwrap_err();
    assert_eq!(err.problems()[0].field.as_deref(), Some("dataDir"));
    assert!(err.to_string().contains("HOME"), "{err}");
    let flags = ConfigFile {
        data_dir: Some("/d".into()),
        ..Default::default()
    };
    assert_eq!(
        resolve(ConfigFile::default(), flags, &env).socket,
        PathBuf::from("/d/reaper.sock")
    );
    // The real environment, whatever it is, must not panic.
    let _ = default_socket_path();
    let _ = Config::resolve(
        None,
        ConfigFile {
            data_dir: Some("/d".into()),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let file = parse(&format!(
        "{HEAD}docker: {{host: \"tcp://file:2375\"}}\nconcurrency: 4\ndryRun: true\nadoption:\n  sessionLabelKeys: [run_id]\n  agentNamePrefix: file-\nlogFormat: json\n"
    ))
    .unwrap();
    let flags = ConfigFile {
        concurrency: Some(2),
        adoption: Some(AdoptionFile {
            agent_name_prefix: Some("flag-".into()),
            ..Default::default()
        }),
        docker: Some(DockerFile { host: None }),
        ..Default::default()
    };
    let c = resolve(file, flags, &root_env());
    assert_eq!(c.concurrency, 2);
    assert!(c.dry_run);
    assert_eq!(c.docker_host, "tcp://file:2375");
    assert_eq!(c.session_label_keys, vec!["run_id".to_string()]);
    assert_eq!(c.agent_name_prefix, "flag-");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.resync_interval, DEFAULT_RESYNC_INTERVAL);
}

#[test]
fn api_version_and_kind_are_required() {
    let e = one_problem("kind: Config\n");
    assert!(e.message.contains("missing `apiVersion: reaper/v1`"), "{e}");
    let e = one_problem("apiVersion: reaper/v0\nkind: Config\n");
    assert_eq!((e.line, e.field.as_deref()), (Some(1), Some("apiVersion")));
    let e = one_problem("apiVersion: reaper/v1\nconcurrency: 1\n");
    assert!(e.message.contains("kind: Config"), "{e}");
    let e = one_problem("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: x}\n");
    assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("kind")));
    assert!(e.message.contains("reaper apply"), "{e}");
    assert!(one_problem("").message.contains("empty"));
    assert!(one_problem("# nothing\n---\n").message.contains("empty"));
    assert!(one_problem("- a\n").message.contains("mapping"));
    let e = one_problem(&format!("{HEAD}---\n{HEAD}"));
    assert_eq!(e.line, Some(3));
}

#[test]
fn unknown_keys_name_line_and_field() {
    let e = one_problem(&format!("{HEAD}concurency: 4\n"));
    assert_eq!(
        (e.line, e.column, e.field.as_deref()),
        (Some(3), Some(1), Some("concurency"))
    );
    assert!(
        e.to_string()
            .starts_with("c.yaml: line 3 column 1: concurency: unknown field `concurency`"),
        "{e}"
    );
    let e = one_problem(&format!(
        "{HEAD}adoption:\n  sessionLabelKeys: []\n  agentPrefix: x\n"
    ));
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(5), Some("adoption.agentPrefix"))
    );
    let e = one_problem(&format!("{HEAD}docker: {{host: x, tls: true}}\n"));
    assert_eq!(e.field.as_deref(), Some("docker.tls"));
}

#[test]
fn wrong_types_and_bad_values_name_line_and_field() {
    for (text, line, field) in [
        ("concurrency: many\n", 3, "concurrency"),
        ("concurrency: -1\n", 3, "concurrency"),
        (
            "maxOrphanRemovalsPerPass: -1\n",
            3,
            "maxOrphanRemovalsPerPass",
        ),
        (
            "maxOrphanRemovalsPerPass: lots\n",
            3,
            "maxOrphanRemovalsPerPass",
        ),
        ("agentRunningGrace: soon\n", 3, "agentRunningGrace"),
        ("dryRun: perhaps\n", 3, "dryRun"),
        ("metricsListen: localhost\n", 3, "metricsListen"),
        ("logFormat: xml\n", 3, "logFormat"),
        ("\nresyncInterval: 30 seconds\n", 4, "resyncInterval"),
        (
            "adoption:\n  sessionLabelKeys: session_id\n",
            4,
            "adoption.sessionLabelKeys",
        ),
    ] {
        let e = one_problem(&format!("{HEAD}{text}"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(line), Some(field)),
            "{text}: {e}"
        );
    }
}

#[test]
fn semantic_checks_name_line_and_field() {
    for (text, line, field, why) in [
        ("concurrency: 0\n", 3, "concurrency", "1 to 64"),
        ("concurrency: 65\n", 3, "concurrency", "1 to 64"),
        ("resyncInterval: 0s\n", 3, "resyncInterval", "more than 0s"),
        ("dockerTimeout: 0ms\n", 3, "dockerTimeout", "more than 0s"),
        ("instance: \"a\\nb\"\n", 3, "instance", "control characters"),
        (
            "adoption:\n  sessionLabelKeys: [ok, \"a=b\"]\n",
            4,
            "adoption.sessionLabelKeys",
            "'='",
        ),
        (
            "adoption:\n  agentNamePrefix: \"\"\n",
            4,
            "adoption.agentNamePrefix",
            "empty",
        ),
        (
            "adoption:\n  agentNamePrefix: a/b\n",
            4,
            "adoption.agentNamePrefix",
            "'/'",
        ),
        ("docker:\n  host: \"\"\n", 4, "docker.host", "non-empty"),
        ("dataDir: \"\"\n", 3, "dataDir", "empty"),
        ("apiToken: \"a b\"\n", 3, "apiToken", "whitespace"),
        (
            "diskPressure:\n  highWatermark: 70%\n",
            4,
            "diskPressure.highWatermark",
            "lowWatermark (80%) is above highWatermark (70%)",
        ),
        (
            "diskPressure:\n  highWatermark: 101%\n",
            4,
            "diskPressure.highWatermark",
            "0% to 100%",
        ),
        (
            "diskPressure:\n  keep: [\"\"]\n",
            4,
            "diskPressure.keep",
            "non-empty",
        ),
    ] {
        let e = one_problem(&format!("{HEAD}{text}"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(line), Some(field)),
            "{text}: {e}"
        );
        assert!(e.message.contains(why), "{text}: {e}");
    }
    let err = parse(&format!("{HEAD}concurrency: 0\ndockerTimeout: 0s\n")).unwrap_err();
    assert_eq!(err.problems().len(), 2, "all problems are reported: {err}");
}

#[test]
fn bad_flags_are_reported_as_command_line() {
    let file = parse(&format!("{HEAD}concurrency: 4\n")).unwrap();
    let flags = ConfigFile {
        concurrency: Some(0),
        ..Default::default()
    };
    let err = resolve_in(file.clone(), flags, &root_env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command line: concurrency: 0 is out of range: must be 1 to 64"
    );
    // A bad value in a file built by hand is attributed to that file.
    let bad_file = ConfigFile {
        resync_interval: Some(Duration::default()),
        ..file
    };
    let err = resolve_in(bad_file, ConfigFile::default(), &root_env()).unwrap_err();
    assert!(
        err.to_string().starts_with("c.yaml: resyncInterval:"),
        "{err}"
    );
}

#[test]
fn duplicate_keys_and_hostile_input_are_rejected() {
    let e = one_problem(&format!("{HEAD}concurrency: 4\nconcurrency: 5\n"));
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("duplicate key"), "{e}");
    let e = one_problem(&format!(
        "{HEAD}adoption: {{sessionLabelKeys: [a], sessionLabelKeys: [b]}}\n"
    ));
    assert!(e.message.contains("duplicate key"), "{e}");
    let e = one_problem(&format!(
        "{HEAD}instance: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    ));
    assert!(e.message.contains("nested"), "{e}");
    let e = one_problem(&format!("{HEAD}instance: a\u{0}\n"));
    assert_eq!((e.line, e.column), (Some(3), Some(12)));
    assert!(one_problem(&"#".repeat(MAX_DOCUMENT_BYTES + 1))
        .message
        .contains("1 MiB"));
}

#[test]
fn load_reads_files_and_reports_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, format!("{HEAD}dryRun: true\n")).unwrap();
    let file = ConfigFile::load(&good).unwrap();
    assert_eq!(file.dry_run, Some(true));
    assert_eq!(
        file.source.as_deref(),
        Some(good.display().to_string().as_str())
    );

    let missing = dir.path().join("missing.yaml");
    assert!(matches!(
        ConfigFile::load(&missing),
        Err(ConfigError::Read { .. })
    ));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, b"apiVersion: reaper/v1\nkind: Con\xfffig\n").unwrap();
    let err = ConfigFile::load(&bad).unwrap_err();
    assert!(
        err.to_string().contains("line 2 column 10: invalid UTF-8"),
        "{err}"
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(MAX_DOCUMENT_BYTES + 10)).unwrap();
    assert!(ConfigFile::load(&big)
        .unwrap_err()
        .to_string()
        .contains("larger than 1 MiB"));

    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, format!("{HEAD}bogus: 1\n")).unwrap();
    let err = ConfigFile::load(&unknown).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: line 3 column 1: bogus:", unknown.display())),
        "{err}"
    );
}

#[test]
fn log_format_parses_for_clap_and_serde() {
    assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
    assert!("xml"
        .parse::<LogFormat>()
        .unwrap_err()
        .contains("text or json"));
    assert_eq!(LogFormat::Json.to_string(), "json");
    assert_eq!(serde_json::to_string(&LogFormat::Text).unwrap(), "\"text\"");
}

#[test]
fn the_api_token_never_leaks() {
    let file = parse(&format!("{HEAD}apiToken: s3cr3t-token\n")).unwrap();
    let c = resolve(file, ConfigFile::default(), &root_env());
    assert_eq!(
        c.api_token.as_ref().map(Secret::expose),
        Some("s3cr3t-token")
    );
    let json = serde_json::to_string(&c).unwrap();
    assert!(
        !json.contains("s3cr3t") && json.contains("\"dataDir\""),
        "{json}"
    );
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn store_keys_are_checked_where_they_are_written() {
    for (text, field, why) in [
        (
            "store:\n  etcd:\n    caFile: /ca.pem\n    certFile: /c.pem\n",
            "store.etcd.keyFile",
            "used together",
        ),
        (
            "store:\n  backend: etcd\n",
            "store.etcd.endpoints",
            "list the etcd members",
        ),
        (
            "store:\n  etcd:\n    endpoints: [https://etcd-1:2379]\n",
            "store.etcd.endpoints",
            "https:// needs caFile, certFile and keyFile",
        ),
        (
            "store:\n  etcd:\n    endpoints: [\"http://\"]\n",
            "store.etcd.endpoints",
            "invalid etcd endpoint",
        ),
        (
            "store:\n  etcd:\n    prefix: /\n",
            "store.etcd.prefix",
            "not / alone",
        ),
        (
            "store:\n  etcd:\n    prefix: reaper\n",
            "store.etcd.prefix",
            "such as /reaper",
        ),
        ("hostName: \"gpu/07\"\n", "hostName", "invalid host name"),
        (
            "store:\n  backend: mongo\n",
            "store.backend",
            "`sled` or `etcd`",
        ),
    ] {
        let e = one_problem(&format!("{HEAD}{text}"));
        assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
        assert!(e.message.contains(why), "{text}: {e}");
    }
}

#[test]
fn an_etcd_store_resolves_with_its_tls_files_and_host_name() {
    let file = parse(&format!(
        "{HEAD}store:\n  backend: etcd\n  etcd:\n    endpoints: [https://e1:2379, https://e2:2379]\n    \
         caFile: /ca.pem\n    certFile: /c.pem\n    keyFile: /k.pem\n"
    ))
    .unwrap();
    let c = resolve(file, ConfigFile::default(), &user_env());
    assert_eq!(c.store.backend, StoreBackend::Etcd);
    assert_eq!(
        c.store.etcd.endpoints,
        ["https://e1:2379", "https://e2:2379"]
    );
    assert_eq!(c.store.etcd.prefix, "/reaper");
    assert_eq!(c.store.etcd.key_file.as_deref(), Some(Path::new("/k.pem")));
    assert_eq!(c.host_name, "gpu-07", "the machine's hostname by default");
    let defaults = resolve(ConfigFile::default(), ConfigFile::default(), &user_env());
    assert_eq!(defaults.store.backend, StoreBackend::Sled);

    // A fleet needs a host name: no fallback when the machine's cannot be read.
    let nameless = Env {
        host_name: None,
        ..user_env()
    };
    let flags = ConfigFile {
        store: Some(StoreFile {
            backend: Some(StoreBackend::Etcd),
            etcd: Some(EtcdFile {
                endpoints: Some(vec!["http://e1:2379".into()]),
                ..EtcdFile::default()
            }),
        }),
        ..ConfigFile::default()
    };
    let err = resolve_in(ConfigFile::default(), flags, &nameless).unwrap_err();
    assert!(err.to_string().contains("hostName"), "{err}");
}
