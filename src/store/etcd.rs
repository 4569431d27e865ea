//! Over 500 lines: one backend (transactions, the watch-fed cache and its recovery) with the
//! settings it is opened with.
//!
//! The etcd backend: records shared by every reaper of a fleet, under one key prefix.
//!
//! What it adds to the guarantees of every backend (see the parent module):
//! - Layout: `<prefix>/records/session/<name>` and `<prefix>/records/agent/<name>` hold the
//!   record's JSON; `<prefix>/sightings/<host>/<sighting key>` holds the millisecond a host
//!   first saw one of its own engine's objects (each host keeps and forgets only its own);
//!   `<prefix>/hosts/<host>` is the host's presence, on a lease it renews (`host_lease.rs`);
//!   `<prefix>/hostinfo/<host>` is its last-known entry (`hosts.rs`), on no lease, so that a
//!   host whose lease lapsed is still listed (gone) until `reaper delete host` forgets it.
//! - A record's revision is its etcd `mod_revision`: unique in the cluster's history, so a
//!   record deleted and created again never looks unchanged.
//! - Every commit is one etcd transaction that compares each key's `mod_revision` (or its
//!   absence) with the revision the step names, so no update is lost between hosts.
//! - Reads (`get`, `list`, `sightings`, `health`) answer from a local cache, as kube's
//!   reflector does, and never wait: they may be called on the async runtime's workers. The
//!   cache is filled by a linearizable listing of the prefix and then follows an etcd watch
//!   from the listing's revision; a compaction or a broken watch brings a fresh listing.
//! - A stale cache never makes a record look absent where it matters: the controller calls
//!   [`RecordStore::sync`] before every pass, which is a linearizable listing (etcd's default
//!   read), so every pass that decides deletions sees every write committed before it began.
//!   While the cache is in doubt (not listed yet, or a listing failed: no quorum, unreachable) every
//!   read returns `Io`, and the controller deletes nothing (safe mode).
//! - A commit returns once the cache holds it (the watch delivered its revision, or else a
//!   fresh listing), so a writer reads its own writes.
//! - All etcd I/O runs on the store's own thread and runtime: the store works from any
//!   runtime (or none), and dropping it stops that thread.
//! - Limits: one transaction may hold etcd's `--max-txn-ops` steps (128 by default) and
//!   `--max-request-bytes`; a batch above them is refused by etcd (see docs/fleet.md).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::host_lease::LEASE_TTL;
use super::hosts::{Forget, HostInfo, KnownHost, ThisHost};
use super::{codec, reject_duplicates, RecordStore, StoreError, StoreFuture, Versioned, Write};
use crate::core::model::{OwnerKind, OwnerRef, Record, Timestamp};

/// Each etcd request gets this long, and is tried this many times: an etcd without quorum
/// fails all of them (a pass fails within ATTEMPTS × REQUEST_TIMEOUT), while a leader election
/// after a member went down is over before the last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A commit waits this long for the watch to bring its own revision before it lists instead.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Retries of the listing after a broken watch back off between these.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Sighting writes per transaction, well under etcd's default `--max-txn-ops` (128).
const SIGHTINGS_PER_TXN: usize = 64;

/// Where the fleet's records are, and how to reach them.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Every key lives under it (no trailing slash).
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// This host's name: its sightings live under it.
    pub host: String,
}

/// mTLS: the CA that signed the members' certificates, and this client's certificate and key.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The etcd-backed store. Every method takes `&self`.
pub struct EtcdStore {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.shared.keys.root)
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: Client,
    keys: Keys,
    cache: RwLock<Cache>,
    changes: watch::Sender<u64>,
    /// The etcd revision the cache holds, for commits waiting to read their own writes.
    applied: watch::Sender<i64>,
    /// One commit of this process at a time, so that writers racing here fail on the cache
    /// (the winner's write is in it) instead of each sending etcd a transaction bound to fail.
    /// etcd's compare stays the guarantee; this only saves the round trips.
    gate: tokio::sync::Mutex<()>,
}

