//! systemd's notify protocol (`sd_notify`), without a crate: one datagram per message to
//! `$NOTIFY_SOCKET`. Everything here is a no-op when reaper does not run under systemd, and a
//! failure to notify is logged, never fatal (systemd then restarts or times out the unit, which
//! is the right outcome for a daemon that cannot reach it).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`, newline-separated assignments) to `$NOTIFY_SOCKET`.
/// Returns whether a message was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(&path.to_string_lossy(), state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, state, "Cannot notify systemd.");
            false
        }
    }
}

/// The daemon is ready: the store is open and the first Docker sync is done.
pub fn ready() -> bool {
    notify("READY=1")
}

/// The daemon is shutting down.
pub fn stopping() -> bool {
    notify("STOPPING=1")
}

/// The daemon is reloading its configuration (SIGHUP); send `ready()` when done.
/// Uses the plain `RELOADING=1` form that every systemd with `Type=notify` accepts.
pub fn reloading() -> bool {
    notify("RELOADING=1")
}

/// Keep-alive for `WatchdogSec=`: send it only while the reconcile loop is healthy.
pub fn watchdog() -> bool {
    notify("WATCHDOG=1")
}

/// A one-line status shown by `systemctl status`.
pub fn status(msg: &str) -> bool {
    notify(&status_message(msg))
}

fn status_message(msg: &str) -> String {
    // A newline would start another assignment (say, READY=1).
    let line: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// How often to call [`watchdog`]: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, or `None` when the watchdog is off or meant for another process
/// (`$WATCHDOG_PID` names a different pid).
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        // An abstract socket (Linux only): its name has no file behind it.
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract NOTIFY_SOCKET outside Linux",
            ));
        }
    }
    if !path.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={path:?} is neither an absolute path nor @abstract"),
        ));
    }
    sock.send_to(state.as_bytes(), path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
        send(path.to_str().unwrap(), "STATUS=safe mode\nWATCHDOG=1").unwrap();
        assert_eq!(recv(&server), "STATUS=safe mode\nWATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("reaper-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "WATCHDOG=1").unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn rejects_relative_paths_and_missing_sockets() {
        assert!(send("relative.sock", "READY=1").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("absent").to_str().unwrap(), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_pid_only() {
        assert_eq!(
            interval_from(Some("20000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            interval_from(Some("20000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(interval_from(Some("20000000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
        assert_eq!(interval_from(None, None, 7), None);
    }

    #[test]
    fn status_lines_cannot_inject_assignments() {
        assert_eq!(status_message("safe mode"), "STATUS=safe mode");
        assert_eq!(status_message("bad\nREADY=1\r"), "STATUS=bad READY=1 ");
    }
}
