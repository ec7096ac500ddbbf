//! The site agent's credentials: each refusal is one line naming what is wrong.

use super::*;
use crate::keyfile::FileKeySource;
use daemon_kit::keys::{write_certificate, write_private_key};
use igmp_ext::fixtures::Fixture;
use igmp_ext::CertificateBody;

const UPPER: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 2);

struct Files {
    dir: tempfile::TempDir,
    fixture: Fixture,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("dir"),
            fixture: Fixture::routers(&[SiteId(7), SiteId(8)]),
        }
    }

    /// A `[site]` section for router key `key_of` and a certificate for router `cert_of` of
    /// the fixture, issued by `issue` from `body`.
    fn section(&self, name: &str, key_of: usize, cert: Option<MemberCertificate>) -> SiteSection {
        let d = self.dir.path();
        let (key, cert_path) = (
            d.join(format!("{name}.key")),
            d.join(format!("{name}.cert")),
        );
        write_private_key(&key, &self.fixture.members[key_of].key).expect("key");
        if let Some(c) = cert {
            write_certificate(&cert_path, &c).expect("cert");
        }
        SiteSection {
            upstream: "up0".into(),
            router_key: key,
            router_certificate: cert_path,
            group: self.fixture.group,
            upper_group: UPPER,
            upper_port: 4790,
            weight: 1,
            slice_bits: 8,
            refresh_ms: 10_000,
            heartbeat_interval_ms: 50,
            down_after_ms: 200,
            max_weight: 16,
        }
    }

    /// Router `i`'s certificate body, listing the service group and the upper group.
    fn body(&self, i: usize) -> CertificateBody {
        let mut body = self.fixture.members[i].cert.body().clone();
        body.groups = vec![self.fixture.group, UPPER];
        body
    }

    fn keys(&self) -> Keys {
        let text = FileKeySource::render(&[self.fixture.group_keys()]);
        Keys::File(FileKeySource::parse(&text).expect("keys"))
    }
}

fn refused(s: &SiteSection, keys: &Keys) -> String {
    match credentials(s, keys) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_router_certificate_for_both_groups_gives_the_site() {
    let f = Files::new();
    let cert = f
        .body(1)
        .issue_router(SiteId(8), &f.fixture.group_key)
        .expect("issue");
    let creds = credentials(&f.section("r", 1, Some(cert)), &f.keys()).expect("accepted");
    assert_eq!(creds.site, SiteId(8));
    assert_eq!(creds.cert.body().member_id, f.fixture.members[1].id);
}

#[test]
fn wrong_or_missing_credentials_are_refused_with_what_is_wrong() {
    let f = Files::new();
    let keys = f.keys();
    let router = |i: usize| f.body(i).issue_router(SiteId(7), &f.fixture.group_key);
    // No certificate file.
    let e = refused(&f.section("none", 0, None), &keys);
    assert!(e.contains("none.cert"), "{e}");
    // The key of router 1 with router 0's certificate.
    let e = refused(&f.section("other", 1, Some(router(0).unwrap())), &keys);
    assert!(e.contains("certifies another key"), "{e}");
    // A member certificate: no site.
    let member = f.body(0).issue(&f.fixture.group_key).expect("issue");
    let e = refused(&f.section("member", 0, Some(member)), &keys);
    assert!(e.contains("names no site"), "{e}");
    // Not for the upper group.
    let mut body = f.body(0);
    body.groups.retain(|g| *g != UPPER);
    let narrow = body.issue_router(SiteId(7), &f.fixture.group_key).unwrap();
    let e = refused(&f.section("narrow", 0, Some(narrow)), &keys);
    assert!(e.contains("does not allow upper_group 239.77.0.2"), "{e}");
    // Issued by another group key.
    let stranger = igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let mut body = f.body(0);
    body.issuer = igmp_ext::KeyId::of(&stranger.verifying_key());
    let forged = body.issue_router(SiteId(7), &stranger).unwrap();
    let e = refused(&f.section("forged", 0, Some(forged)), &keys);
    assert!(e.contains("not issued by a group key"), "{e}");
    // A key file others can read.
    let s = f.section("loose", 0, Some(router(0).unwrap()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s.router_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = refused(&s, &keys);
    assert!(e.contains("readable by group or others"), "{e}");
}

#[test]
fn check_config_checks_the_router_credentials_with_a_key_file() {
    let f = Files::new();
    let good = f
        .body(0)
        .issue_router(SiteId(7), &f.fixture.group_key)
        .unwrap();
    let s = f.section("r", 0, Some(good));
    let config = |cert: &std::path::Path| {
        Config::parse(&format!(
            "interfaces = [\"m0\"]\nkeys = \"/k\"\n[site]\nupstream = \"up0\"\n\
             router_key = \"{}\"\nrouter_certificate = \"{}\"\ngroup = \"{}\"\n\
             upper_group = \"{UPPER}\"\n",
            s.router_key.display(),
            cert.display(),
            f.fixture.group
        ))
        .expect("config")
    };
    assert!(check_credentials(&config(&s.router_certificate), &f.keys()).is_ok());
    let e = check_credentials(&config(&f.dir.path().join("gone.cert")), &f.keys())
        .expect_err("no certificate file");
    assert!(e.to_string().contains("gone.cert"), "{e}");
    let plain = Config::parse("interfaces = [\"m0\"]\nkeys = \"/k\"\n").expect("config");
    assert!(
        check_credentials(&plain, &f.keys()).is_ok(),
        "no [site]: nothing to check"
    );
}