/// The keys of one prefix.
struct Keys {
    /// `<prefix>/`: what the watch and the listing cover.
    root: String,
    records: String,
    sightings: String,
    hosts: String,
    host_info: String,
}

impl Keys {
    fn new(prefix: &str, host: &str) -> Keys {
        let root = format!("{}/", prefix.trim_end_matches('/'));
        Keys {
            records: format!("{root}records/"),
            sightings: format!("{root}sightings/{host}/"),
            hosts: format!("{root}hosts/"),
            host_info: format!("{root}hostinfo/"),
            root,
        }
    }

    /// This host's presence (see `host_lease.rs`).
    fn host(&self, host: &str) -> String {
        format!("{}{host}", self.hosts)
    }

    /// A host's last-known entry (see `hosts.rs`).
    fn host_info(&self, host: &str) -> String {
        format!("{}{host}", self.host_info)
    }

    fn record(&self, owner: &OwnerRef) -> String {
        format!("{}{}/{}", self.records, owner.kind.as_str(), owner.name)
    }

    fn kind_prefix(&self, kind: OwnerKind) -> String {
        format!("{}{}/", self.records, kind.as_str())
    }

    fn sighting(&self, key: &str) -> String {
        format!("{}{key}", self.sightings)
    }
}

/// What the store last read from etcd.
#[derive(Default)]
struct Cache {
    /// By key; a record that does not decode is kept as its error, so reads fail closed.
    records: BTreeMap<String, Result<Versioned<Record>, StoreError>>,
    /// This host's, by sighting key.
    sightings: BTreeMap<String, Result<Timestamp, StoreError>>,
    /// The hosts whose presence key exists (its lease is live), by name.
    hosts: BTreeSet<String>,
    /// Every host's last-known entry, live or not, by name; one that does not decode is kept as
    /// its error.
    host_info: BTreeMap<String, Result<HostInfo, StoreError>>,
    /// The etcd revision everything above is at.
    revision: i64,
    /// Why the cache cannot be trusted now (`None`: it can).
    doubt: Option<String>,
    /// The change-stream value each recent etcd revision moved the stream to.
    generations: BTreeMap<i64, u64>,
}

/// Revisions remembered for commits to find their change-stream value.
const GENERATIONS_KEPT: usize = 4096;

