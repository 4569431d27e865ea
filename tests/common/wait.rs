//! Bounded waits.

use std::time::{Duration, Instant};

/// Polls `cond` every 25 ms until it holds; returns how long that took. Panics naming `what`
/// and the elapsed time when it does not hold within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    match try_wait_until(timeout, &mut cond) {
        Ok(elapsed) => elapsed,
        Err(elapsed) => {
            panic!("timed out after {elapsed:?} (limit {timeout:?}) waiting until {what}")
        }
    }
}

/// Like [`wait_until`] but returns `Err(elapsed)` instead of panicking.
pub fn try_wait_until(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, Duration> {
    let started = Instant::now();
    loop {
        if cond() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Asserts that `cond` keeps holding for the whole of `period` (checked every 50 ms).
pub fn assert_holds_for(what: &str, period: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < period {
        assert!(
            cond(),
            "{what} stopped holding after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cond(),
        "{what} stopped holding after {:?}",
        started.elapsed()
    );
}
