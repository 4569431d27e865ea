//! The HTTP API under abuse, against the real daemon on its real socket: schemathesis over
//! every endpoint of docs/openapi.yaml, oversized bodies, slow-loris clients, 200 concurrent
//! clients checked against a serial model, and the bearer token of the TCP listener.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound for one request/response exchange in these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemon's body limit (src/api/mod.rs: MAX_BODY_BYTES = 32 MiB manifests + 1 MiB).
const MAX_BODY_BYTES: usize = (32 << 20) + (1 << 20);
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over a Unix or TCP stream
// ---------------------------------------------------------------------------------------------

fn connect(socket: &Path) -> UnixStream {
    let s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

/// Sends one request with `Connection: close` and returns (status, parsed JSON body).
fn exchange<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Value) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: reaper\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request head");
    if let Some(b) = body {
        s.write_all(b).expect("write request body");
    }
    read_response(&mut s)
}

fn read_response<S: Read>(s: &mut S) -> (u16, Value) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response head in {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"))
    };
    (status, value)
}

fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("encode"));
    exchange(connect(socket), method, path, &[], bytes.as_deref())
}

fn apply_body(name: &str, yaml: &str) -> Value {
    json!({"files": [{"name": name, "content": yaml}]})
}

fn session_yaml(name: &str, ttl: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {name}}}\nspec: {{ttl: {ttl}}}\n"
    )
}

fn session_names(socket: &Path) -> Vec<String> {
    let (status, v) = call(socket, "GET", "/v1/sessions", None);
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .expect("sessions array")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().expect("name").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The daemon's memory
// ---------------------------------------------------------------------------------------------

fn status_kib(pid: u32, field: &str) -> u64 {
    proc_status_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory of a process while `f` runs, above its resident memory before: the
/// kernel's high-water mark is reset first (clear_refs 5), and a 5 ms sampler backs it up.
fn peak_growth<T>(pid: u32, f: impl FnOnce() -> T) -> (u64, T) {
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let before = status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let mut top = peak.load(Ordering::Relaxed);
    if hwm_reset {
        top = top.max(status_kib(pid, "VmHWM:"));
    }
    (top.saturating_sub(before) * 1024, out)
}

// ---------------------------------------------------------------------------------------------
// schemathesis over every endpoint
// ---------------------------------------------------------------------------------------------

#[test]
fn schemathesis_finds_no_server_error_schema_mismatch_or_crash() {
    let r = Reaper::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis");
    let started = Instant::now();
    let out = run_with_timeout(
        Command::new(&script).arg("--socket").arg(r.socket()),
        None,
        Duration::from_secs(720),
    );
    let text = format!("{}\n{}", stdout_of(&out), stderr_of(&out));
    assert!(
        out.status.success(),
        "schemathesis failed after {:?}:\n{text}",
        started.elapsed()
    );
    // Every operation but the two watch streams (GET /v1/watch/sessions|agents), which have no
    // end; get_watch_* in tests/e2e_cli_get.rs test them.
    assert!(
        text.contains("23 selected / 25 total"),
        "not every operation was tested:\n{text}"
    );
    let (status, _) = call(&r.socket(), "GET", "/v1/status", None);
    assert_eq!(status, 200, "the daemon must still answer");
    assert!(!r.log().contains("panicked"), "{}", r.log_tail());
}

// ---------------------------------------------------------------------------------------------
// Oversized bodies
// ---------------------------------------------------------------------------------------------

/// The head of an apply body whose manifest names session `name`; the rest is padding inside
/// the YAML comment, so only the size can make it fail.
fn big_apply_head(name: &str) -> String {
    format!(
        "{{\"files\":[{{\"name\":\"big.yaml\",\"content\":\"apiVersion: reaper/v1\\nkind: Session\\nmetadata: {{name: {name}}}\\n#"
    )
}

/// Streams `total` bytes of body (head, then padding) in 1 MiB writes until the server stops
/// reading; returns what was written.
fn stream_body(mut s: UnixStream, head: &[u8], total: usize, chunked: bool) -> usize {
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    let write = |s: &mut UnixStream, data: &[u8]| -> bool {
        let ok = if chunked {
            s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .and_then(|_| s.write_all(data))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(data)
        };
        ok.is_ok()
    };
    if !write(&mut s, head) {
        return 0;
    }
    sent += head.len();
    while sent < total {
        let n = chunk.len().min(total - sent);
        if !write(&mut s, &chunk[..n]) {
            return sent;
        }
        sent += n;
    }
    if chunked {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    sent
}

/// Sends a `total`-byte apply body and returns (status, time to the response, bytes written).
fn send_oversized(socket: &Path, name: &str, total: usize, chunked: bool) -> (u16, Duration) {
    let mut s = connect(socket);
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    s.write_all(
        format!("POST /v1/apply HTTP/1.1\r\nHost: reaper\r\nContent-Type: application/json\r\n{framing}\r\n\r\n")
            .as_bytes(),
    )
    .expect("write head");
    let started = Instant::now();
    let writer = {
        let s = s.try_clone().expect("clone stream");
        let head = big_apply_head(name).into_bytes();
        std::thread::spawn(move || stream_body(s, &head, total, chunked))
    };
    // The response may come before the body is written: read it as it arrives.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let status = loop {
        match s.read(&mut buf) {
            Ok(0) => break parse_response(&raw).0,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..i]).to_string();
                    break head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                }
            }
            Err(e) => panic!(
                "no response to an oversized body after {:?}: {e}",
                started.elapsed()
            ),
        }
    };
    let took = started.elapsed();
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    (status, took)
}