fn io(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("etcd {what}: {e}"))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Bounds an etcd request: an unreachable cluster must not hang a pass.
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| io(what, e)),
        Err(_) => Err(io(what, format!("no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// A bounded request, tried again after a failure: a member that just went down, or a cluster
/// electing a new leader, drops requests for a moment although the cluster still has its
/// quorum. Safe to repeat: every write reaper sends is guarded by revisions (a repeat of one
/// that went through is refused as stale, and the caller reads again) or writes the same
/// values again.
async fn retried<T, Fut>(what: &str, mut call: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 1;
    loop {
        match bounded(what, call()).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(RETRY_MIN).await;
            }
        }
    }
}

impl Shared {
    async fn txn(&self, what: &str, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        retried(what, || {
            let mut client = self.client.clone();
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }
}

impl EtcdStore {
    /// Connects, reads the prefix and waits until the cache lists this host as live; fails if
    /// etcd cannot be read or the host's presence is not written within a lease's ttl. Opened
    /// means settled: this host's own arrival does not move the change stream afterwards.
    pub fn open(settings: &EtcdSettings) -> Result<EtcdStore, StoreError> {
        let store = EtcdStore::start(settings)?;
        store.block_on(store.shared.clone().refresh())?;
        store.block_on(store.shared.clone().until_live(settings.host.clone()))?;
        Ok(store)
    }

    /// Starts the store without waiting for etcd: until the first listing succeeds every read
    /// fails (the daemon is in safe mode) and the store keeps trying. Only bad settings (an
    /// unreadable TLS file, no endpoint) are errors.
    pub fn start(settings: &EtcdSettings) -> Result<EtcdStore, StoreError> {
        let (_, never_safe) = watch::channel(false);
        EtcdStore::start_as(settings, ThisHost::new(&settings.host, never_safe))
    }

    /// `start`, for the daemon: the presence keeper writes `this` host's entry, safe mode
    /// included, at every renewal.
    pub fn start_as(settings: &EtcdSettings, this: ThisHost) -> Result<EtcdStore, StoreError> {
        let options = connect_options(settings)?;
        if settings.endpoints.is_empty() {
            return Err(StoreError::Invalid("store.etcd.endpoints is empty".into()));
        }
        let endpoints = settings.endpoints.clone();
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("reaper-etcd".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(io("runtime", e)));
                        return;
                    }
                };
                let client = runtime.block_on(Client::connect(endpoints, Some(options)));
                let _ = tx.send(
                    client
                        .map(|c| (c, runtime.handle().clone()))
                        .map_err(|e| io("connect", e)),
                );
                runtime.block_on(thread_stop.cancelled());
            })
            .map_err(|e| io("thread", e))?;
        let (client, runtime) = rx.recv().map_err(|e| io("thread", e)).and_then(|r| r)?;
        let (changes, _) = watch::channel(0);
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            client,
            keys: Keys::new(&settings.prefix, &settings.host),
            cache: RwLock::new(Cache {
                doubt: Some("etcd has not been read yet".into()),
                ..Cache::default()
            }),
            changes,
            applied,
            gate: tokio::sync::Mutex::new(()),
        });
        runtime.spawn(shared.clone().follow(stop.clone()));
        runtime.spawn(super::host_lease::keep(
            shared.client.clone(),
            super::host_lease::HostKeys {
                presence: shared.keys.host(&settings.host),
                info: shared.keys.host_info(&settings.host),
            },
            this,
            stop.clone(),
        ));
        Ok(EtcdStore {
            shared,
            runtime,
            stop,
        })
    }

    /// Runs an etcd operation on the store's own runtime and waits for it from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.runtime.spawn(work).await.map_err(|e| io("task", e))?
    }

    /// Waits for an etcd operation from a thread outside any runtime's workers (opening).
    fn block_on<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|e| io("task", e))?
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn connect_options(settings: &EtcdSettings) -> Result<ConnectOptions, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        // A member that lost its leader refuses requests (and ends watches) instead of
        // answering from what it last knew.
        .with_require_leader(true);
    if let Some(tls) = &settings.tls {
        let file = |what: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                StoreError::Invalid(format!(
                    "store.etcd.{what} {} cannot be read: {e}",
                    path.display()
                ))
            })
        };
        let ca = file("caFile", &tls.ca_file)?;
        let cert = file("certFile", &tls.cert_file)?;
        let key = file("keyFile", &tls.key_file)?;
        options = options.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
        );
    }
    Ok(options)
}

