//! Per-host rows of a session's status: in a fleet each host removes the session's objects on
//! its own engine and reports here, and the session is `Cleaned` only once every live host
//! has. A single host (sled) has one row, its own.
//!
//! Who is live is passed in (the store's host leases plus this host); the rules below decide
//! from the rows alone, so the planner, the write that re-checks its decision and the tests
//! go by the same ones.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{ObjectCounts, SessionStatus, Timestamp};

/// Where one host stands in a session's cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostState {
    /// It has not reported yet: it may still hold objects of the session.
    Pending,
    /// Its engine holds nothing more of the session.
    Done,
    /// Its lease lapsed before it was done: it no longer holds the session back. If it comes
    /// back and finds objects of the session, it removes them and turns `done`.
    Gone,
}

impl HostState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Gone => "gone",
        }
    }
}

/// One host's share of a session's cleanup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRow {
    pub host_name: String,
    pub state: HostState,
    /// What this host removed of the session (its share of `status.removed`).
    #[serde(default)]
    pub removed: ObjectCounts,
    /// Removal failures on this host for this session, each attempt counted.
    #[serde(default)]
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the row became `done` (or `gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Timestamp>,
}

impl HostRow {
    fn pending(host: &str) -> Self {
        HostRow {
            host_name: host.to_string(),
            state: HostState::Pending,
            removed: ObjectCounts::default(),
            failures: 0,
            last_error: None,
            reported_at: None,
        }
    }

    fn is_done(&self) -> bool {
        self.state == HostState::Done
    }
}

/// The hosts a decision goes by: this one, and those whose presence is live (this one always
/// counts as live).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    pub this: String,
    pub live: BTreeSet<String>,
}

impl Fleet {
    /// `live` as the store reports it; this host is added.
    pub fn new(this: &str, mut live: BTreeSet<String>) -> Self {
        live.insert(this.to_string());
        Fleet {
            this: this.to_string(),
            live,
        }
    }
}

/// What [`SessionStatus::report_done`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Some row changed: the write is worth making.
    pub changed: bool,
    /// Every live host is done now: the session may turn `Cleaned` (or a deleted record go).
    pub all_done: bool,
    /// The session turned `Cleaned` in this write (set by `Session::report_host_done`).
    pub cleaned: bool,
}

impl SessionStatus {
    pub fn host_row(&self, host: &str) -> Option<&HostRow> {
        self.hosts.iter().find(|r| r.host_name == host)
    }

    /// The host's row, added as `pending` if it has none, in host-name order. (Looked up
    /// one by one: an imported record's rows need not be sorted, and must not gain a twin.)
    pub fn host_row_mut(&mut self, host: &str) -> &mut HostRow {
        let at = match self.hosts.iter().position(|r| r.host_name == host) {
            Some(at) => at,
            None => {
                let at = self.hosts.partition_point(|r| r.host_name.as_str() < host);
                self.hosts.insert(at, HostRow::pending(host));
                at
            }
        };
        &mut self.hosts[at]
    }

    /// Adds what this host removed and the failures it met to its row.
    pub fn add_host_removals(
        &mut self,
        host: &str,
        removed: &ObjectCounts,
        failures: u64,
        last_error: Option<&str>,
    ) {
        let row = self.host_row_mut(host);
        row.removed.merge(removed);
        row.failures += failures;
        if let Some(e) = last_error {
            row.last_error = Some(e.to_string());
        }
    }

    /// Whether every live host has a `done` row, counting `fleet.this` as done if `this_done`.
    pub fn all_live_done(&self, fleet: &Fleet, this_done: bool) -> bool {
        fleet.live.iter().all(|h| {
            (this_done && *h == fleet.this) || self.host_row(h).is_some_and(HostRow::is_done)
        })
    }

    /// Whether this host, with nothing of the session left on its engine, has something to
    /// write: its row is not `done` yet, or the rows would now let the session go (a host
    /// lapsed, or came done meanwhile). Once that is written, nothing more is due until the
    /// live hosts change: no write in every pass.
    pub fn done_report_due(&self, fleet: &Fleet) -> bool {
        let own_done = self.host_row(&fleet.this).is_some_and(HostRow::is_done);
        !own_done || self.all_live_done(fleet, true)
    }

    /// This host's engine holds nothing more of the session: its row turns `done` (stamped
    /// `now` when it does), every other live host without a row gets a `pending` one (so all
    /// see who is awaited), and if every live host is done, the rows of hosts that are not live
    /// and not done turn `gone`.
    pub fn report_done(&mut self, fleet: &Fleet, now: Timestamp) -> Reported {
        let before = self.hosts.clone();
        let own = self.host_row_mut(&fleet.this);
        if !own.is_done() {
            own.state = HostState::Done;
            own.reported_at = Some(now);
        }
        for h in &fleet.live {
            self.host_row_mut(h);
        }
        let all_done = self.all_live_done(fleet, false);
        if all_done {
            for row in &mut self.hosts {
                if !row.is_done() && !fleet.live.contains(&row.host_name) {
                    if row.state != HostState::Gone {
                        row.reported_at = Some(now);
                    }
                    row.state = HostState::Gone;
                }
            }
        }
        Reported {
            changed: self.hosts != before,
            all_done,
            cleaned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{session, T0};

    fn fleet(this: &str, others: &[&str]) -> Fleet {
        Fleet::new(this, others.iter().map(|s| s.to_string()).collect())
    }

    fn states(st: &SessionStatus) -> Vec<(String, &'static str)> {
        st.hosts
            .iter()
            .map(|r| (r.host_name.clone(), r.state.as_str()))
            .collect()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    #[test]
    fn a_single_host_has_one_done_row() {
        let mut st = session("s").ended().build().status;
        let f = fleet("host-a", &[]);
        assert!(st.done_report_due(&f));
        let r = st.report_done(&f, at(1));
        assert_eq!(
            r,
            Reported {
                changed: true,
                all_done: true,
                cleaned: false,
            }
        );
        assert_eq!(states(&st), [("host-a".into(), "done")]);
        assert_eq!(st.hosts[0].reported_at, Some(at(1)));
        // Written once: nothing is due again, and a repeat changes nothing.
        let mut again = st.clone();
        assert!(!again.report_done(&f, at(2)).changed);
        assert_eq!(again, st);
    }

    #[test]
    fn the_first_host_done_names_who_is_pending_and_the_last_one_finishes() {
        let mut st = session("s").ended().build().status;
        let a = fleet("host-a", &["host-b", "host-c"]);
        let r = st.report_done(&a, at(1));
        assert!(r.changed && !r.all_done);
        assert_eq!(
            states(&st),
            [
                ("host-a".into(), "done"),
                ("host-b".into(), "pending"),
                ("host-c".into(), "pending")
            ]
        );
        assert!(!st.done_report_due(&a), "host-a waits without writing");
        let b = fleet("host-b", &["host-a", "host-c"]);
        assert!(!st.report_done(&b, at(2)).all_done);
        let c = fleet("host-c", &["host-a", "host-b"]);
        assert!(st.done_report_due(&c));
        assert!(st.report_done(&c, at(3)).all_done);
        assert_eq!(st.host_row("host-b").unwrap().reported_at, Some(at(2)));
    }

    #[test]
    fn a_lapsed_host_turns_gone_and_no_longer_holds_the_session() {
        let mut st = session("s").ended().build().status;
        st.report_done(&fleet("host-a", &["host-b"]), at(1));
        // host-b's lease lapsed: host-a's rows would now let the session go.
        let alone = fleet("host-a", &[]);
        assert!(st.done_report_due(&alone));
        let r = st.report_done(&alone, at(20));
        assert!(r.changed && r.all_done);
        assert_eq!(
            states(&st),
            [("host-a".into(), "done"), ("host-b".into(), "gone")]
        );
        assert_eq!(st.host_row("host-b").unwrap().reported_at, Some(at(20)));

        // It comes back and finds objects: it removes them and reports done.
        st.add_host_removals("host-b", &counts(2), 1, Some("container c: in use"));
        let b = fleet("host-b", &["host-a"]);
        assert!(st.done_report_due(&b));
        assert!(st.report_done(&b, at(30)).all_done);
        let row = st.host_row("host-b").unwrap();
        assert_eq!(
            (row.state, row.removed.containers, row.failures),
            (HostState::Done, 2, 1)
        );
        assert_eq!(row.last_error.as_deref(), Some("container c: in use"));
    }

    #[test]
    fn a_live_host_not_yet_done_is_never_marked_gone() {
        let mut st = session("s").ended().build().status;
        st.report_done(&fleet("host-a", &["host-b"]), at(1));
        assert!(
            !st.report_done(&fleet("host-a", &["host-b"]), at(2))
                .all_done
        );
        assert_eq!(st.host_row("host-b").unwrap().state, HostState::Pending);
    }

    fn counts(containers: u64) -> ObjectCounts {
        ObjectCounts {
            containers,
            ..ObjectCounts::default()
        }
    }

    #[test]
    fn removals_add_to_the_row_of_the_host_that_made_them() {
        let mut st = session("s").ended().build().status;
        st.add_host_removals("host-b", &counts(1), 0, None);
        st.add_host_removals("host-a", &counts(2), 2, Some("x"));
        st.add_host_removals("host-b", &counts(3), 0, None);
        let rows: Vec<_> = st
            .hosts
            .iter()
            .map(|r| {
                (
                    r.host_name.as_str(),
                    r.state,
                    r.removed.containers,
                    r.failures,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("host-a", HostState::Pending, 2, 2),
                ("host-b", HostState::Pending, 4, 0)
            ]
        );
    }

    #[test]
    fn rows_out_of_order_gain_no_twin() {
        let mut st = session("s").ended().build().status;
        for h in ["host-c", "host-a"] {
            st.host_row_mut(h);
        }
        st.hosts.reverse();
        st.add_host_removals("host-a", &counts(1), 0, None);
        st.report_done(&fleet("host-c", &["host-a", "host-b"]), at(1));
        let names: Vec<&str> = st.hosts.iter().map(|r| r.host_name.as_str()).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "host-a").count(),
            1,
            "{names:?}"
        );
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn rows_read_as_the_contract_spells_them() {
        let mut st = session("s").ended().build().status;
        st.add_host_removals("host-a", &counts(2), 0, None);
        st.report_done(&fleet("host-a", &[]), T0);
        let json = serde_json::to_value(&st.hosts).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "hostName": "host-a",
                "state": "done",
                "removed": {"containers": 2, "networks": 0, "volumes": 0, "images": 0, "paths": 0},
                "failures": 0,
                "reportedAt": "2023-11-14T22:13:20Z"
            }])
        );
        let back: Vec<HostRow> = serde_json::from_value(json).unwrap();
        assert_eq!(back, st.hosts);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const HOSTS: [&str; 4] = ["h0", "h1", "h2", "h3"];

        /// One step of a fleet: a host reports done, with the set of live hosts it sees.
        fn arb_steps() -> impl Strategy<Value = Vec<(usize, Vec<bool>)>> {
            proptest::collection::vec(
                (0..HOSTS.len(), proptest::collection::vec(any::<bool>(), 4)),
                0..12,
            )
        }

        proptest! {
            /// Whatever the order of reports and the comings and goings of hosts: all are done
            /// only if every live host has a done row; a live host is never gone; rows stay
            /// sorted and unique; and a host whose row is done has nothing more to write until
            /// the rows would let the session go.
            #[test]
            fn never_done_while_a_live_host_is_not(steps in arb_steps()) {
                let mut st = SessionStatus::default();
                for (i, (who, live)) in steps.into_iter().enumerate() {
                    let live: BTreeSet<String> = HOSTS.iter().zip(&live)
                        .filter(|(_, l)| **l).map(|(h, _)| h.to_string()).collect();
                    let f = Fleet::new(HOSTS[who], live);
                    let before = st.clone();
                    let r = st.report_done(&f, at(i as i64));
                    let live_done = f.live.iter()
                        .all(|h| st.host_row(h).is_some_and(|r| r.state == HostState::Done));
                    prop_assert_eq!(r.all_done, live_done);
                    // A live host is never made gone (one back from a lapse stays so until
                    // it reports itself).
                    for h in &f.live {
                        let was_gone = before.host_row(h).is_some_and(|r| r.state == HostState::Gone);
                        let gone = st.host_row(h).is_some_and(|r| r.state == HostState::Gone);
                        prop_assert!(st.host_row(h).is_some());
                        prop_assert!(!gone || was_gone);
                    }
                    let names: Vec<&str> = st.hosts.iter().map(|r| r.host_name.as_str()).collect();
                    let mut sorted = names.clone();
                    sorted.sort();
                    sorted.dedup();
                    prop_assert_eq!(names, sorted);
                    prop_assert_eq!(st.done_report_due(&f), r.all_done);
                }
            }
        }
    }
}