#[test]
fn oversized_bodies_are_refused_with_413_fast_and_apply_nothing() {
    let r = Reaper::start(&[]);
    let socket = r.socket();
    let pid = r.pid().expect("daemon pid");

    // 100 MB announced by Content-Length: refused from the header, before the body is read.
    let (grew, (status, took)) = peak_growth(pid, || {
        send_oversized(&socket, "big-cl", 100_000_000, false)
    });
    eprintln!("100 MB with Content-Length: 413 after {took:?}, daemon grew {grew} bytes");
    assert_eq!(status, 413);
    assert!(took < Duration::from_secs(2), "413 took {took:?}");
    assert!(grew < 50 * MIB, "the daemon grew by {} MiB", grew / MIB);

    // 100 MB chunked (no length up front): refused once the limit is crossed.
    let (grew, (status, took)) = peak_growth(pid, || {
        send_oversized(&socket, "big-chunked", 100_000_000, true)
    });
    eprintln!("100 MB chunked: 413 after {took:?}, daemon grew {grew} bytes");
    assert_eq!(status, 413);
    assert!(took < Duration::from_secs(10), "413 took {took:?}");
    assert!(grew < 50 * MIB, "the daemon grew by {} MiB", grew / MIB);

    // One byte over the limit.
    let (status, _) = send_oversized(&socket, "big-edge", MAX_BODY_BYTES + 1, false);
    assert_eq!(status, 413);

    // The error body is the documented shape, and the daemon still serves.
    let mut s = connect(&socket);
    s.write_all(
        format!(
            "POST /v1/apply HTTP/1.1\r\nHost: r\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        )
        .as_bytes(),
    )
    .expect("head");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 413);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{body}"
    );

    assert_eq!(
        session_names(&socket),
        Vec::<String>::new(),
        "nothing applied"
    );
    let (status, v) = call(
        &socket,
        "POST",
        "/v1/apply",
        Some(&apply_body("ok.yaml", &session_yaml("after", "1h"))),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(session_names(&socket), ["after"]);
}

// ---------------------------------------------------------------------------------------------
// Slow-loris
// ---------------------------------------------------------------------------------------------

