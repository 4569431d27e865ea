//! A private 3-member etcd cluster on free loopback ports, its data under a temp dir, with or
//! without mTLS (certificates made here with the openssl CLI). Members can be stopped and
//! started again one by one (a member down, quorum lost).
//!
//! It always stops: `Drop` kills and reaps every member and removes the dir; and a watchdog
//! process does both should this test process die without dropping it (an abort, a `kill -9`,
//! or a cluster kept in a `static` for a whole test binary, which is never dropped).
//!
//! A missing `etcd` binary is a failure, never a skip: `./scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reaper::store::{EtcdSettings, EtcdTls};

use super::{free_port, run_with_timeout, Reaper};

const MEMBERS: usize = 3;
const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    tls: bool,
    members: Vec<Member>,
    watchdog: Child,
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

/// The client certificates a test can present.
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn etcd_binary() -> &'static str {
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!(
        "etcd is not installed (CI={}): run the tests through ./scripts/test, which installs \
         Debian's etcd-server; the etcd tests never skip",
        std::env::var("CI").unwrap_or_default()
    )
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster answers.
    pub fn start(tls: bool) -> EtcdCluster {
        etcd_binary();
        // In memory when it can be: every etcd write waits for an fsync, which on a shared
        // disk makes a contended test take many seconds.
        let shm = Path::new("/dev/shm");
        let dir = tempfile::Builder::new()
            .prefix("reaper-etcd-")
            .tempdir_in(if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            })
            .expect("temp dir for etcd");
        std::fs::create_dir_all(dir.path().join("pids")).unwrap();
        if tls {
            make_certificates(dir.path());
        }
        let scheme = if tls { "https" } else { "http" };
        let members: Vec<Member> = (0..MEMBERS)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 0.3; done; \
                 for f in \"$2\"/pids/*; do [ -f \"$f\" ] && kill -9 \"$(cat \"$f\")\" 2>/dev/null; done; \
                 sleep 0.2; rm -rf \"$2\"; exit 0",
            )
            .args([
                "etcd-watchdog",
                &std::process::id().to_string(),
                // Its data too: in /dev/shm, a cluster left behind holds ~400 MB of memory.
                &dir.path().display().to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the etcd watchdog");
        let mut cluster = EtcdCluster {
            dir,
            tls,
            members,
            watchdog,
        };
        for i in 0..MEMBERS {
            cluster.start_member(i);
        }
        cluster.wait_ready(&[0, 1, 2]);
        cluster
    }

    /// The client endpoints of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificates of a client the members trust (`None` without TLS).
    pub fn client_certs(&self) -> Option<ClientCerts> {
        self.tls.then(|| self.certs("client"))
    }

    /// A client certificate signed by a CA the members do not trust.
    pub fn rogue_certs(&self) -> ClientCerts {
        assert!(self.tls, "rogue certificates exist only with TLS");
        ClientCerts {
            ca: self.dir().join("ca.pem"),
            ..self.certs("rogue")
        }
    }

    fn certs(&self, who: &str) -> ClientCerts {
        ClientCerts {
            ca: self.dir().join("ca.pem"),
            cert: self.dir().join(format!("{who}.pem")),
            key: self.dir().join(format!("{who}-key.pem")),
        }
    }

    /// Settings for a store under `prefix`, as host `host`, with the trusted client certs.
    pub fn settings(&self, prefix: &str, host: &str) -> EtcdSettings {
        EtcdSettings {
            endpoints: self.endpoints(),
            prefix: prefix.to_string(),
            tls: self.client_certs().map(|c| EtcdTls {
                ca_file: c.ca,
                cert_file: c.cert,
                key_file: c.key,
            }),
            host: host.to_string(),
        }
    }

    /// The `serve` flags that put a reaper on this cluster under `prefix`, with the trusted
    /// client certificates when it has TLS: the command-line twin of [`EtcdCluster::settings`].
    pub fn serve_args(&self, prefix: &str) -> Vec<String> {
        let mut args: Vec<String> = ["--store-backend", "etcd", "--etcd-prefix", prefix]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for e in self.endpoints() {
            args.extend(["--etcd-endpoint".to_string(), e]);
        }
        if let Some(certs) = self.client_certs() {
            for (flag, file) in [
                ("--etcd-ca-file", &certs.ca),
                ("--etcd-cert-file", &certs.cert),
                ("--etcd-key-file", &certs.key),
            ] {
                args.extend([flag.to_string(), file.display().to_string()]);
            }
        }
        args
    }

    /// A reaper on this cluster under `prefix` and on the suite's engine, as `host`, scoped to
    /// `instance` (reapers sharing one engine), with 1 s passes; started and ready.
    pub fn start_reaper(&self, prefix: &str, host: &str, instance: &str) -> Reaper {
        let mut args = self.serve_args(prefix);
        args.extend(
            [
                "--resync-interval",
                "1s",
                "--host-name",
                host,
                "--instance",
                instance,
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Reaper::start(&args)
    }

    /// Starts member `i` (again): its data dir is kept, so it rejoins the cluster.
    pub fn start_member(&mut self, i: usize) {
        let dir = self.dir.path().to_path_buf();
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let m = &self.members[i];
        assert!(m.child.is_none(), "member {} is already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", m.name)))
            .unwrap();
        let mut cmd = Command::new(etcd_binary());
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(dir.join(format!("{}.data", m.name)))
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "reaper-test"])
            // Fast elections, so that a stopped member's loss and return take little time.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // The store's batches (the conformance suite applies 5,000 records at once).
            .args(["--max-txn-ops", "20000", "--max-request-bytes", "33554432"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"))
                .arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server-key.pem"));
        }
        let child = cmd.spawn().expect("start etcd");
        std::fs::write(dir.join("pids").join(&m.name), child.id().to_string()).unwrap();
        self.members[i].child = Some(child);
    }

    /// Kills member `i` and reaps it.
    pub fn stop_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("pids").join(&m.name));
    }

    /// Waits until each of `members` answers a linearizable read (which needs a leader).
    pub fn wait_ready(&self, members: &[usize]) {
        let deadline = Instant::now() + READY_WITHIN;
        for &i in members {
            loop {
                let out = run_with_timeout(
                    &mut self.etcdctl(&[&self.members[i].client_url], &["get", "/ready-probe"]),
                    None,
                    Duration::from_secs(10),
                );
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not ready within {READY_WITHIN:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// An etcdctl command against `endpoints`, with the trusted client certificate.
    pub fn etcdctl(&self, endpoints: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--command-timeout=2s")
            .arg("--dial-timeout=1s");
        if let Some(c) = self.client_certs() {
            cmd.arg(format!("--cacert={}", c.ca.display()))
                .arg(format!("--cert={}", c.cert.display()))
                .arg(format!("--key={}", c.key.display()));
        }
        cmd.args(args);
        cmd
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.dir().join(format!("m{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a rogue
/// client certificate from another CA, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("openssl").current_dir(dir).args(args),
            None,
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = |name: &str| {
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ])
    };
    let pkcs8 =
        |from: &str, to: &str| openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", from, "-out", to]);
    for ca in ["ca", "rogue-ca"] {
        key(&format!("{ca}-ec.pem"));
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{ca}-ec.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=reaper test {ca}"),
            "-out",
            &format!("{ca}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    for (who, ca, usage, san) in [
        (
            "server",
            "ca",
            "serverAuth,clientAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        (
            "client",
            "ca",
            "clientAuth",
            "subjectAltName=DNS:reaper-client",
        ),
        (
            "rogue",
            "rogue-ca",
            "clientAuth",
            "subjectAltName=DNS:reaper-client",
        ),
    ] {
        key(&format!("{who}-ec.pem"));
        pkcs8(&format!("{who}-ec.pem"), &format!("{who}-key.pem"));
        std::fs::write(
            dir.join(format!("{who}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage={usage}\n{san}\n"
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{who}-key.pem"),
            "-subj",
            &format!("/CN={who}"),
            "-out",
            &format!("{who}.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-ec.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}.pem"),
        ]);
    }
}

/// The store kept at `place` on this binary's shared plain cluster (the conformance suite's
/// opener: each place is a key prefix).
pub fn store_at_plain(place: &Path) -> Result<reaper::store::EtcdStore, reaper::store::StoreError> {
    store_at(place, false)
}

/// As [`store_at_plain`], on the shared mTLS cluster.
pub fn store_at_mtls(place: &Path) -> Result<reaper::store::EtcdStore, reaper::store::StoreError> {
    store_at(place, true)
}

static PLAIN: std::sync::OnceLock<EtcdCluster> = std::sync::OnceLock::new();
static MTLS: std::sync::OnceLock<EtcdCluster> = std::sync::OnceLock::new();

/// The place remembers the cluster's address (a file in it), so that a child process (the
/// suite's abort test) reaches its parent's cluster instead of starting its own.
fn store_at(
    place: &Path,
    tls: bool,
) -> Result<reaper::store::EtcdStore, reaper::store::StoreError> {
    let remembered = place.join("etcd-settings");
    let prefix = format!("/reaper-test{}", place.display());
    let settings = match std::fs::read_to_string(&remembered) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            EtcdSettings {
                endpoints: lines[0].split(',').map(String::from).collect(),
                prefix,
                tls: (lines.len() == 4).then(|| EtcdTls {
                    ca_file: lines[1].into(),
                    cert_file: lines[2].into(),
                    key_file: lines[3].into(),
                }),
                host: "test-host".into(),
            }
        }
        Err(_) => {
            let cell = if tls { &MTLS } else { &PLAIN };
            let settings = cell
                .get_or_init(|| EtcdCluster::start(tls))
                .settings(&prefix, "test-host");
            let mut text = settings.endpoints.join(",");
            if let Some(t) = &settings.tls {
                for f in [&t.ca_file, &t.cert_file, &t.key_file] {
                    text.push('\n');
                    text.push_str(&f.display().to_string());
                }
            }
            std::fs::write(&remembered, text).unwrap();
            settings
        }
    };
    reaper::store::EtcdStore::open(&settings)
}
