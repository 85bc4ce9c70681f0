//! What one scenario run measured, and whether its invariants held.

use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

/// One run's result; `--json` prints it as one line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    /// Every invariant held (`failures` is empty).
    pub ok: bool,
    /// View change seen by an agent → address bound → first announcement on the wire.
    pub reaction_ms: Option<f64>,
    /// The fault → a new client session through the VIP answered by its new holder.
    pub vip_move_ms: Option<f64>,
    /// The old holder starting to release the VIP → the last old connection reset, as
    /// the client saw it. None when nothing had to be reset, or the resets could not
    /// reach the client (it was cut off from the old holder).
    pub reset_ms: Option<f64>,
    /// Unsolicited ARP / NA for the VIP captured on the bridge after the fault.
    pub announcements: usize,
    /// How long two hosts held the write VIP at once.
    pub dual_owner_ms: f64,
    /// The same, summed over the read VIPs.
    pub read_dual_owner_ms: f64,
    /// Connections through a VIP its host released that still echo or hang after the
    /// group settled.
    pub stale_conns: usize,
    pub vip: String,
    /// The host that held the VIP before the fault, and after.
    pub from: Option<String>,
    pub to: Option<String>,
    /// The fault → the first view change any agent logged (the group's detection plus
    /// the agents' poll).
    pub first_view_ms: Option<f64>,
    /// What made the new holder bind: its own view change, the old holder's confirmed
    /// release of the write VIP, or the primary's placement.
    pub trigger: Option<String>,
    /// The two parts of `reaction_ms`.
    pub trigger_to_bound_ms: Option<f64>,
    pub bound_to_announce_ms: Option<f64>,
    /// Connections held through the VIP during the run.
    pub held_conns: usize,
    /// Held connections reset although the VIP stayed where it was.
    pub needless_resets: usize,
    /// Each invariant that failed, in words.
    pub failures: Vec<String>,
    /// Why the run did not settle: the placement and every agent's log.
    #[serde(skip)]
    pub detail: String,
    /// (ms since the fault, what happened), for the human output.
    #[serde(skip)]
    pub timeline: Vec<(f64, String)>,
}

impl Report {
    pub fn new(scenario: &str, vip: IpAddr) -> Report {
        Report {
            scenario: scenario.to_owned(),
            ok: true,
            vip: vip.to_string(),
            ..Report::default()
        }
    }

    pub fn fail(&mut self, why: String) {
        self.ok = false;
        self.failures.push(why);
    }

    /// The JSON line, with times rounded to 0.1 ms.
    pub fn json(&self) -> String {
        let mut r = self.clone();
        for v in [
            &mut r.reaction_ms,
            &mut r.vip_move_ms,
            &mut r.reset_ms,
            &mut r.first_view_ms,
            &mut r.trigger_to_bound_ms,
            &mut r.bound_to_announce_ms,
        ]
        .into_iter()
        .flatten()
        {
            *v = round(*v);
        }
        r.dual_owner_ms = round(r.dual_owner_ms);
        r.read_dual_owner_ms = round(r.read_dual_owner_ms);
        serde_json::to_string(&r).unwrap_or_default()
    }

    /// The human output: the timeline, then the measurements and the verdict.
    pub fn human(&self) -> String {
        let mut out = format!(
            "== {} ({} from {} to {})\n",
            self.scenario,
            self.vip,
            self.from.as_deref().unwrap_or("?"),
            self.to.as_deref().unwrap_or("?")
        );
        for (ms, line) in &self.timeline {
            out.push_str(&format!("  {ms:>+9.1} ms  {line}\n"));
        }
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        out.push_str(&format!(
            "  first view change {}; reaction {} ({} → bound {}, → announced {}); move {}, \
             reset {}, {} announcement(s), dual owner {:.1} ms, {} stale of {} held \
             connection(s)\n",
            opt(self.first_view_ms),
            opt(self.reaction_ms),
            self.trigger.as_deref().unwrap_or("-"),
            opt(self.trigger_to_bound_ms),
            opt(self.bound_to_announce_ms),
            opt(self.vip_move_ms),
            opt(self.reset_ms),
            self.announcements,
            self.dual_owner_ms,
            self.stale_conns,
            self.held_conns
        ));
        if self.ok {
            out.push_str("  OK\n");
        } else {
            for f in &self.failures {
                out.push_str(&format!("  FAILED: {f}\n"));
            }
        }
        out
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Milliseconds from `a` to `b` (negative if `b` is earlier).
pub fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a {
        (b - a).as_secs_f64() * 1000.0
    } else {
        -((a - b).as_secs_f64() * 1000.0)
    }
}

/// Median and p99 of each time over `reports`, per scenario: a markdown table.
pub fn summary(reports: &[Report]) -> String {
    let mut names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    names.dedup();
    let mut out = String::from(
        "| scenario | runs | ok | reaction ms, median (p99) | move ms, median (p99) | \
         reset ms, median (p99) | dual owner ms, max | stale conns, max |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for name in names {
        let rs: Vec<&Report> = reports.iter().filter(|r| r.scenario == name).collect();
        let stat = |f: fn(&Report) -> Option<f64>| {
            let mut v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            if v.is_empty() {
                return "-".to_owned();
            }
            v.sort_by(f64::total_cmp);
            let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
            format!("{:.1} ({:.1})", at(0.5), at(0.99))
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            rs.len(),
            rs.iter().filter(|r| r.ok).count(),
            stat(|r| r.reaction_ms),
            stat(|r| r.vip_move_ms),
            stat(|r| r.reset_ms),
            rs.iter().map(|r| r.dual_owner_ms).fold(0.0, f64::max),
            rs.iter().map(|r| r.stale_conns).max().unwrap_or(0),
        ));
    }
    out
}
