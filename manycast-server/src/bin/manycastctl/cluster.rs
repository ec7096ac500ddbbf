//! Cluster commands: talk to a running daemon's admin socket (one JSON object per line, see
//! `manycast_server::admin::protocol`) and show members, the allocation and load, move units, drain,
//! resume, rebalance, and a live `watch`.

use crate::operator::Operator;
use clap::{Args, Subcommand};
use control_channel::wire::RequestAction;
use manycast_server::admin::protocol::{
    AdminEvent, AdminRequest, Answer, Exit, HealthReport, Status, WatchLine,
};
use manycast_server::config::DEFAULT_ADMIN_SOCKET;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

type Error = Box<dyn std::error::Error>;

#[derive(Args, Debug, Clone)]
pub struct Socket {
    /// The daemon's admin socket (`admin_socket` in its config).
    #[arg(long, default_value = DEFAULT_ADMIN_SOCKET)]
    socket: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members as this daemon sees them: liveness, weights, units, load, epoch.
    Members {
        #[command(flatten)]
        socket: Socket,
        #[arg(long)]
        json: bool,
    },
    /// The committed allocation: per member its units, slices and load.
    Allocation {
        #[command(flatten)]
        socket: Socket,
        #[arg(long)]
        json: bool,
    },
    /// Give units to a member; it gives its least loaded other units back (quotas stay).
    /// Needs --operator-key/--operator-cert.
    Move {
        /// Unit numbers: `3`, `3,7,9` or `10-19` (see `allocation --json`, `unit_owner`); or a
        /// client address, IPv4 or IPv6, or an IPv6 prefix (`2001:db8:0:400::/56`): the units
        /// its sources belong to (an IPv6 source's unit is its /56's, SPEC.md §6.2).
        units: String,
        /// The member that takes them (id, `2` or `m2`).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        socket: Socket,
        #[command(flatten)]
        operator: Operator,
    },
    /// Drain a member (default: the daemon's own): weight 0, its units go to the others.
    /// Another member needs --operator-key/--operator-cert.
    Drain {
        member: Option<String>,
        #[command(flatten)]
        socket: Socket,
        #[command(flatten)]
        operator: Operator,
    },
    /// Undo a drain: the member announces its configured weight again. Another member needs
    /// --operator-key/--operator-cert.
    Resume {
        member: Option<String>,
        #[command(flatten)]
        socket: Socket,
        #[command(flatten)]
        operator: Operator,
    },
    /// Swap units between members to lower the max/mean load (needs the operator key).
    Rebalance {
        #[command(flatten)]
        socket: Socket,
        #[command(flatten)]
        operator: Operator,
    },
    /// A live view: members, slices, load and recent events, refreshed every second.
    Watch {
        #[command(flatten)]
        socket: Socket,
        /// Print one frame and exit (for scripts and tests).
        #[arg(long)]
        once: bool,
        /// With --once: the full status as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_member(s: &str) -> Result<u32, Error> {
    let digits = s.strip_prefix('m').unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("{s:?} is not a member id (like 2 or m2)").into())
}

/// `3`, `3,7`, `10-19`, or a mix.
pub fn parse_units(s: &str) -> Result<Vec<u16>, Error> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not a unit number or range like 10-19");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad().into());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("no units given".into());
    }
    Ok(out)
}

/// The units of a client address or IPv6 prefix under `bits` low-order bits (SPEC.md §6.2):
/// an IPv4 address's low bits; the low bits of an IPv6 source's /56 (a prefix shorter than
/// /56 covers every /56 in it). None when `s` is not an address or prefix.
pub fn units_of_clients(s: &str, bits: u8) -> Option<Result<Vec<u16>, Error>> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let units = 1u32 << bits.min(16);
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) if len.is_none() => Some(Ok(vec![(u32::from(a) % units) as u16])),
        std::net::IpAddr::V4(_) => Some(Err(format!(
            "{s:?}: name IPv4 clients by address (their unit is the address's low {bits} bits)"
        )
        .into())),
        std::net::IpAddr::V6(a) => {
            let len: u32 = match len.map(str::parse) {
                None => 128,
                Some(Ok(l)) if l <= 128 => l,
                Some(_) => return Some(Err(format!("{s:?} is not an IPv6 prefix").into())),
            };
            let site = (u128::from(a) >> 72) as u32;
            // The bits of the /56 the prefix leaves free, up to the unit bits.
            let free = 56u32.saturating_sub(len).min(u32::from(bits.min(16)));
            let first = (site % units) & !((1 << free) - 1);
            Some(Ok((first..first + (1 << free)).map(|u| u as u16).collect()))
        }
    }
}