impl Shared {
    /// A linearizable listing of the prefix, installed in the cache unless the cache is
    /// already newer. Returns the revision the cache is at. A failure puts the cache in doubt.
    async fn refresh(self: Arc<Self>) -> Result<i64, StoreError> {
        let listed = retried("listing", || {
            let mut client = self.client.clone();
            let root = self.keys.root.clone();
            async move {
                client
                    .get(root, Some(GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
        match listed {
            Ok(resp) => {
                let revision = resp.header().map_or(0, |h| h.revision());
                Ok(self.install(revision, resp.kvs()))
            }
            Err(e) => {
                self.in_doubt(&e.to_string());
                Err(e)
            }
        }
    }

    fn in_doubt(&self, why: &str) {
        write(&self.cache).doubt = Some(why.to_string());
    }

    /// Replaces the cache with a listing made at `revision`.
    fn install(&self, revision: i64, kvs: &[KeyValue]) -> i64 {
        let mut cache = write(&self.cache);
        if revision < cache.revision {
            cache.doubt = None;
            return cache.revision;
        }
        let mut records = BTreeMap::new();
        let mut sightings = BTreeMap::new();
        let mut hosts = BTreeSet::new();
        let mut host_info = BTreeMap::new();
        for kv in kvs {
            let Ok(key) = kv.key_str() else { continue };
            if key.starts_with(&self.keys.records) {
                records.insert(key.to_string(), self.decode_record(key, kv));
            } else if let Some(k) = key.strip_prefix(&self.keys.sightings) {
                sightings.insert(k.to_string(), decode_sighting(key, kv.value()));
            } else if let Some(h) = key.strip_prefix(&self.keys.hosts) {
                hosts.insert(h.to_string());
            } else if let Some(h) = key.strip_prefix(&self.keys.host_info) {
                host_info.insert(h.to_string(), decode_host_info(h, key, kv.value()));
            }
        }
        let changed = cache.doubt.is_some() || records != cache.records || hosts != cache.hosts;
        cache.records = records;
        cache.sightings = sightings;
        cache.hosts = hosts;
        cache.host_info = host_info;
        cache.revision = revision;
        cache.doubt = None;
        if changed {
            self.changes.send_modify(|g| *g += 1);
        }
        drop(cache);
        self.applied.send_replace(revision);
        revision
    }

    fn decode_record(&self, key: &str, kv: &KeyValue) -> Result<Versioned<Record>, StoreError> {
        let rest = &key[self.keys.records.len()..];
        let (kind, name) = match rest.split_once('/') {
            Some(("session", name)) => (OwnerKind::Session, name),
            Some(("agent", name)) => (OwnerKind::Agent, name),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected key {key} among the records"
                )))
            }
        };
        let record = codec::from_json(kind, name, key, kv.value())?;
        Ok(Versioned {
            record,
            revision: kv.mod_revision() as u64,
        })
    }

    /// Applies one watch response: its events, grouped by the revision that made them.
    fn apply(&self, events: &[etcd_client::Event]) {
        let mut cache = write(&self.cache);
        let mut last = cache.revision;
        let mut moved_at: Option<i64> = None;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= cache.revision {
                continue; // a listing already holds it
            }
            if moved_at.is_some_and(|r| r != revision) {
                self.moved(&mut cache, moved_at.take().unwrap_or_default());
            }
            last = last.max(revision);
            let Ok(key) = kv.key_str() else { continue };
            let put = matches!(event.event_type(), EventType::Put);
            if key.starts_with(&self.keys.records) {
                if put {
                    cache
                        .records
                        .insert(key.to_string(), self.decode_record(key, kv));
                } else {
                    cache.records.remove(key);
                }
                moved_at = Some(revision);
            } else if let Some(k) = key.strip_prefix(&self.keys.sightings) {
                if put {
                    cache
                        .sightings
                        .insert(k.to_string(), decode_sighting(key, kv.value()));
                } else {
                    cache.sightings.remove(k);
                }
            } else if let Some(h) = key.strip_prefix(&self.keys.hosts) {
                // A host that came or went (its lease lapsed) may decide a session's `Cleaned`.
                let changed = if put {
                    cache.hosts.insert(h.to_string())
                } else {
                    cache.hosts.remove(h)
                };
                if changed {
                    moved_at = Some(revision);
                }
            } else if let Some(h) = key.strip_prefix(&self.keys.host_info) {
                // Rewritten at every renewal: what it shows decides nothing, so it moves nothing.
                if put {
                    cache
                        .host_info
                        .insert(h.to_string(), decode_host_info(h, key, kv.value()));
                } else {
                    cache.host_info.remove(h);
                }
            }
        }
        if let Some(revision) = moved_at {
            self.moved(&mut cache, revision);
        }
        cache.revision = last;
        drop(cache);
        self.applied.send_replace(last);
    }