#[test]
fn slow_loris_clients_do_not_block_others() {
    let r = Reaper::start(&[]);
    let socket = r.socket();
    let stop = Arc::new(AtomicBool::new(false));
    // One dribbles its request head, one its body: a byte per second each.
    let head = b"POST /v1/apply HTTP/1.1\r\nHost: reaper\r\nContent-Length: 64\r\n\r\n".to_vec();
    let lorises: Vec<_> = [(head.clone(), 0usize), (head.clone(), head.len())]
        .into_iter()
        .map(|(bytes, at_once)| {
            let mut s = connect(&socket);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(&bytes[..at_once]);
                for b in bytes[at_once..].iter().chain(std::iter::repeat(&b'x')) {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        let (status, v) = if i % 2 == 0 {
            call(&socket, "GET", "/v1/status", None)
        } else {
            let name = format!("prompt-{i}");
            call(
                &socket,
                "POST",
                "/v1/apply",
                Some(&apply_body("p.yaml", &session_yaml(&name, "1h"))),
            )
        };
        assert!(status == 200, "request {i}: {status} {v}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?} while slow clients dribble",
            t.elapsed()
        );
    }
    let total = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in lorises {
        l.join().expect("slow client");
    }
    assert!(
        total < Duration::from_secs(10),
        "20 requests took {total:?}"
    );
    assert_eq!(session_names(&socket).len(), 10);
}

// ---------------------------------------------------------------------------------------------
// 200 concurrent clients against a serial model
// ---------------------------------------------------------------------------------------------

/// What one client does, in order.
#[derive(Clone, Debug)]
enum Op {
    /// Apply these sessions (name, ttl) in one batch.
    Apply(Vec<(String, String)>),
    Delete(String),
}

fn client_ops(i: usize) -> Vec<Op> {
    let own = format!("own-{i}");
    let shared = format!("shared-{}", i % 10);
    let mut ops = vec![
        Op::Apply(vec![(own.clone(), "1h".into())]),
        // Every client applies the same shared record: exactly one creates it.
        Op::Apply(vec![(own.clone(), "2h".into()), (shared, "3h".into())]),
    ];
    if i.is_multiple_of(2) {
        ops.push(Op::Delete(own));
    }
    // Records applied before the clients start, deleted by 20 clients each.
    ops.push(Op::Delete(format!("doomed-{}", i % 10)));
    ops
}

/// The final state if the clients ran one after the other: name -> ttl. The operations were
/// chosen so that every interleaving must end here.
fn serial_model(clients: usize) -> BTreeMap<String, String> {
    let mut state: BTreeMap<String, String> = (0..10)
        .map(|k| (format!("doomed-{k}"), "1h".to_string()))
        .collect();
    for i in 0..clients {
        for op in client_ops(i) {
            match op {
                Op::Apply(batch) => state.extend(batch),
                Op::Delete(name) => {
                    state.remove(&name);
                }
            }
        }
    }
    state
}

#[test]
fn two_hundred_concurrent_clients_lose_and_duplicate_nothing() {
    const CLIENTS: usize = 200;
    let r = Reaper::start(&[]);
    let socket = r.socket();
    let doomed: String = (0..10)
        .map(|k| session_yaml(&format!("doomed-{k}"), "1h"))
        .collect::<Vec<_>>()
        .join("---\n");
    let (status, v) = call(
        &socket,
        "POST",
        "/v1/apply",
        Some(&apply_body("d.yaml", &doomed)),
    );
    assert_eq!(status, 200, "{v}");

    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let socket = socket.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut results = Vec::new();
                for op in client_ops(i) {
                    let (status, v) = match &op {
                        Op::Apply(batch) => {
                            let yaml = batch
                                .iter()
                                .map(|(n, ttl)| session_yaml(n, ttl))
                                .collect::<Vec<_>>()
                                .join("---\n");
                            call(
                                &socket,
                                "POST",
                                "/v1/apply",
                                Some(&apply_body("c.yaml", &yaml)),
                            )
                        }
                        Op::Delete(name) => {
                            call(&socket, "DELETE", &format!("/v1/sessions/{name}"), None)
                        }
                    };
                    results.push((op, status, v));
                }
                results
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    let took = started.elapsed();

    // Every answer is the documented one: apply 200, delete 202 (or 404 once a doomed
    // record is already gone); never a 5xx, never a conflict between distinct records.
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    for (op, status, v) in &results {
        match op {
            Op::Apply(_) => {
                assert_eq!(*status, 200, "{op:?}: {v}");
                for res in v["results"].as_array().expect("results") {
                    if res["action"] == "created" {
                        *created
                            .entry(res["name"].as_str().expect("name").into())
                            .or_default() += 1;
                    }
                }
            }
            Op::Delete(name) if name.starts_with("doomed-") => {
                assert!(matches!(status, 202 | 404), "{op:?}: {status} {v}")
            }
            Op::Delete(_) => assert_eq!(*status, 202, "{op:?}: {v}"),
        }
    }
    for k in 0..10 {
        assert_eq!(
            created.get(&format!("shared-{k}")),
            Some(&1),
            "shared-{k} created once"
        );
    }
    assert_eq!(
        created.len(),
        CLIENTS + 10,
        "each own and shared record created exactly once"
    );

    // Deleted records go once the reconciler has seen them (they own nothing).
    let model = serial_model(CLIENTS);
    let want: Vec<String> = model.keys().cloned().collect();
    r.wait_until(
        "deleted sessions to disappear",
        Duration::from_secs(60),
        || session_names(&socket) == want,
    );
    let (status, v) = call(&socket, "GET", "/v1/sessions", None);
    assert_eq!(status, 200);
    let actual: BTreeMap<String, String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().expect("name").to_string(),
                r["spec"]["ttl"].as_str().expect("ttl").to_string(),
            )
        })
        .collect();
    assert_eq!(
        actual.len(),
        v.as_array().map_or(0, Vec::len),
        "no duplicates"
    );
    assert_eq!(actual, model);
    let names: BTreeSet<_> = actual.keys().collect();
    assert_eq!(names.len(), CLIENTS / 2 + 10);
    eprintln!(
        "{} requests from {CLIENTS} clients in {took:?}",
        results.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The TCP listener requires the bearer token
// ---------------------------------------------------------------------------------------------

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn tcp(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

#[test]
fn tcp_api_listener_requires_the_bearer_token() {
    const TOKEN: &str = "s3cret-token-for-tests";
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let r = Reaper::start(&["--api-listen", &addr, "--api-token", TOKEN]);
    let (status, v) = call(
        &r.socket(),
        "POST",
        "/v1/apply",
        Some(&apply_body("s.yaml", &session_yaml("target", "1h"))),
    );
    assert_eq!(status, 200, "the Unix socket needs no token: {v}");

    let body =
        serde_json::to_vec(&apply_body("t.yaml", &session_yaml("via-tcp", "1h"))).expect("json");
    let mutating: [(&str, &str, Option<&[u8]>); 7] = [
        ("POST", "/v1/apply", Some(&body)),
        ("DELETE", "/v1/sessions/target", None),
        ("POST", "/v1/sessions/target/end", Some(b"{}")),
        ("POST", "/v1/sessions/target/heartbeat", None),
        (
            "POST",
            "/v1/agents/target/report",
            Some(br#"{"phase":"Running"}"#),
        ),
        ("DELETE", "/v1/agents/target", None),
        ("POST", "/v1/cleanup", Some(br#"{"dryRun":false}"#)),
    ];
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    for (method, path, body) in mutating {
        for auth in &wrong {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let (status, v) = exchange(tcp(&addr), method, path, &headers, body);
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {v}");
            assert!(v["error"].is_string(), "error body: {v}");
        }
    }
    // Reads need it too (the listener may face a network).
    let (status, _) = exchange(tcp(&addr), "GET", "/v1/sessions", &[], None);
    assert_eq!(status, 401);
    // Nothing was applied or changed by the refused requests.
    assert_eq!(session_names(&r.socket()), ["target"]);
    assert_eq!(r.session("target")["status"]["phase"], "Active");

    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, v) = exchange(tcp(&addr), "POST", "/v1/apply", &auth, Some(&body));
    assert_eq!(status, 200, "{v}");
    let (status, v) = exchange(tcp(&addr), "GET", "/v1/sessions/via-tcp", &auth, None);
    assert_eq!(status, 200, "{v}");
    let (status, v) = exchange(
        tcp(&addr),
        "POST",
        "/v1/sessions/target/end",
        &auth,
        Some(b"{}"),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Ended");
    assert_eq!(session_names(&r.socket()), ["target", "via-tcp"]);
}