fn connect(socket: &Socket) -> Result<UnixStream, Error> {
    UnixStream::connect(&socket.socket).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is manycast-server running? --socket)",
            socket.socket.display()
        )
        .into()
    })
}

/// One request, one answer; an answer with `ok: false` is an error.
fn ask(socket: &Socket, request: &AdminRequest) -> Result<Answer, Error> {
    let mut s = connect(socket)?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err("the daemon closed the connection without answering".into());
    }
    let answer: Answer = serde_json::from_str(&reply)?;
    if !answer.ok {
        return Err(answer.error.unwrap_or_else(|| "failed".into()).into());
    }
    Ok(answer)
}

fn status(socket: &Socket) -> Result<Status, Error> {
    ask(socket, &AdminRequest::Status {})?
        .status
        .ok_or_else(|| "the daemon sent no status".into())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn epoch_line(s: &Status) -> String {
    match &s.epoch {
        Some(e) => format!(
            "epoch {} (proposed by m{}, digest {}), seen from m{}",
            e.epoch, e.proposer, e.digest, s.me
        ),
        None => format!("no allocation committed yet, seen from m{}", s.me),
    }
}

/// A clock offset in seconds with its sign, `-` when unknown.
fn fmt_offset(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| {
            let sign = if ms < 0 { '-' } else { '+' };
            let a = ms.unsigned_abs();
            format!("{sign}{}.{:03}s", a / 1000, a % 1000)
        },
    )
}

pub fn members_table(s: &Status) -> String {
    let mut out = format!("{}\n", epoch_line(s));
    if s.clock_untimely {
        out.push_str(&format!(
            "m{}'s wall clock is off its peers' beyond the timeliness window: they refuse its control messages as untimely\n",
            s.me
        ));
    }
    out.push_str(&format!(
        "{:<8} {:<5} {:<8} {:>6} {:>12} {:>6} {:>8} {:>6} {:>10}  {}\n",
        "MEMBER",
        "LIVE",
        "HEALTH",
        "WEIGHT",
        "ALLOC-WEIGHT",
        "UNITS",
        "LOAD",
        "EPOCH",
        "CLOCK",
        "STARTED (UTC)"
    ));
    for m in &s.members {
        let name = format!("m{}{}", m.id, if m.me { "*" } else { "" });
        out.push_str(&format!(
            "{:<8} {:<5} {:<8} {:>6} {:>12} {:>6} {:>8} {:>6} {:>10}  {}\n",
            name,
            yes(m.live),
            if m.me { health_word(&s.health) } else { "-" },
            opt(m.weight),
            opt(m.allocation_weight),
            m.units,
            m.load,
            opt(m.committed_epoch),
            fmt_offset(m.clock_offset_ms),
            m.incarnation.map_or_else(|| "-".to_owned(), fmt_time)
        ));
    }
    out.push_str(&health_lines(s));
    if let Some(g) = &s.group6 {
        out.push_str(&format!(
            "IPv6 group {g}: unit n also serves the IPv6 sources whose /56 ends in n (low {} bits; `allocation` lists the slices)\n",
            s.slice_bits
        ));
    }
    out
}

/// This member's health in one word: `-` without checks, `up`, or how the checks hold it out
/// (`degraded`: planned drain; `dead`: its claim withdrawn too).
fn health_word(h: &HealthReport) -> &'static str {
    match (h.checks.is_empty(), h.out) {
        (true, _) => "-",
        (false, None) => "up",
        (false, Some(Exit::Planned)) => "degraded",
        (false, Some(Exit::Immediate)) => "dead",
    }
}

