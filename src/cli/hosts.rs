//! `reaper get hosts` and `reaper delete host`: the fleet's hosts, ready while their presence
//! lease is live, gone once it lapsed, until forgotten.

use crate::api::client::Client;
use crate::api::wire::HostView;
use crate::core::model::Timestamp;
use crate::store::hosts::check_host_name;

use super::output::{list_as, table, ListOutput, Printable};
use super::relative_time::{age, relative};
use super::{Failure, Outcome};

/// What `get hosts` takes beyond the names.
pub(super) struct GetHosts<'a> {
    pub names: &'a [String],
    pub output: &'a ListOutput,
    pub no_headers: bool,
    pub ignore_not_found: bool,
}

/// Lists the hosts (or the NAMEs given, in that order); a NAME not listed is an error after
/// the others are printed, as with `get sessions`.
pub(super) async fn get(c: &Client, g: GetHosts<'_>) -> Outcome {
    for name in g.names {
        check_host_name(name).map_err(|e| Failure::new(2, e))?;
    }
    let all: Vec<HostView> = c.get("/v1/hosts").await?;
    let (hosts, missing) = pick(all, g.names);
    let missing = match g.ignore_not_found {
        true => Vec::new(),
        false => missing,
    };
    if !hosts.is_empty() || missing.is_empty() {
        let one = g.names.len() == 1;
        print!(
            "{}",
            hosts_as(&hosts, one, g.output, g.no_headers, Timestamp::now())
        );
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(Failure::new(1, missing.join("\nerror: "))),
    }
}

/// The hosts named (all when none is), and a "not found" for each name not listed.
fn pick(all: Vec<HostView>, names: &[String]) -> (Vec<HostView>, Vec<String>) {
    if names.is_empty() {
        return (all, Vec::new());
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match all.iter().find(|h| &h.host_name == name) {
            Some(h) => found.push(h.clone()),
            None => missing.push(format!("host/{name} not found")),
        }
    }
    (found, missing)
}

/// Forgets a gone host; the daemon refuses a ready one.
pub(super) async fn delete(c: &Client, name: &str, ignore_not_found: bool) -> Outcome {
    check_host_name(name).map_err(|e| Failure::new(2, e))?;
    match c.delete::<HostView>(&format!("/v1/hosts/{name}")).await {
        Ok(_) => {
            println!("host/{name} forgotten");
            Ok(())
        }
        Err(e) if ignore_not_found && e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `hosts` in the format `-o` names.
pub fn hosts_as(
    hosts: &[HostView],
    one: bool,
    o: &ListOutput,
    no_headers: bool,
    now: Timestamp,
) -> String {
    let printable = Printable {
        items: hosts,
        one,
        name: &|h: &HostView| format!("host/{}", h.host_name),
        table: &|items: &[HostView], wide| hosts_table(items, wide, now),
        empty: "No hosts.\n",
    };
    list_as(printable, o, no_headers)
}

fn hosts_table(hosts: &[HostView], wide: bool, now: Timestamp) -> String {
    let mut header = vec![
        "NAME",
        "STATE",
        "SAFE-MODE",
        "VERSION",
        "LAST-RENEWAL",
        "AGE",
    ];
    if wide {
        header.extend(["STARTED", "RENEWED"]);
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let mut row = vec![
                h.host_name.clone(),
                h.state.as_str().into(),
                if h.safe_mode { "on" } else { "off" }.into(),
                h.version.clone(),
                relative(h.renewed_at, now),
                age(h.started_at, now),
            ];
            if wide {
                row.extend([h.started_at.to_string(), h.renewed_at.to_string()]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::examples;

    fn hosts() -> Vec<HostView> {
        serde_json::from_str(&examples::hosts()).expect("the example reads")
    }

    #[test]
    fn get_hosts_prints_a_table_with_relative_times() {
        // The examples' times are relative to when they are made: make them first.
        let listed = hosts();
        let now = Timestamp::now();
        assert_eq!(
            hosts_as(&listed, false, &ListOutput::Table, false, now),
            "NAME     STATE   SAFE-MODE   VERSION   LAST-RENEWAL   AGE\n\
             gpu-01   ready   off         0.1.0     2s ago         2h\n\
             gpu-07   gone    on          0.1.0     10m ago        3d\n"
        );
        assert_eq!(
            hosts_as(&listed, false, &ListOutput::Table, true, now),
            "gpu-01   ready   off         0.1.0     2s ago         2h\n\
             gpu-07   gone    on          0.1.0     10m ago        3d\n"
        );
        assert_eq!(
            hosts_as(&hosts(), false, &ListOutput::Name, false, now),
            "host/gpu-01\nhost/gpu-07\n"
        );
        assert_eq!(
            hosts_as(&[], false, &ListOutput::Table, false, now),
            "No hosts.\n"
        );
    }

    #[test]
    fn get_hosts_prints_a_list_as_kind_list_and_one_host_as_itself() {
        let now = Timestamp::now();
        let json = hosts_as(&hosts(), false, &ListOutput::Json, false, now);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["apiVersion"], "reaper/v1");
        assert_eq!(v["items"][1]["state"], "gone");
        assert_eq!(v["items"][1]["safeMode"], true);
        let yaml = hosts_as(&hosts()[..1], true, &ListOutput::Yaml, false, now);
        assert!(yaml.starts_with("hostName: gpu-01\n"), "{yaml}");
        let names = ListOutput::parse("jsonpath={.items[*].hostName}").unwrap();
        assert_eq!(
            hosts_as(&hosts(), false, &names, false, now),
            "gpu-01 gpu-07"
        );
    }

    #[test]
    fn names_not_listed_are_reported_as_not_found() {
        let (found, missing) = pick(hosts(), &["gpu-07".into(), "gpu-99".into()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].host_name, "gpu-07");
        assert_eq!(missing, ["host/gpu-99 not found"]);
    }
}
