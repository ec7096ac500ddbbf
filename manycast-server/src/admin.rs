//! The admin socket (`admin_socket`, a unix stream socket, mode 0600): one JSON object per line
//! in each direction; `manycastctl` is its client. Requests: `status`, `move`, `drain`,
//! `resume`, `rebalance` and `watch` (a stream of status frames and events). Moves, drains and
//! rebalances become control-channel requests (SPEC.md §9.4, "Requests"); the answer comes when
//! the cluster has committed the result, or says why it did not.
//!
//! The daemon keeps a [`Hub`] (events and counters in) and an [`AdminServer`] (the listening
//! task, plus the HTTP metrics listener when `metrics_listen` is set); dropping the server stops
//! both and removes the socket file.

use crate::metrics::{self, Snapshot};
use control_channel::driver::Requester;
use control_channel::endpoint::move_units;
use control_channel::wire::RequestAction;
use control_channel::{Endpoint, Event, RequestOutcome};
use igmp_ext::{MemberId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How long an action waits for the cluster to commit its result.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum AdminRequest {
    // Empty braces rather than unit variants: serde's deny_unknown_fields then refuses extra
    // keys on these too.
    Status {},
    /// Give `units` to member `to` (a swap within quotas).
    Move {
        units: Vec<u16>,
        to: u32,
    },
    /// Drain `member` (default: this daemon's member).
    Drain {
        #[serde(default)]
        member: Option<u32>,
    },
    /// Undo a drain of `member` (default: this daemon's member).
    Resume {
        #[serde(default)]
        member: Option<u32>,
    },
    /// Swap units between members to lower max/mean load.
    Rebalance {},
    /// Stream a status frame every second and every event as it happens.
    Watch {},
}

/// One answer line (`watch` streams [`WatchLine`]s instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The epoch in force after an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Answer {
    fn error(e: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(e.into()),
            ..Answer::default()
        }
    }
    fn done(message: String, epoch: Option<u64>) -> Self {
        Answer {
            ok: true,
            message: Some(message),
            epoch,
            ..Answer::default()
        }
    }
}

/// A line of a `watch` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchLine {
    Status(Status),
    Event(AdminEvent),
}

/// Something that happened at this member, for `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEvent {
    pub at_ms: u64,
    /// member-up, member-down, member-left, committed, request.
    pub kind: String,
    pub text: String,
}

impl AdminEvent {
    /// The events worth showing an operator; `None` for the rest (transfers, forwards).
    pub fn from_event(at: Timestamp, e: &Event) -> Option<Self> {
        let (kind, text) = match e {
            Event::MemberUp(m) => ("member-up", format!("member {m} up")),
            Event::MemberDown(m) => ("member-down", format!("member {m} down")),
            Event::MemberLeft(m) => ("member-left", format!("member {m} left")),
            Event::Committed { id, slices, .. } => (
                "committed",
                format!("committed {id}: {} slices here", slices.len()),
            ),
            Event::Request {
                from,
                action,
                outcome,
                ..
            } => (
                "request",
                format!(
                    "request from {from}: {} -> {}",
                    describe_action(action),
                    describe_outcome(outcome)
                ),
            ),
            _ => return None,
        };
        Some(AdminEvent {
            at_ms: at.0,
            kind: kind.to_owned(),
            text,
        })
    }
}

fn describe_action(a: &RequestAction) -> String {
    match a {
        RequestAction::Rebalance => "rebalance".into(),
        RequestAction::Move { units, to } => format!("move {} units to m{to}", units.len()),
        RequestAction::Drain { member } => format!("drain m{member}"),
        RequestAction::Resume { member } => format!("resume m{member}"),
        _ => "unknown action".into(),
    }
}

fn describe_outcome(o: &RequestOutcome) -> String {
    match o {
        RequestOutcome::Proposed(id) => format!("proposed {id}"),
        RequestOutcome::Unchanged => "unchanged".into(),
        RequestOutcome::NotForMe => "not for this member".into(),
        RequestOutcome::Drained => "drained".into(),
        RequestOutcome::Resumed => "resumed".into(),
        RequestOutcome::Refused(r) => format!("refused: {r}"),
        _ => "unknown outcome".into(),
    }
}