/// One line per health check of this member (none without checks).
fn health_lines(s: &Status) -> String {
    let h = &s.health;
    if h.checks.is_empty() {
        return String::new();
    }
    let mut out = format!("health checks of m{}:\n", s.me);
    for c in &h.checks {
        out.push_str(&format!(
            "  {:<12} {:<4} passes {}/{} fails {}/{}  last {}  ({} {})\n",
            c.name,
            if c.up { "up" } else { "down" },
            c.passes,
            c.rise,
            c.fails,
            c.fall,
            c.last.as_deref().unwrap_or("-"),
            c.kind,
            c.target
        ));
    }
    out
}

fn shorten(slices: &[String], width: usize) -> String {
    let all = slices.join(" ");
    if all.chars().count() <= width {
        return if all.is_empty() { "-".into() } else { all };
    }
    let head: String = all.chars().take(width.saturating_sub(16)).collect();
    format!("{head}... ({} slices)", slices.len())
}

pub fn allocation_table(s: &Status) -> String {
    let mut out = format!("{}\n", epoch_line(s));
    let total_units = s.unit_owner.len().max(1);
    out.push_str(&format!(
        "{:<8} {:>6} {:>7} {:>8}  {}\n",
        "MEMBER", "UNITS", "SHARE", "LOAD", "SLICES"
    ));
    for m in s
        .members
        .iter()
        .filter(|m| m.allocation_weight.is_some() || m.units > 0)
    {
        out.push_str(&format!(
            "{:<8} {:>6} {:>6.1}% {:>8}  {}\n",
            format!("m{}", m.id),
            m.units,
            100.0 * m.units as f64 / total_units as f64,
            m.load,
            shorten(&m.slices, 60)
        ));
        if s.group6.is_some() {
            out.push_str(&format!("{:<33}  IPv6 {}\n", "", shorten(&m.slices6, 55)));
        }
    }
    let unowned = s.unit_owner.iter().filter(|o| o.is_none()).count();
    out.push_str(&format!(
        "{} units of /{} low-order bits, {unowned} unowned; max/mean load per weight {}\n",
        s.unit_owner.len(),
        s.slice_bits,
        s.load_imbalance
            .map_or_else(|| "n/a (no load)".to_owned(), |x| format!("{x:.2}"))
    ));
    out
}

fn frame(s: &Status, events: &VecDeque<AdminEvent>) -> String {
    let c = &s.counters;
    let mut out = members_table(s);
    out.push('\n');
    out.push_str(&allocation_table(s));
    out.push_str(&format!(
        "\nserved {}  filtered {}  sessions {}  resets {}  commits {}  control in/out {}/{}\n",
        c.served, c.filtered, c.sessions, c.resets, c.commits, c.control_accepted, c.control_sent
    ));
    if s.group6.is_some() {
        out.push_str(&format!(
            "IPv6: served {}  filtered {}  sessions {}  resets {}\n",
            c.served6, c.filtered6, c.sessions6, c.resets6
        ));
    }
    out.push_str("\nrecent events:\n");
    if events.is_empty() {
        out.push_str("  (none since watch started)\n");
    }
    for e in events {
        out.push_str(&format!("  {} {}\n", fmt_time(e.at_ms), e.text));
    }
    out
}

/// UTC time of day of a millisecond timestamp.
fn fmt_time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// Streams the daemon's watch lines and redraws until Ctrl-C or the daemon goes away.
fn watch(socket: &Socket) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let stream = tokio::net::UnixStream::connect(&socket.socket)
            .await
            .map_err(|e| format!("cannot reach the daemon at {}: {e}", socket.socket.display()))?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_string(&AdminRequest::Watch {})?;
        line.push('\n');
        w.write_all(line.as_bytes()).await?;
        let mut lines = tokio::io::BufReader::new(r).lines();
        let mut events: VecDeque<AdminEvent> = VecDeque::new();
        let mut last: Option<Status> = None;
        let mut out = std::io::stdout();
        // Hide the cursor while redrawing; shown again on every way out.
        let _ = write!(out, "\x1b[?25l");
        let result: Result<(), Error> = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break Ok(()),
                l = lines.next_line() => match l {
                    Ok(Some(l)) => {
                        match serde_json::from_str::<WatchLine>(&l) {
                            Ok(WatchLine::Status(s)) => last = Some(*s),
                            Ok(WatchLine::Event(e)) => {
                                if events.len() == 10 {
                                    events.pop_front();
                                }
                                events.push_back(e);
                            }
                            Err(e) => break Err(format!("unexpected line from the daemon: {e}").into()),
                        }
                        if let Some(s) = &last {
                            let _ = write!(out, "\x1b[H\x1b[2J{}", frame(s, &events));
                            let _ = out.flush();
                        }
                    }
                    Ok(None) => break Err("the daemon closed the watch".into()),
                    Err(e) => break Err(e.into()),
                },
            }
        };
        let _ = writeln!(out, "\x1b[?25h");
        result
    })
}

