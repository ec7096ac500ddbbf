//! Any bytes as a query's additional data, read for a scope notice (SPEC.md §3.10) and verified
//! with the router fixture's keys: no panic; a notice that verifies names the site of a fixture
//! router's certificate (a fuzzer cannot forge Ed25519: it comes from a seed), and keeping it
//! never takes an older one over a newer.
#![no_main]
use igmp_ext::fixtures::{Fixture, NOW};
use igmp_ext::scope::{NewestScopes, UnverifiedScopeNotice};
use igmp_ext::SiteId;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let f = FIXTURE.get_or_init(|| Fixture::routers(&[SiteId(1), SiteId(2)]));
    let Ok(Some(notice)) = UnverifiedScopeNotice::parse(data) else {
        return;
    };
    let claimed = notice.unverified();
    assert_eq!(claimed.units.len(), claimed.slicing.unit_count());
    if let Ok(scope) = notice.verify(&f.key_source(), NOW, Duration::from_secs(30)) {
        let router = f.members.iter().find(|m| m.id == scope.router);
        assert_eq!(router.and_then(|m| m.cert.site()), Some(scope.site));
        let mut kept = NewestScopes::new();
        assert!(kept.offer(scope.clone()).is_ok());
        assert_eq!(kept.current(scope.group), Some(&scope));
    }
});
