//! Where one failover trial's time went (`make bench B=failover`): the daemons' log lines
//! (their wall-clock timestamps) and the probe's log, each as milliseconds after the kill.
//! Figures a log does not have are left out; nothing here is asserted.

use manycast_e2e::cluster_bench::ProbeReply;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch of a `tracing` line's leading RFC 3339 UTC timestamp
/// (`2026-12-06T21:40:00.360648Z`), to the microsecond; only the time of day is read, so the
/// kill and the line must fall on one UTC day (a trial lasts milliseconds).
fn line_time(line: &str, day_start: f64) -> Option<f64> {
    let t = line.get(11..26)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..)?.trim_end_matches('Z').parse().ok()?;
    Some(day_start + h * 3600.0 + m * 60.0 + s)
}

fn field(line: &str, name: &str) -> Option<u64> {
    let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Now on the wall clock, in seconds since the Unix epoch.
pub fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One trial's steps, in ms after the kill (negative: before it).
#[derive(Debug, Default)]
pub struct Breakdown {
    /// The victim's last beacon the verifier heard (found dead minus its `silent_ms`).
    pub last_beacon: Option<f64>,
    /// The verifier found the victim dead.
    pub found: Option<f64>,
    /// How late the verifier's check came after the victim's deadline.
    pub late_ms: Option<u64>,
    /// The kernel re-pointed (the verifier's "re-point applied" line after `found`) and its cost.
    pub repointed: Option<f64>,
    pub repoint_us: Option<u64>,
    /// The last heir took the standby notice.
    pub heirs_told: Option<f64>,
    /// The first victim source answered by another member.
    pub first_answer: Option<f64>,
    /// Members other than the victim found dead since the kill (a false positive each).
    pub others_found_dead: usize,
}

impl Breakdown {
    /// Reads `dir`'s `verifier.log` and the `heirs`' logs for what followed a kill at
    /// `killed_wall` (seconds since the epoch), and `log` (the probe's) for the first answer
    /// to one of `victims` by another server than `victim` after `killed_at`.
    pub fn read(
        dir: &Path,
        heirs: &[String],
        killed_wall: f64,
        killed_at: Instant,
        log: &[ProbeReply],
        victim: &str,
        victims: &[usize],
    ) -> Breakdown {
        let day_start = (killed_wall / 86_400.0).floor() * 86_400.0;
        let after = |line: &str| {
            line_time(line, day_start)
                .filter(|t| *t >= killed_wall)
                .map(|t| (t - killed_wall) * 1e3)
        };
        let mut b = Breakdown::default();
        let verifier = std::fs::read_to_string(dir.join("verifier.log")).unwrap_or_default();
        for line in verifier.lines() {
            let Some(at) = after(line) else { continue };
            let stopped = line.contains("beacons stopped");
            if stopped && !line.contains(&format!("member={victim} ")) {
                b.others_found_dead += 1;
            } else if b.found.is_none() && stopped {
                b.found = Some(at);
                b.last_beacon = field(line, "silent_ms").map(|s| at - s as f64);
                b.late_ms = field(line, "late_ms");
            } else if b.found.is_some()
                && b.repointed.is_none()
                && line.contains("re-point applied")
            {
                b.repointed = Some(at);
                b.repoint_us = field(line, "us");
            }
        }
        for heir in heirs {
            let text = std::fs::read_to_string(dir.join(format!("{heir}.log"))).unwrap_or_default();
            let told = text
                .lines()
                .filter(|l| l.contains("the router steers") && l.contains("active=true"))
                .find_map(after);
            if let Some(t) = told {
                b.heirs_told = Some(b.heirs_told.map_or(t, |h: f64| h.max(t)));
            }
        }
        b.first_answer = log
            .iter()
            .filter(|r| {
                r.served && r.server != victim && r.at >= killed_at && victims.contains(&r.source)
            })
            .map(|r| (r.at - killed_at).as_secs_f64() * 1e3)
            .reduce(f64::min);
        b
    }

    /// One line for the trial's report.
    pub fn describe(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:+.1}"));
        let others = match self.others_found_dead {
            0 => String::new(),
            n => format!("; {n} OTHER member(s) found dead"),
        };
        format!(
            "last beacon {}, found dead {} (late {} ms), re-pointed {} ({} µs), heirs told {}, first answer {}{others}",
            ms(self.last_beacon),
            ms(self.found),
            self.late_ms.map_or("?".into(), |v| v.to_string()),
            ms(self.repointed),
            self.repoint_us.map_or("?".into(), |v| v.to_string()),
            ms(self.heirs_told),
            ms(self.first_answer),
        )
    }
}