pub fn run(command: ClusterCommand) -> Result<(), Error> {
    match command {
        ClusterCommand::Members { socket, json } => {
            let s = status(&socket)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "me": s.me, "epoch": s.epoch, "members": s.members })
                );
            } else {
                print!("{}", members_table(&s));
            }
        }
        ClusterCommand::Allocation { socket, json } => {
            let s = status(&socket)?;
            if json {
                let members: Vec<_> = s
                    .members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id, "units": m.units, "slices": m.slices, "load": m.load,
                            "weight": m.allocation_weight, "slices6": m.slices6,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "epoch": s.epoch, "slice_bits": s.slice_bits, "members": members,
                        "group6": s.group6,
                        "unit_owner": s.unit_owner, "unit_load": s.unit_load,
                        "load_imbalance": s.load_imbalance,
                    })
                );
            } else {
                print!("{}", allocation_table(&s));
            }
        }
        ClusterCommand::Move {
            units,
            to,
            socket,
            operator,
        } => {
            let units = match units_of_clients(&units, status(&socket)?.slice_bits) {
                Some(by_client) => by_client?,
                None => parse_units(&units)?,
            };
            let to = parse_member(&to)?;
            let action = RequestAction::Move {
                units: units.clone(),
                to,
            };
            let request = operator.authorize(AdminRequest::Move { units, to }, Some(action))?;
            report(ask(&socket, &request)?);
        }
        ClusterCommand::Drain {
            member,
            socket,
            operator,
        } => {
            let member = member.as_deref().map(parse_member).transpose()?;
            let action = member.map(|member| RequestAction::Drain { member });
            let request = operator.authorize(AdminRequest::Drain { member }, action)?;
            report(ask(&socket, &request)?);
        }
        ClusterCommand::Resume {
            member,
            socket,
            operator,
        } => {
            let member = member.as_deref().map(parse_member).transpose()?;
            let action = member.map(|member| RequestAction::Resume { member });
            let request = operator.authorize(AdminRequest::Resume { member }, action)?;
            report(ask(&socket, &request)?);
        }
        ClusterCommand::Rebalance { socket, operator } => {
            let request =
                operator.authorize(AdminRequest::Rebalance {}, Some(RequestAction::Rebalance))?;
            report(ask(&socket, &request)?);
        }
        ClusterCommand::Watch { socket, once, json } => {
            if json && !once {
                return Err("--json needs --once (a live view is for people)".into());
            }
            if once {
                let s = status(&socket)?;
                if json {
                    println!("{}", serde_json::to_string(&s)?);
                } else {
                    print!("{}", frame(&s, &VecDeque::new()));
                }
            } else {
                watch(&socket)?;
            }
        }
    }
    Ok(())
}

