//! The `manycast-server` command line: bad configuration and mismatched keys stop it with one
//! line and exit status 2; a good one passes `--check-config`.

use igmp_ext::fixtures::Fixture;
use manycast_server::keys;
use std::process::Command;

fn server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_manycast-server"))
        .args(args)
        .output()
        .expect("run manycast-server")
}

fn config(dir: &std::path::Path, cert: &str) -> String {
    let p = dir.join("server.toml");
    std::fs::write(
        &p,
        format!(
            "group = \"232.1.1.1\"\ninterface = \"lo\"\nmember_key = \"{d}/m1.key\"\n\
             member_cert = \"{d}/{cert}\"\ngroup_pub = \"{d}/group.pub\"\n\
             [control]\ngroup = \"232.1.1.2\"\n",
            d = dir.display()
        ),
    )
    .expect("write config");
    p.to_string_lossy().into_owned()
}

#[test]
fn help_bad_config_and_mismatched_keys() {
    let out = server(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check-config"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "group = \"1.2.3.4\"\n").unwrap();
    let out = server(&["--config", bad.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");

    // Fixture certificates allow only 232.1.1.1: the control group 232.1.1.2 is refused.
    let f = Fixture::new(2);
    let d = dir.path();
    keys::write_public_key(&d.join("group.pub"), &f.group_key.verifying_key()).unwrap();
    keys::write_private_key(&d.join("m1.key"), &f.members[0].key).unwrap();
    keys::write_certificate(&d.join("m1.cert"), &f.members[0].cert).unwrap();
    keys::write_certificate(&d.join("m2.cert"), &f.members[1].cert).unwrap();
    let out = server(&["--config", &config(d, "m1.cert"), "--check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not allow control.group 232.1.1.2"),
        "{err}"
    );
    // Member 2's certificate with member 1's key: another key.
    let out = server(&["--config", &config(d, "m2.cert"), "--check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("certifies another key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `control.routed` needs the control group on the service interface: the router carries the
/// group for the interface and address the shared join came from (SPEC.md §11.2).
#[test]
fn a_routed_control_group_on_another_interface_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("routed.toml");
    std::fs::write(
        &p,
        "group = \"232.1.1.1\"\ninterface = \"eth0\"\nmember_key = \"k\"\nmember_cert = \"c\"\n\
         group_pub = \"g\"\n[control]\ninterface = \"eth1\"\nrouted = true\n",
    )
    .unwrap();
    let out = server(&["--config", p.to_str().unwrap(), "--check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("control.routed needs the control group on the service interface"),
        "{err}"
    );
}

/// `group6` needs a version 2 certificate whose IPv6 section lists it: a version 1 certificate
/// (or one listing another IPv6 group) stops the start with one line; one listing it passes.
#[test]
fn group6_needs_a_certificate_listing_it() {
    use igmp_ext::cert::Ipv6Grant;
    use igmp_ext::fixtures::GROUP6;
    use igmp_ext::{CertificateBody, SliceSet6};
    let f = Fixture::new(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys::write_public_key(&d.join("group.pub"), &f.group_key.verifying_key()).unwrap();
    keys::write_private_key(&d.join("m1.key"), &f.members[0].key).unwrap();
    let body = CertificateBody {
        groups: vec!["232.1.1.1".parse().unwrap(), "232.1.1.2".parse().unwrap()],
        ..f.members[0].cert.body().clone()
    };
    let grant = |g| Ipv6Grant {
        groups: vec![g],
        slices: SliceSet6::full(),
    };
    let other = "ff3e::9".parse().unwrap();
    for (name, cert) in [
        ("v1.cert", body.issue(&f.group_key).unwrap()),
        (
            "other.cert",
            body.issue_with_ipv6(&grant(other), &f.group_key).unwrap(),
        ),
        (
            "v2.cert",
            body.issue_with_ipv6(&grant(GROUP6), &f.group_key).unwrap(),
        ),
    ] {
        keys::write_certificate(&d.join(name), &cert).unwrap();
        let p = config(d, name);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("group6 = \"{GROUP6}\"\n{text}")).unwrap();
        let out = server(&["--config", &p, "--check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if name == "v2.cert" {
            assert!(out.status.success(), "{name}: {err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {err}");
            assert!(
                err.contains("does not allow group6 ff3e::8000:1"),
                "{name}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