/// The cluster as this member sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub me: u32,
    /// This member's start time (ms), the incarnation in its epoch ids.
    pub incarnation: u64,
    pub epoch: Option<EpochStatus>,
    /// Low-order bits cutting the space into units.
    pub slice_bits: u8,
    pub members: Vec<MemberStatus>,
    /// Owner of each unit (member id), by unit number.
    pub unit_owner: Vec<Option<u32>>,
    /// Datagrams answered per unit in the load window, as the members report it.
    pub unit_load: Vec<u64>,
    /// Max over mean of the members' load per weight (1.0 = even); none without load.
    pub load_imbalance: Option<f64>,
    pub counters: CounterStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStatus {
    pub epoch: u64,
    pub proposer: u32,
    pub incarnation: u64,
    /// First 8 bytes of the allocation's digest, hex.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u32,
    pub me: bool,
    /// Live in this member's view (always true for itself unless it left).
    pub live: bool,
    /// The weight it last announced.
    pub weight: Option<u32>,
    /// The weight the committed allocation gave it; none if it is not in the allocation.
    pub allocation_weight: Option<u32>,
    /// The epoch it advertises as committed.
    pub committed_epoch: Option<u64>,
    /// When it started (ms since the Unix epoch), as its sequence numbers tell.
    pub incarnation: Option<u64>,
    pub units: usize,
    pub slices: Vec<String>,
    pub load: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CounterStatus {
    pub served: u64,
    pub filtered: u64,
    pub resets: u64,
    pub sessions: u64,
    pub joins_sent: u64,
    pub commits: u64,
    pub control_accepted: u64,
    pub control_sent: u64,
    pub control_dropped: BTreeMap<String, u64>,
}

impl CounterStatus {
    fn of(s: &Snapshot) -> Self {
        CounterStatus {
            served: s.service.served,
            filtered: s.service.filtered,
            resets: s.service.resets,
            sessions: s.sessions as u64,
            joins_sent: s.joins_sent,
            commits: s.commits,
            control_accepted: s.control.accepted,
            control_sent: s.control.sent,
            control_dropped: s
                .control
                .dropped
                .iter()
                .map(|(r, n)| (r.as_str().to_owned(), *n))
                .collect(),
        }
    }
}

/// The status of `ep`, with the daemon's counters.
pub fn status_of(ep: &Endpoint, counters: &Snapshot) -> Status {
    let me = ep.id();
    let live: BTreeSet<MemberId> = ep.live_members().into_iter().collect();
    let committed = ep.committed();
    let in_allocation: BTreeMap<MemberId, u32> = committed
        .map(|c| c.members())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut ids: BTreeSet<MemberId> = ep.known_peers().into_iter().collect();
    ids.insert(me);
    ids.extend(in_allocation.keys().copied());
    let unit_load = ep.unit_loads();
    let slicing = ep.config().slicing;
    let members = ids
        .into_iter()
        .map(|m| {
            let (units, slices, load) = match committed {
                Some(c) => {
                    let a = &c.allocation;
                    let load = a
                        .unit_owners()
                        .iter()
                        .zip(&unit_load)
                        .filter(|(o, _)| **o == Some(m))
                        .map(|(_, l)| *l)
                        .sum();
                    let slices = a.slices_of(m).iter().map(|s| s.to_string()).collect();
                    (a.units_of(m), slices, load)
                }
                None => (0, Vec::new(), 0),
            };
            MemberStatus {
                id: m.0,
                me: m == me,
                live: live.contains(&m),
                weight: ep.weight_of(m),
                allocation_weight: in_allocation.get(&m).copied(),
                committed_epoch: if m == me {
                    committed.map(|c| c.id().epoch)
                } else {
                    ep.peer_committed(m).map(|id| id.epoch)
                },
                incarnation: ep.peer_incarnation(m).map(|t| t.0),
                units,
                slices,
                load,
            }
        })
        .collect();
    Status {
        me: me.0,
        incarnation: ep.incarnation().0,
        epoch: committed.map(|c| EpochStatus {
            epoch: c.id().epoch,
            proposer: c.id().proposer,
            incarnation: c.id().incarnation,
            digest: c.digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }),
        slice_bits: slicing.bits(),
        members,
        unit_owner: committed.map_or_else(
            || vec![None; slicing.unit_count()],
            |c| {
                c.allocation
                    .unit_owners()
                    .iter()
                    .map(|o| o.map(|m| m.0))
                    .collect()
            },
        ),
        load_imbalance: committed
            .and_then(|c| c.allocation.load_imbalance(&c.members(), &unit_load)),
        unit_load,
        counters: CounterStatus::of(counters),
    }
}

/// What the daemon feeds the admin side: events as they happen, counters every second.
#[derive(Debug, Clone)]
pub struct Hub {
    events: broadcast::Sender<AdminEvent>,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Hub {
    pub fn new(snapshot: Snapshot) -> Self {
        Hub {
            events: broadcast::channel(256).0,
            snapshot: Arc::new(Mutex::new(snapshot)),
        }
    }

    /// A control-channel event happened (no-op for kinds `watch` does not show).
    pub fn publish(&self, at: Timestamp, e: &Event) {
        if let Some(a) = AdminEvent::from_event(at, e) {
            // No subscriber is fine.
            let _ = self.events.send(a);
        }
    }

    /// The daemon's latest counters.
    pub fn set_snapshot(&self, s: &Snapshot) {
        if let Ok(mut g) = self.snapshot.lock() {
            *g = s.clone();
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The running admin socket (and HTTP metrics listener); dropping it stops them and removes
/// the socket file.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    tasks: JoinSet<()>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.tasks.abort_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (0600; its directory is created 0755 if missing). A socket file nobody answers
/// on is stale and replaced; one a live daemon answers on is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another daemon answers on it (set admin_socket)",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Starts serving `admin` on `listener` and, with `metrics`, Prometheus text over HTTP.
pub fn start(
    path: &Path,
    listener: UnixListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    requester: Requester,
    hub: Hub,
) -> AdminServer {
    let mut tasks = JoinSet::new();
    if let Some(l) = metrics_listener {
        let hub = hub.clone();
        tasks.spawn(metrics::serve_http(l, move || hub.snapshot().render()));
    }
    tasks.spawn(accept_loop(listener, requester, hub));
    info!(socket = %path.display(), "admin socket listening");
    AdminServer {
        path: path.to_owned(),
        tasks,
    }
}

async fn accept_loop(listener: UnixListener, requester: Requester, hub: Hub) {
    // Connections live in this set: aborting the loop aborts them and drops their requesters,
    // so the control driver can stop.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            c = listener.accept() => match c {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, requester.clone(), hub.clone()));
                }
                Err(e) => {
                    warn!("admin socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn write_line<T: Serialize>(w: &mut tokio::net::unix::OwnedWriteHalf, v: &T) -> bool {
    let Ok(mut line) = serde_json::to_string(v) else {
        return false;
    };
    line.push('\n');
    w.write_all(line.as_bytes()).await.is_ok()
}

async fn serve(stream: UnixStream, requester: Requester, hub: Hub) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_LINE as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_LINE {
            let _ = write_line(&mut w, &Answer::error("request line too long")).await;
            return;
        }
        let request: AdminRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                if !write_line(&mut w, &Answer::error(format!("bad request: {e}"))).await {
                    return;
                }
                continue;
            }
        };
        debug!(?request, "admin request");
        if matches!(request, AdminRequest::Watch {}) {
            watch(&mut w, &requester, &hub).await;
            return;
        }
        let answer = handle(request, &requester, &hub).await;
        if !write_line(&mut w, &answer).await {
            return;
        }
    }
}

async fn current_status(requester: &Requester, hub: &Hub) -> Option<Status> {
    let snapshot = hub.snapshot();
    requester.query(move |ep, _| status_of(ep, &snapshot)).await
}

async fn watch(w: &mut tokio::net::unix::OwnedWriteHalf, requester: &Requester, hub: &Hub) {
    let mut events = hub.events.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let line = tokio::select! {
            _ = tick.tick() => match current_status(requester, hub).await {
                Some(s) => WatchLine::Status(s),
                None => return,
            },
            e = events.recv() => match e {
                Ok(e) => WatchLine::Event(e),
                Err(broadcast::error::RecvError::Lagged(n)) => WatchLine::Event(AdminEvent {
                    at_ms: 0,
                    kind: "lagged".into(),
                    text: format!("{n} events not shown (slow reader)"),
                }),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !write_line(w, &line).await {
            return;
        }
    }
}

/// Waits until `done` holds for the status, up to [`ACTION_TIMEOUT`].
async fn wait_for(
    requester: &Requester,
    hub: &Hub,
    mut done: impl FnMut(&Status) -> bool,
) -> Option<Status> {
    let deadline = tokio::time::Instant::now() + ACTION_TIMEOUT;
    loop {
        let s = current_status(requester, hub).await?;
        if done(&s) {
            return Some(s);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn epoch_of(s: &Status) -> u64 {
    s.epoch.as_ref().map_or(0, |e| e.epoch)
}

fn units_of(s: &Status, member: u32) -> usize {
    s.unit_owner.iter().filter(|o| **o == Some(member)).count()
}

fn not_committed(what: &str, s: Option<&Status>) -> Answer {
    let coordinator = s
        .and_then(|s| s.members.iter().find(|m| m.live))
        .map_or_else(|| "?".to_owned(), |m| format!("m{}", m.id));
    Answer::error(format!(
        "{what}: not committed within {} s (the coordinator {coordinator} may be busy with \
         another change or have refused it; see its log, then try again)",
        ACTION_TIMEOUT.as_secs()
    ))
}

async fn handle(request: AdminRequest, requester: &Requester, hub: &Hub) -> Answer {
    let Some(before) = current_status(requester, hub).await else {
        return Answer::error("control channel stopped");
    };
    match request {
        AdminRequest::Status {} => Answer {
            ok: true,
            status: Some(before),
            ..Answer::default()
        },
        AdminRequest::Rebalance {} => {
            // Computed here first: the coordinator sees the same reported loads.
            let plan = requester
                .query(|ep, _| {
                    ep.committed().map(|c| {
                        let load = ep.unit_loads();
                        let next = c.allocation.rebalanced_by_load(&c.members(), &load);
                        (c.allocation.moved(&next), next == c.allocation)
                    })
                })
                .await
                .flatten();
            let Some((moves, unchanged)) = plan else {
                return Answer::error("no committed allocation yet");
            };
            if unchanged {
                return Answer::done(
                    format!(
                        "already balanced (max/mean load {})",
                        fmt_imbalance(before.load_imbalance)
                    ),
                    Some(epoch_of(&before)),
                );
            }
            let e0 = epoch_of(&before);
            requester.with(|ep, now| {
                ep.request(now, RequestAction::Rebalance);
            });
            match wait_for(requester, hub, |s| epoch_of(s) > e0).await {
                Some(s) => Answer::done(
                    format!(
                        "rebalanced: {moves} units moved, max/mean load {} -> {}",
                        fmt_imbalance(before.load_imbalance),
                        fmt_imbalance(s.load_imbalance)
                    ),
                    Some(epoch_of(&s)),
                ),
                None => not_committed("rebalance", Some(&before)),
            }
        }
        AdminRequest::Move { units, to } => {
            let (u, t) = (units.clone(), to);
            let check = requester
                .query(move |ep, _| {
                    let c = ep.committed()?;
                    Some(move_units(&c.allocation, &u, MemberId(t), &ep.unit_loads()))
                })
                .await
                .flatten();
            match check {
                None => return Answer::error("no committed allocation yet"),
                Some(Err(e)) => return Answer::error(format!("move refused: {e}")),
                Some(Ok(_)) => {}
            }
            if units
                .iter()
                .all(|&u| before.unit_owner.get(usize::from(u)) == Some(&Some(to)))
            {
                return Answer::done(
                    format!("m{to} owns those units already"),
                    Some(epoch_of(&before)),
                );
            }
            let action = RequestAction::Move {
                units: units.clone(),
                to,
            };
            requester.with(move |ep, now| {
                ep.request(now, action);
            });
            let done = |s: &Status| {
                units
                    .iter()
                    .all(|&u| s.unit_owner.get(usize::from(u)) == Some(&Some(to)))
            };
            match wait_for(requester, hub, done).await {
                Some(s) => Answer::done(
                    format!("moved {} units to m{to}", units.len()),
                    Some(epoch_of(&s)),
                ),
                None => not_committed("move", Some(&before)),
            }
        }
        AdminRequest::Drain { member } | AdminRequest::Resume { member } => {
            let drain = matches!(request, AdminRequest::Drain { .. });
            let member = member.unwrap_or(before.me);
            if !before.members.iter().any(|m| m.id == member) {
                return Answer::error(format!("unknown member m{member}"));
            }
            let action = if drain {
                RequestAction::Drain { member }
            } else {
                RequestAction::Resume { member }
            };
            requester.with(move |ep, now| {
                ep.request(now, action);
            });
            let done = |s: &Status| {
                let weight = s
                    .members
                    .iter()
                    .find(|m| m.id == member)
                    .and_then(|m| m.allocation_weight);
                if drain {
                    units_of(s, member) == 0 && weight.is_none_or(|w| w == 0)
                } else {
                    weight.is_some_and(|w| w > 0)
                }
            };
            let what = if drain { "drain" } else { "resume" };
            match wait_for(requester, hub, done).await {
                Some(s) => Answer::done(
                    format!(
                        "{}: m{member} owns {} units",
                        if drain { "drained" } else { "resumed" },
                        units_of(&s, member)
                    ),
                    Some(epoch_of(&s)),
                ),
                None => not_committed(what, Some(&before)),
            }
        }
        AdminRequest::Watch {} => Answer::error("watch is a stream; send it alone"),
    }
}

fn fmt_imbalance(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_bad_ones_are_refused() {
        let ok = [
            (r#"{"cmd":"status"}"#, AdminRequest::Status {}),
            (r#"{"cmd":"rebalance"}"#, AdminRequest::Rebalance {}),
            (r#"{"cmd":"watch"}"#, AdminRequest::Watch {}),
            (
                r#"{"cmd":"move","units":[1,2],"to":3}"#,
                AdminRequest::Move {
                    units: vec![1, 2],
                    to: 3,
                },
            ),
            (r#"{"cmd":"drain"}"#, AdminRequest::Drain { member: None }),
            (
                r#"{"cmd":"resume","member":2}"#,
                AdminRequest::Resume { member: Some(2) },
            ),
        ];
        for (line, want) in ok {
            assert_eq!(serde_json::from_str::<AdminRequest>(line).unwrap(), want);
            // And the client's encoding is what the server reads.
            let back = serde_json::to_string(&want).unwrap();
            assert_eq!(serde_json::from_str::<AdminRequest>(&back).unwrap(), want);
        }
        for bad in [
            "",
            "{}",
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"move","units":[70000],"to":1}"#,
            r#"{"cmd":"move","units":[1]}"#,
            r#"{"cmd":"status","extra":1}"#,
            r#"{"cmd":"drain","member":-1}"#,
            "[1,2,3]",
        ] {
            assert!(serde_json::from_str::<AdminRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_for_watch() {
        let at = Timestamp(5);
        let e = AdminEvent::from_event(at, &Event::MemberDown(MemberId(3))).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.text.as_str()),
            ("member-down", "member m3 down")
        );
        let e = AdminEvent::from_event(
            at,
            &Event::Request {
                from: MemberId(2),
                request_id: 1,
                action: RequestAction::Move {
                    units: vec![1, 2],
                    to: 1,
                },
                outcome: RequestOutcome::Refused(control_channel::RequestRefusal::BadUnit),
            },
        )
        .unwrap();
        assert_eq!(e.kind, "request");
        assert!(e.text.contains("move 2 units to m1"), "{}", e.text);
        assert!(
            e.text.contains("refused: unit number out of range"),
            "{}",
            e.text
        );
    }

    #[test]
    fn bind_is_private_replaces_stale_files_and_refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = bind(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let e = bind(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            drop(l);
            // The file stays behind a dead listener: stale, replaced.
            assert!(path.exists());
            bind(&path).unwrap();
        });
    }
}
