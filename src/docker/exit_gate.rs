//! Keeps container exits from overlapping on engines with the libnetwork exit deadlock (see
//! `model::engine`). When serial, a call that can end a running container holds the gate alone,
//! and network calls (which take the locks that deadlock) wait for a moment with no exit in
//! flight. The lock is fair, so a waiting network call goes before exits that queue after it and
//! is never starved; its wait is bounded all the same. When not serial the gate is open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug)]
pub struct ExitGate {
    serial: AtomicBool,
    lock: RwLock<()>,
}

/// Held while a call that can end a running container is in flight.
pub type ExitPermit<'a> = Option<RwLockWriteGuard<'a, ()>>;
/// Held while a network call is in flight.
pub type NetworkPermit<'a> = Option<RwLockReadGuard<'a, ()>>;

impl Default for ExitGate {
    /// Serial until the engine's version says otherwise: the safe side.
    fn default() -> Self {
        ExitGate::new(true)
    }
}

impl ExitGate {
    pub fn new(serial: bool) -> Self {
        ExitGate {
            serial: AtomicBool::new(serial),
            lock: RwLock::new(()),
        }
    }

    pub fn set_serial(&self, on: bool) {
        self.serial.store(on, Ordering::SeqCst);
    }

    pub fn is_serial(&self) -> bool {
        self.serial.load(Ordering::SeqCst)
    }

    /// Waits until no other exit and no network call is in flight. Exits wait as long as it
    /// takes: each holder's call has its own timeout.
    pub async fn exit(&self) -> ExitPermit<'_> {
        if self.is_serial() {
            Some(self.lock.write().await)
        } else {
            None
        }
    }

    /// Waits, up to `bound`, until no exit is in flight. `None` when the bound passed: the
    /// caller must not make the network call.
    pub async fn network(&self, bound: Duration) -> Option<NetworkPermit<'_>> {
        if !self.is_serial() {
            return Some(None);
        }
        tokio::time::timeout(bound, self.lock.read())
            .await
            .ok()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn serial_exits_never_overlap() {
        let gate = Arc::new(ExitGate::new(true));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (gate, in_flight, max) = (gate.clone(), in_flight.clone(), max.clone());
                tokio::spawn(async move {
                    let _permit = gate.exit().await;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_lets_exits_overlap() {
        let gate = ExitGate::new(false);
        let a = gate.exit().await;
        let b = gate.exit().await;
        assert!(a.is_none() && b.is_none());
        assert!(gate.network(Duration::ZERO).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_call_waits_for_the_exit_in_flight_and_goes_before_later_exits() {
        let gate = Arc::new(ExitGate::new(true));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = gate.exit().await;
        let net = {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let permit = gate.network(Duration::from_secs(30)).await;
                assert!(permit.is_some(), "the network call was starved");
                order.lock().unwrap().push("network");
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let later_exit = {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let _permit = gate.exit().await;
                order.lock().unwrap().push("exit");
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            order.lock().unwrap().is_empty(),
            "nothing may pass the exit in flight"
        );
        drop(first);
        net.await.unwrap();
        later_exit.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["network", "exit"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_call_gives_up_after_its_bound() {
        let gate = ExitGate::new(true);
        let _exit = gate.exit().await;
        assert!(gate.network(Duration::from_secs(5)).await.is_none());
    }
}
