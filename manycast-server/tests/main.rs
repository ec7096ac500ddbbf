//! Integration tests: the real `manycastctl` binary (OpenSSL reads the keys it writes and writes
//! keys it reads), the real `manycast-server` CLI, and end to end in namespaces ([`native`], [`vip`]).

mod admin;
mod cli;
mod clock_cluster;
mod clock_step;
mod control6;
mod harness;
mod health;
mod insider;
mod liveness;
mod liveness6;
mod mld;
mod native;
mod native6;
mod redundant;
mod routed_control;
mod scattered;
mod sites;
mod strategies;
mod strategies6;
mod vip;
mod vip6;
mod vip6_verified;
mod vip_overlay;

use std::path::Path;
use std::process::Command;

mod keystore;
mod support;

pub(crate) use support::keystore_daemon::{ctl, ok};

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn keys_certificates_and_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&ctl(&["key", "new", &path(d, "group")]));
    ok(&ctl(&["key", "new", &path(d, "srv1")]));
    // OpenSSL derives the same public key from our private key file.
    let pubout = Command::new("openssl")
        .args(["pkey", "-in", &path(d, "group.key"), "-pubout"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pubout.stdout),
        std::fs::read_to_string(d.join("group.pub")).unwrap()
    );
    let out = ok(&ctl(&[
        "cert",
        "issue",
        "--group-key",
        &path(d, "group.key"),
        "--member-key",
        &path(d, "srv1.pub"),
        "--id",
        "7",
        "--group",
        "232.1.1.1",
        "--slice",
        "0.0.0.1/0.0.0.3",
        "--out",
        &path(d, "srv1.cert"),
    ]));
    assert!(out.contains("certified m7"), "{out}");
    let shown = ok(&ctl(&[
        "cert",
        "show",
        &path(d, "srv1.cert"),
        "--group-pub",
        &path(d, "group.pub"),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(v["member_id"], 7);
    assert_eq!(v["slices"][0], "0.0.0.1/0.0.0.3");
    assert_eq!(v["groups"][0], "232.1.1.1");
    assert_eq!(v["verdict"], "valid");
    assert_eq!(v["groups6"], serde_json::json!([]));
    // A dual-stack certificate (issue 15, item 2): IPv6 groups and slices, signed alike.
    let out = ok(&ctl(&[
        "cert",
        "issue",
        "--group-key",
        &path(d, "group.key"),
        "--member-key",
        &path(d, "srv1.pub"),
        "--id",
        "7",
        "--group",
        "232.1.1.1",
        "--group6",
        "ff3e::8000:1",
        "--slice6",
        "0:0:0:100::/0:0:0:300::",
        "--out",
        &path(d, "srv1-dual.cert"),
    ]));
    assert!(out.contains("IPv6 0:0:0:100::/0:0:0:300::"), "{out}");
    let shown = ok(&ctl(&[
        "cert",
        "show",
        &path(d, "srv1-dual.cert"),
        "--group-pub",
        &path(d, "group.pub"),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(v["groups6"][0], "ff3e::8000:1");
    assert_eq!(v["slices6"][0], "0:0:0:100::/0:0:0:300::");
    assert_eq!(v["slices"][0], "0.0.0.0/0");
    assert_eq!(v["verdict"], "valid");
    // A router certificate (issue 14, item 2): the site rides under the signature.
    let issue_router = |site: &str, out: &str| {
        ctl(&[
            "cert",
            "issue",
            "--group-key",
            &path(d, "group.key"),
            "--member-key",
            &path(d, "srv1.pub"),
            "--id",
            "11",
            "--group",
            "232.1.1.1",
            "--site",
            site,
            "--out",
            &path(d, out),
        ])
    };
    let out = ok(&issue_router("3", "a1.cert"));
    assert!(out.contains("certified m11 as a router of site3"), "{out}");
    let shown = ok(&ctl(&[
        "cert",
        "show",
        &path(d, "a1.cert"),
        "--group-pub",
        &path(d, "group.pub"),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(v["site"], 3);
    assert_eq!(v["member_id"], 11);
    assert_eq!(v["verdict"], "valid");
    let shown = ok(&ctl(&["cert", "show", &path(d, "srv1.cert"), "--json"]));
    let v: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(v["site"], serde_json::Value::Null, "a member names no site");
    // Site 0 is no site: a usage error naming why, and no certificate written.
    let out = issue_router("0", "zero.cert");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("site 0 is no site"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join("zero.cert").exists());
    // Checked against another group key: refused, non-zero exit, one clear line.
    let gen = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            &path(d, "other.key"),
        ])
        .status()
        .unwrap();
    assert!(gen.success());
    let out = ctl(&[
        "cert",
        "show",
        &path(d, "srv1.cert"),
        "--group-pub",
        &path(d, "other.key"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID"));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "manycastctl: certificate does not verify"
    );
    // Never overwrites a key.
    let out = ctl(&["key", "new", &path(d, "group")]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