    /// Moves the change stream for the records changed at `revision`.
    fn moved(&self, cache: &mut Cache, revision: i64) {
        let mut generation = 0;
        self.changes.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        cache.generations.insert(revision, generation);
        while cache.generations.len() > GENERATIONS_KEPT {
            cache.generations.pop_first();
        }
    }

    /// Waits until the cache lists `host` as live (its presence key arrived).
    async fn until_live(self: Arc<Self>, host: String) -> Result<(), StoreError> {
        let mut changes = self.changes.subscribe();
        let listed = changes.wait_for(|_| read(&self.cache).hosts.contains(&host));
        let live = tokio::time::timeout(LEASE_TTL, listed)
            .await
            .is_ok_and(|r| r.is_ok());
        if live {
            return Ok(());
        }
        Err(io(
            "presence",
            format!("host {host} was not listed live within {LEASE_TTL:?}"),
        ))
    }

    /// Waits until the cache holds `revision` (a write just made), listing if the watch lags.
    async fn caught_up(self: Arc<Self>, revision: i64) -> Result<(), StoreError> {
        let mut applied = self.applied.subscribe();
        let caught = tokio::time::timeout(CATCH_UP, applied.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok());
        if !caught {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Lists, then follows the watch from the listing; again after every break. A watch that
    /// ends (a member stopped, a compaction) is followed by a fresh listing at once, without
    /// doubting the cache: it may lag, as a slow watch does, but passes read through `sync`
    /// and writes compare revisions. Only a listing that fails puts the cache in doubt (every
    /// read fails), and then the retries back off.
    async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let mut pause = RETRY_MIN;
        loop {
            let round = async {
                let revision = self.clone().refresh().await?;
                self.clone().watch_from(revision + 1).await
            };
            let ended = tokio::select! {
                () = stop.cancelled() => return,
                ended = round => ended,
            };
            match ended {
                Ok(why) => {
                    tracing::info!(reason = %why, "The etcd watch ended; listing again.");
                    pause = RETRY_MIN;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "etcd cannot be read; reaper deletes nothing until it can.");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Follows the watch until it breaks; returns why it did.
    async fn watch_from(self: Arc<Self>, start: i64) -> Result<String, StoreError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream =
            bounded("watch", client.watch(self.keys.root.clone(), Some(options))).await?;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok("the etcd watch stream ended".into()),
                Err(e) => return Ok(format!("the etcd watch failed: {e}")),
            };
            if message.compact_revision() > 0 {
                return Ok(format!(
                    "etcd compacted past the watch (to revision {})",
                    message.compact_revision()
                ));
            }
            if message.canceled() {
                return Ok(format!(
                    "etcd cancelled the watch: {}",
                    message.cancel_reason()
                ));
            }
            self.apply(message.events());
        }
    }

    async fn commit(self: Arc<Self>, batch: Vec<Write>) -> Result<Option<u64>, StoreError> {
        let _gate = self.gate.lock().await;
        if let Some(stale) = self.stale_in_cache(&batch) {
            return Err(stale);
        }
        let mut compares = Vec::with_capacity(batch.len());
        let mut ops = Vec::new();
        let mut reads = Vec::with_capacity(batch.len());
        for step in &batch {
            let key = self.keys.record(&step.owner());
            compares.push(match step.expect() {
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
                Some(r) => Compare::mod_revision(key.clone(), CompareOp::Equal, r as i64),
            });
            match step {
                Write::Put { record, .. } => {
                    ops.push(TxnOp::put(key.clone(), codec::to_json(record)?, None))
                }
                Write::Delete { .. } => ops.push(TxnOp::delete(key.clone(), None)),
                Write::Check { .. } => {}
            }
            reads.push(TxnOp::get(key, None));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let resp = self.txn("transaction", txn).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            // The caller reads again and retries: let that read hold what beat this write.
            self.clone().caught_up(revision).await?;
            return Err(stale_step(&batch, &resp.op_responses()));
        }
        if !batch.iter().any(Write::changes) {
            return Ok(None);
        }
        self.clone().caught_up(revision).await?;
        // Not found when a listing, not the watch, brought the write: then the change is not
        // told apart from others', which only costs the controller one more pass.
        Ok(read(&self.cache).generations.get(&revision).copied())
    }

    /// A step whose record the cache already holds at another revision: certainly stale.
    fn stale_in_cache(&self, batch: &[Write]) -> Option<StoreError> {
        let cache = read(&self.cache);
        if cache.doubt.is_some() {
            return None;
        }
        batch.iter().find_map(|step| {
            let owner = step.owner();
            let held = match cache.records.get(&self.keys.record(&owner)) {
                Some(Ok(v)) => Some(v.revision),
                Some(Err(_)) => return None,
                None => None,
            };
            (held != step.expect()).then(|| StoreError::stale(&owner))
        })
    }

    async fn import(self: Arc<Self>, records: Vec<Record>) -> Result<usize, StoreError> {
        let n = records.len();
        if n == 0 {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(n);
        for record in &records {
            ops.push(TxnOp::put(
                self.keys.record(&record.owner()),
                codec::to_json(record)?,
                None,
            ));
        }
        let resp = self.txn("import", Txn::new().and_then(ops)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.caught_up(revision).await?;
        Ok(n)
    }

    /// Deletes a host's entry only while its presence key is absent (its lease lapsed), in one
    /// transaction, so a host renewing meanwhile is never forgotten.
    async fn forget_host(self: Arc<Self>, host: String) -> Result<Forget, StoreError> {
        let presence = self.keys.host(&host);
        let info = self.keys.host_info(&host);
        let txn = Txn::new()
            .when([
                Compare::version(presence.clone(), CompareOp::Equal, 0),
                Compare::version(info.clone(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::delete(info, None)])
            .or_else([TxnOp::get(presence, None)]);
        let resp = self.txn("forgetting a host", txn).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            self.caught_up(revision).await?;
            return Ok(Forget::Forgotten);
        }
        let live = resp.op_responses().iter().any(|r| match r {
            TxnOpResponse::Get(got) => !got.kvs().is_empty(),
            _ => false,
        });
        Ok(if live { Forget::Ready } else { Forget::Unknown })
    }

    async fn note_sightings(
        self: Arc<Self>,
        seen: BTreeMap<String, Timestamp>,
        forget: Vec<String>,
    ) -> Result<(), StoreError> {
        // A key already there keeps its time: each put is a nested transaction on absence.
        let puts = seen.into_iter().map(|(k, t)| {
            let key = self.keys.sighting(&k);
            TxnOp::txn(
                Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, t.0.to_string(), None)]),
            )
        });
        let deletes = forget
            .iter()
            .map(|k| TxnOp::delete(self.keys.sighting(k), None));
        let ops: Vec<TxnOp> = puts.chain(deletes).collect();
        let mut revision = None;
        for chunk in ops.chunks(SIGHTINGS_PER_TXN) {
            let resp = self
                .txn("sightings", Txn::new().and_then(chunk.to_vec()))
                .await?;
            revision = resp.header().map(|h| h.revision());
        }
        match revision {
            Some(r) => self.caught_up(r).await,
            None => Ok(()),
        }
    }
}

/// A host's last-known entry; its name is the key's, whatever the value says.
fn decode_host_info(host: &str, key: &str, value: &[u8]) -> Result<HostInfo, StoreError> {
    serde_json::from_slice::<HostInfo>(value)
        .map(|info| HostInfo {
            host_name: host.to_string(),
            ..info
        })
        .map_err(|e| StoreError::Corrupt(format!("host entry {key} does not decode: {e}")))
}

fn decode_sighting(key: &str, value: &[u8]) -> Result<Timestamp, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .map(Timestamp)
        .ok_or_else(|| StoreError::Corrupt(format!("sighting {key} is not a time in milliseconds")))
}

