//! Recovery after a keystore outage (issue 17, item 5), shared by the test (`outage.rs`) and
//! `benches/faults.rs`: the real daemon with a 1 s record TTL, the real client watching one
//! group with 1 s of `max_stale` and a long refresh interval; the daemon stops answering
//! (SIGSTOP, or SIGKILL and a restart on the same port and state directory) until the cached
//! keys expire, then answers again, and the trial measures how long until the client has valid
//! keys.

use super::daemon::{Daemon, ZONE};
use daemon_kit::wall_clock;
use dns_keystore::admin::Admin;
use dns_keystore::client::{ClientConfig, KeystoreClient};
use dns_keystore::record::GroupRecord;
use igmp_ext::fixtures::Fixture;
use igmp_ext::verify::{KeyLookupError, KeySource};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's config for these trials: records live 1 s in caches.
pub const DAEMON_EXTRA: &str = "record_ttl = 1";
/// The benchmark's refresh interval: long, so that waiting for the tick would show in the
/// figures (the client before issue 17 waited for it: 0-10 s).
#[allow(dead_code)] // used by benches/faults.rs, which includes this file
pub const BENCH_REFRESH: Duration = Duration::from_secs(10);
/// The tests' refresh interval: so long that only the retry schedule or a lookup's wake-up can
/// bring the keys back before a trial gives up.
pub const TEST_REFRESH: Duration = Duration::from_secs(3600);
/// Give up on a trial after this long: a hang guard, far above what recovery takes.
const GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// SIGSTOP, then SIGCONT: queries sent meanwhile wait in the daemon's socket.
    Stop,
    /// SIGKILL, then a restart on the same port and state directory: queries are refused.
    Restart,
}

/// How the trial looks at the client while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Lookups through `KeySource`, as the verifier makes for each join (every 20 ms).
    Lookups,
    /// `has_usable_keys`, which wakes nothing: a router that receives no joins meanwhile.
    Quiet,
}

/// Publishes `f`'s group record with a 1 s TTL.
pub async fn publish(d: &Daemon, f: &Fixture) {
    let key = std::fs::read(d.state().join("tsig.key")).expect("tsig key");
    let admin = Admin::new(d.addr, ZONE, "manycast-admin", key, 1).expect("admin client");
    admin.publish(&record(f)).await.expect("publish");
}

fn record(f: &Fixture) -> GroupRecord {
    GroupRecord {
        vip: None,
        ..super::daemon::group_record(f)
    }
}

/// A client of `d` watching `group`, its refresher started, with valid keys already.
pub async fn watching_client(
    d: &Daemon,
    group: Ipv4Addr,
    refresh: Duration,
) -> Arc<KeystoreClient> {
    let mut config = ClientConfig::new(d.addr, d.anchor());
    config.max_stale = Duration::from_secs(1);
    let client = Arc::new(KeystoreClient::new(config));
    client.watch(group);
    client.refresh_due(wall_clock()).await;
    let _refresher = client.spawn_refresher(refresh);
    wait_for(&client, group, Probe::Quiet, |ok| ok, "first keys").await;
    client
}

fn signal(d: &Daemon, sig: nix::sys::signal::Signal) {
    let child = d.child.as_ref().expect("daemon is running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal the daemon");
}

/// Polls the client every 20 ms until `want(has valid keys)`; returns when that became true.
async fn wait_for(
    client: &KeystoreClient,
    group: Ipv4Addr,
    probe: Probe,
    want: impl Fn(bool) -> bool,
    what: &str,
) -> Instant {
    let start = Instant::now();
    loop {
        let now = wall_clock();
        let ok = match probe {
            Probe::Quiet => client.has_usable_keys(group, now),
            Probe::Lookups => match client.group_keys(group, now) {
                Ok(_) => true,
                Err(KeyLookupError::Unavailable(_)) => false,
                Err(e) => panic!("lookup of {group}: {e}"),
            },
        };
        if want(ok) {
            return Instant::now();
        }
        assert!(start.elapsed() < GIVE_UP, "{what}: not after {GIVE_UP:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One outage: the daemon stops answering until `client`'s keys for `group` have expired (the
/// client fails closed), then answers again. Returns the time from its answering again (SIGCONT
/// sent, or the restarted daemon's first answer to `dig`) to the client's valid keys.
pub async fn trial(
    d: &mut Daemon,
    client: &KeystoreClient,
    group: Ipv4Addr,
    outage: Outage,
    probe: Probe,
) -> Duration {
    match outage {
        Outage::Stop => signal(d, nix::sys::signal::Signal::SIGSTOP),
        Outage::Restart => d.kill(),
    }
    wait_for(client, group, probe, |ok| !ok, "keys expired").await;
    // Fail closed for a while longer, so that the refresher is well into its backoff.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back = match outage {
        Outage::Stop => {
            signal(d, nix::sys::signal::Signal::SIGCONT);
            Instant::now()
        }
        Outage::Restart => {
            tokio::task::block_in_place(|| d.spawn());
            Instant::now()
        }
    };
    let valid = wait_for(client, group, probe, |ok| ok, "keys after the outage").await;
    valid.saturating_duration_since(back)
}
