//! A listen address as operators write it: `127.0.0.1:9733`, `[::1]:9733` or `localhost:9733`.
//! A host name is resolved once, when the config is read, so a typo fails at start-up with the
//! key that holds it rather than at bind time.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// `metricsListen` and `apiListen`: an IP and port, or a host name and port resolved to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr(ip));
        }
        let expected = "expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:9733 or localhost:9733";
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("invalid address {s:?}: no port; {expected}"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("invalid address {s:?}: {expected}"));
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?} in {s:?} ({e}); give an IP:PORT such as 127.0.0.1:{port}"))?
            .collect();
        // `localhost` usually resolves to both; IPv4 first, as Prometheus targets usually are.
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .map(|a| ListenAddr(*a))
            .ok_or_else(|| format!("{host:?} in {s:?} resolves to no address; give an IP:PORT such as 127.0.0.1:{port}"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::core::model::from_string(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_pass_and_localhost_resolves_to_loopback() {
        let ip: ListenAddr = "127.0.0.1:9733".parse().unwrap();
        assert_eq!(ip.0, "127.0.0.1:9733".parse::<SocketAddr>().unwrap());
        assert!("[::1]:9733".parse::<ListenAddr>().is_ok());
        let host: ListenAddr = "localhost:9733".parse().unwrap();
        assert!(host.0.ip().is_loopback(), "{host}");
        assert_eq!(host.0.port(), 9733);
    }

    #[test]
    fn a_missing_or_bad_port_says_what_is_expected() {
        for bad in [
            "localhost",
            "localhost:",
            ":9733",
            "localhost:http",
            "localhost:99999",
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.contains("expected IP:PORT or HOST:PORT"), "{bad}: {e}");
        }
    }
}