/// Names the first step whose record is no longer at the revision it named.
fn stale_step(batch: &[Write], reads: &[TxnOpResponse]) -> StoreError {
    for (step, read) in batch.iter().zip(reads) {
        if let TxnOpResponse::Get(got) = read {
            let now = got.kvs().first().map(|kv| kv.mod_revision() as u64);
            if now != step.expect() {
                return StoreError::stale(&step.owner());
            }
        }
    }
    batch.first().map_or_else(
        || StoreError::Invalid("empty batch".into()),
        |s| StoreError::stale(&s.owner()),
    )
}

impl Cache {
    fn trusted(&self) -> Result<(), StoreError> {
        match &self.doubt {
            None => Ok(()),
            Some(why) => Err(StoreError::Io(why.clone())),
        }
    }
}

impl RecordStore for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, kind: OwnerKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        let cache = read(&self.shared.cache);
        cache.trusted()?;
        let key = format!("{}{name}", self.shared.keys.kind_prefix(kind));
        cache.records.get(&key).cloned().transpose()
    }

    fn list(&self, kind: OwnerKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        let cache = read(&self.shared.cache);
        cache.trusted()?;
        let prefix = self.shared.keys.kind_prefix(kind);
        cache
            .records
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn commit(&self, batch: Vec<Write>) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            reject_duplicates(batch.iter().map(Write::owner))?;
            if batch.is_empty() {
                return Ok(None);
            }
            self.run(self.shared.clone().commit(batch)).await
        })
    }

    fn import(&self, records: Vec<Record>) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            reject_duplicates(records.iter().map(Record::owner))?;
            self.run(self.shared.clone().import(records)).await
        })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // A write returns once a quorum has it: nothing waits for a flush.
        Box::pin(async { Ok(()) })
    }

    fn sync(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.run(self.shared.clone().refresh()).await.map(drop) })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    fn generation(&self) -> u64 {
        *self.shared.changes.borrow()
    }

    fn health(&self) -> Result<(), StoreError> {
        read(&self.shared.cache).trusted()
    }

    fn sightings(&self) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        let cache = read(&self.shared.cache);
        cache.trusted()?;
        cache
            .sightings
            .iter()
            .map(|(k, t)| t.clone().map(|t| (k.clone(), t)))
            .collect()
    }

    fn note_sightings(
        &self,
        seen: BTreeMap<String, Timestamp>,
        forget: Vec<String>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.run(self.shared.clone().note_sightings(seen, forget))
                .await
        })
    }

    fn live_hosts(&self) -> Result<BTreeSet<String>, StoreError> {
        let cache = read(&self.shared.cache);
        cache.trusted()?;
        Ok(cache.hosts.clone())
    }

    fn hosts(&self) -> Result<Vec<KnownHost>, StoreError> {
        let cache = read(&self.shared.cache);
        cache.trusted()?;
        let names: BTreeSet<&String> = cache.hosts.iter().chain(cache.host_info.keys()).collect();
        names
            .into_iter()
            .map(|name| {
                let info = match cache.host_info.get(name) {
                    Some(known) => known.clone()?,
                    // Live without an entry: written together, so only if someone removed it.
                    None => HostInfo {
                        host_name: name.clone(),
                        version: "unknown".into(),
                        started_at: Timestamp(0),
                        renewed_at: Timestamp(0),
                        safe_mode: false,
                    },
                };
                Ok(KnownHost {
                    info,
                    ready: cache.hosts.contains(name),
                })
            })
            .collect()
    }

    fn forget_host(&self, name: &str) -> StoreFuture<'_, Forget> {
        let name = name.to_string();
        Box::pin(async move { self.run(self.shared.clone().forget_host(name)).await })
    }
}
