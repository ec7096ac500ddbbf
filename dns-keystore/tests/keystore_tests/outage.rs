//! Issue 17, item 5: after a keystore outage long enough for cached keys to expire, the client
//! has valid keys again within a second of the keystore answering, although its refresh
//! interval is 10 s (before: at the next tick, up to 10 s later). Trials in `recover.rs`.

use super::daemon::Daemon;
use super::recover::{self, Outage, Probe};
use igmp_ext::fixtures::Fixture;
use std::time::Duration;

async fn recovery(tag: &str, outage: Outage, probe: Probe) {
    let mut d = Daemon::start_with(tag, recover::DAEMON_EXTRA);
    let f = Fixture::new(1);
    recover::publish(&d, &f).await;
    let client = recover::watching_client(&d, f.group).await;
    let took = recover::trial(&mut d, &client, f.group, outage, probe).await;
    assert!(
        took < Duration::from_secs(1),
        "{outage:?}/{probe:?}: valid keys {took:?} after the keystore answered again (refresh interval {:?})",
        recover::REFRESH
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_return_within_a_second_of_a_stopped_keystore_answering_while_joins_arrive() {
    recovery("outage-stop", Outage::Stop, Probe::Lookups).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_return_within_a_second_of_a_restarted_keystore_answering_without_lookups() {
    recovery("outage-restart", Outage::Restart, Probe::Quiet).await;
}