fn report(a: Answer) {
    match (a.message, a.epoch) {
        (Some(m), Some(e)) => println!("{m} (epoch {e})"),
        (Some(m), None) => println!("{m}"),
        _ => println!("done"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `move` names units by a client: an IPv4 address's low bits, an IPv6 source's /56, every
    /// /56 of a shorter prefix; anything else is a unit list.
    #[test]
    fn units_named_by_client_addresses_and_ipv6_prefixes() {
        let units = |s: &str| units_of_clients(s, 8).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(units("10.1.0.7").unwrap().unwrap(), vec![7]);
        assert!(units("10.1.0.0/24").unwrap().is_err());
        // The /56's low byte, whatever the host part and the subnet within the site.
        assert_eq!(units("2001:db8:0:4ff::1").unwrap().unwrap(), vec![4]);
        assert_eq!(units("2001:db8:1:ab00::/56").unwrap().unwrap(), vec![0xab]);
        assert_eq!(units("2001:db8:1:ab42::/64").unwrap().unwrap(), vec![0xab]);
        // A /54 holds four /56s, a /48 all 256.
        assert_eq!(
            units("2001:db8:1:a800::/54").unwrap().unwrap(),
            vec![0xa8, 0xa9, 0xaa, 0xab]
        );
        assert_eq!(units("2001:db8:1::/48").unwrap().unwrap().len(), 256);
        assert_eq!(
            units_of_clients("2001:db8::1", 2).unwrap().unwrap(),
            vec![0]
        );
        assert!(units("2001:db8::/129").unwrap().is_err());
        assert!(units("3,7").is_none());
        assert!(units("10-19").is_none());
    }

    #[test]
    fn unit_lists_and_member_names() {
        assert_eq!(parse_units("3").unwrap(), vec![3]);
        assert_eq!(parse_units("3, 7,10-12").unwrap(), vec![3, 7, 10, 11, 12]);
        for bad in ["", "x", "5-2", "70000", "1-", "-"] {
            assert!(parse_units(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_member("m2").unwrap(), 2);
        assert_eq!(parse_member("2").unwrap(), 2);
        assert!(parse_member("mm2").is_err());
    }

    /// `members` shows each member's clock offset as this member sees it, and says so when
    /// this member's own clock is the one its peers refuse (issue 17).
    #[test]
    fn members_table_shows_clock_offsets() {
        let member = |id: u32, me: bool, clock_offset_ms: Option<i64>| {
            let json = serde_json::json!({
                "id": id, "me": me, "live": true, "weight": 1, "allocation_weight": 1,
                "committed_epoch": 4, "incarnation": null, "units": 128, "slices": [],
                "load": 0, "clock_offset_ms": clock_offset_ms,
            });
            serde_json::from_value::<manycast_server::admin::protocol::MemberStatus>(json)
                .expect("member status")
        };
        let status = |untimely: bool| Status {
            me: 2,
            incarnation: 0,
            epoch: None,
            slice_bits: 8,
            members: vec![
                member(1, false, Some(60_002)),
                member(2, true, Some(-60_002)),
                member(3, false, None),
            ],
            unit_owner: Vec::new(),
            unit_load: Vec::new(),
            load_imbalance: None,
            counters: Default::default(),
            clock_untimely: untimely,
            health: Default::default(),
            group6: None,
        };
        let table = members_table(&status(true));
        assert!(table.contains("CLOCK"), "{table}");
        assert!(
            table.contains("+60.002s") && table.contains("-60.002s"),
            "{table}"
        );
        assert!(
            table.contains("refuse its control messages as untimely"),
            "{table}"
        );
        let m3 = table
            .lines()
            .find(|l| l.starts_with("m3 "))
            .expect("m3 row");
        assert!(m3.contains(" - "), "{m3}");
        assert!(!members_table(&status(false)).contains("untimely"));
        assert!(m3.contains(" - "), "no health shown for a peer: {m3}");
        // This member's health checks: a word in its row and a line per check.
        let mut s = status(false);
        s.health.out = Some(Exit::Planned);
        s.health.checks.push(manycast_server::health::CheckStatus {
            name: "web".into(),
            kind: "tcp".into(),
            target: "127.0.0.1:80".into(),
            up: false,
            last: Some("slow: no answer within 1000 ms".into()),
            passes: 0,
            fails: 3,
            rise: 2,
            fall: 3,
            pass_total: 9,
            slow_total: 3,
            dead_total: 0,
        });
        let table = members_table(&s);
        let m2 = table
            .lines()
            .find(|l| l.starts_with("m2*"))
            .expect("m2 row");
        assert!(m2.contains("degraded"), "{table}");
        assert!(
            table.contains("  web          down passes 0/2 fails 3/3  last slow: no answer within 1000 ms  (tcp 127.0.0.1:80)"),
            "{table}"
        );
        // A status from a daemon without the fields still parses.
        let old = serde_json::json!({"id": 1, "me": true, "live": true, "weight": 1,
            "allocation_weight": 1, "committed_epoch": 4, "incarnation": null, "units": 0,
            "slices": [], "load": 0});
        let old = serde_json::from_value::<manycast_server::admin::protocol::MemberStatus>(old);
        assert_eq!(old.expect("old member status").clock_offset_ms, None);
    }
}
