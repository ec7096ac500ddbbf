//! The admin socket (`admin_socket`, a unix stream socket, mode 0600) and the HTTP metrics
//! listener: the tasks that read request lines, run their steps against the control endpoint
//! (through the driver's [`Requester`]) and write the answers or the `watch` stream. Dropping
//! the [`AdminServer`] stops them and removes the socket file.

use super::hub::Hub;
use super::protocol::{AdminEvent, AdminRequest, Answer, Status, WatchLine};
use super::requests::{self, Precheck, Step, Until, ACTION_TIMEOUT};
use super::status::status_of;
use control_channel::driver::Requester;
use control_channel::endpoint::move_units;
use igmp_ext::MemberId;
use serde::Serialize;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

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
        tasks.spawn(daemon_kit::metrics::serve_http(l, move || {
            hub.snapshot().render()
        }));
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
    let mut events = hub.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let line = tokio::select! {
            _ = tick.tick() => match current_status(requester, hub).await {
                Some(s) => WatchLine::Status(Box::new(s)),
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

/// Waits until `until` holds for the status, up to [`ACTION_TIMEOUT`].
async fn wait_for(requester: &Requester, hub: &Hub, until: &Until) -> Option<Status> {
    let deadline = tokio::time::Instant::now() + ACTION_TIMEOUT;
    loop {
        let s = current_status(requester, hub).await?;
        if until.holds(&s) {
            return Some(s);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The endpoint's local check of `request` (the rebalance plan, the move's validity).
async fn precheck(request: &AdminRequest, requester: &Requester) -> Precheck {
    match request {
        AdminRequest::Rebalance {} => Precheck::Rebalance(
            requester
                .query(|ep, _| {
                    ep.committed().map(|c| {
                        let load = ep.unit_loads();
                        let next = c.allocation.rebalanced_by_load(&c.members(), &load);
                        (c.allocation.moved(&next), next == c.allocation)
                    })
                })
                .await
                .flatten(),
        ),
        AdminRequest::Move { units, to } => {
            let (units, to) = (units.clone(), *to);
            Precheck::Move(
                requester
                    .query(move |ep, _| {
                        let c = ep.committed()?;
                        Some(
                            move_units(&c.allocation, &units, MemberId(to), &ep.unit_loads())
                                .map(drop),
                        )
                    })
                    .await
                    .flatten(),
            )
        }
        _ => Precheck::None,
    }
}

/// Runs one request's steps: the status before, the local check, the control request and the
/// wait for its result.
async fn handle(request: AdminRequest, requester: &Requester, hub: &Hub) -> Answer {
    let (request, authority) = match request {
        AdminRequest::Authorized { authority, request } => (*request, Some(authority)),
        other => (other, None),
    };
    if matches!(request, AdminRequest::Authorized { .. }) {
        return Answer::error("bad request: an authorized request inside another");
    }
    let Some(before) = current_status(requester, hub).await else {
        return Answer::error("control channel stopped");
    };
    let check = precheck(&request, requester).await;
    match requests::plan(request, &before, check) {
        Step::Answer(a) => *a,
        Step::Request { action, until } => {
            requester.with(move |ep, now| {
                ep.request_with_authority(now, action, authority);
            });
            match wait_for(requester, hub, &until).await {
                Some(s) => until.done(&s),
                None => until.not_committed(&before),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
