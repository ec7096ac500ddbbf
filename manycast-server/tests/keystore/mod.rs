//! `manycastctl keystore ...` against the real `dns-keystore` daemon: publish → show → rotate →
//! revoke → cert publish → show, each step checked with `dig` as well as through `show`.

use crate::support::keystore_daemon::{ctl_args, Keystore, ZONE};
use crate::{ctl, ok, path};

mod server;
use std::path::Path;
use std::process::Output;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(ok(out).trim()).expect("show --json prints one JSON object")
}

fn key_id(d: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(ok(&ctl(&["key", "show", &path(d, name), "--json"])).trim())
            .expect("key show --json");
    v["key_id"].as_str().expect("key id").to_owned()
}

fn p_value(d: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(ok(&ctl(&["key", "show", &path(d, name), "--json"])).trim())
            .expect("key show --json");
    v["p"].as_str().expect("p").to_owned()
}

fn fails_with_one_line(out: &Output, expect: &str) {
    assert!(!out.status.success(), "should have failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("manycastctl: ") && err.contains(expect),
        "{err}"
    );
}

#[test]
fn publish_show_rotate_revoke_and_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let ks = Keystore::start(d);
    let upd = ks.update_args();
    let show = ks.show_args();
    for k in ["group", "group2", "srv1", "srv2"] {
        ok(&ctl(&["key", "new", &path(d, k)]));
    }
    let group_name = format!("1.1.1.232.g.{ZONE}");
    let service_name = format!("web.{ZONE}");

    // publish: both names carry the record, A records the VIP and the group.
    let out = ok(&ctl_args(
        &["keystore", "publish"],
        &upd,
        &[
            "--group",
            "232.1.1.1",
            "--name",
            "web",
            "--owner",
            "ops@example.org",
            "--group-pub",
            &path(d, "group.pub"),
            "--vip",
            "203.0.113.10",
            "--valid-days",
            "30",
        ],
    ));
    assert!(out.contains(&key_id(d, "group.pub")), "{out}");
    for name in [&group_name, &service_name] {
        let txt = ks.txt(name);
        assert!(
            txt.starts_with("v=MC1; g=232.1.1.1; n=web; o=ops@example.org; f=protected"),
            "{txt}"
        );
        assert!(
            txt.contains(&format!("p={}", p_value(d, "group.pub"))),
            "{txt}"
        );
    }
    assert_eq!(ks.a(&service_name), "203.0.113.10");
    assert_eq!(ks.a(&group_name), "232.1.1.1");

    // show: validated, readable and JSON.
    let table = ok(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1"],
    ));
    assert!(
        table.contains("group       232.1.1.1  (DNSSEC validated"),
        "{table}"
    );
    assert!(
        table.contains(&format!("keys        {}", key_id(d, "group.pub"))),
        "{table}"
    );
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--json"],
    ));
    assert_eq!(v["group"]["name"], "web");
    assert_eq!(v["group"]["vip"], "203.0.113.10");
    assert_eq!(v["group"]["keys"][0]["id"], key_id(d, "group.pub").as_str());
    assert_eq!(v["group"]["keys"][0]["p"], p_value(d, "group.pub").as_str());
    let t = v["group"]["not_before"].as_u64().expect("t");
    assert_eq!(v["group"]["not_after"].as_u64(), Some(t + 30 * 86_400));

    // rotate --add: two keys, newest last; --retire the old one: one key.
    ok(&ctl_args(
        &["keystore", "rotate"],
        &upd,
        &["--group", "232.1.1.1", "--add", &path(d, "group2.pub")],
    ));
    let txt = ks.txt(&group_name);
    assert!(
        txt.contains(&format!(
            "p={},{}",
            p_value(d, "group.pub"),
            p_value(d, "group2.pub")
        )),
        "{txt}"
    );
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--json"],
    ));
    assert_eq!(v["group"]["keys"].as_array().map(Vec::len), Some(2));
    ok(&ctl_args(
        &["keystore", "rotate"],
        &upd,
        &["--group", "232.1.1.1", "--retire", &key_id(d, "group.pub")],
    ));
    let txt = ks.txt(&service_name);
    assert!(
        txt.contains(&format!("p={};", p_value(d, "group2.pub"))),
        "{txt}"
    );
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--json"],
    ));
    assert_eq!(
        v["group"]["keys"][0]["id"],
        key_id(d, "group2.pub").as_str()
    );
    assert_eq!(v["group"]["keys"].as_array().map(Vec::len), Some(1));

    // revoke srv2's key (given as its key file).
    ok(&ctl_args(
        &["keystore", "revoke"],
        &upd,
        &["--group", "232.1.1.1", "--member-key", &path(d, "srv2.pub")],
    ));
    let srv2 = key_id(d, "srv2.pub");
    assert!(ks.txt(&group_name).contains(&format!("r={srv2}")));
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--json"],
    ));
    assert_eq!(v["group"]["revoked"][0], srv2.as_str());

    // Certificates issued by the new group key, published, checked by dig and show.
    for (k, id) in [("srv1", "1"), ("srv2", "2")] {
        ok(&ctl(&[
            "cert",
            "issue",
            "--group-key",
            &path(d, "group2.key"),
            "--member-key",
            &path(d, &format!("{k}.pub")),
            "--id",
            id,
            "--group",
            "232.1.1.1",
            "--out",
            &path(d, &format!("{k}.cert")),
        ]));
        ok(&ctl_args(
            &["keystore", "cert", "publish"],
            &upd,
            &["--cert", &path(d, &format!("{k}.cert"))],
        ));
    }
    let srv1 = key_id(d, "srv1.pub");
    let txt = ks.txt(&format!("{srv1}.m.{ZONE}"));
    // The value is the certificate file's bytes: its PEM body is the same base64.
    let pem = std::fs::read_to_string(d.join("srv1.cert")).expect("certificate file");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(txt, format!("v=MCC1; c={body}"));
    let table = ok(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--member-key", &path(d, "srv1.pub")],
    ));
    assert!(
        table.contains(&format!("certificate m1 (key {srv1}, DNSSEC validated")),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "signature   valid (group key {})",
            key_id(d, "group2.pub")
        )),
        "{table}"
    );
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "232.1.1.1", "--member-key", &srv1, "--json"],
    ));
    assert_eq!(v["certificate"]["member_id"], 1);
    assert_eq!(v["certificate"]["groups"][0], "232.1.1.1");
    // srv2's certificate is published but its key revoked: show says so and fails.
    let out = ctl_args(
        &["keystore", "show"],
        &show,
        &[
            "--group",
            "232.1.1.1",
            "--member-key",
            &path(d, "srv2.cert"),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature   REVOKED"));
    fails_with_one_line(&out, "REVOKED");

    // withdraw: gone for dig and show.
    ok(&ctl_args(
        &["keystore", "cert", "withdraw"],
        &upd,
        &["--cert", &path(d, "srv2.cert")],
    ));
    assert!(ks.txt(&format!("{srv2}.m.{ZONE}")).is_empty());
    fails_with_one_line(
        &ctl_args(&["keystore", "show"], &show, &["--member-key", &srv2]),
        "no such record",
    );

    // Errors: one line, non-zero, nothing changed.
    let before = ks.txt(&group_name);
    let wrong_key = d.join("wrong.key");
    std::fs::write(&wrong_key, [7u8; 32]).expect("write a wrong TSIG key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let mut wrong = upd.clone();
    wrong[3] = wrong_key.display().to_string();
    fails_with_one_line(
        &ctl_args(
            &["keystore", "publish"],
            &wrong,
            &[
                "--group",
                "232.1.1.1",
                "--name",
                "web",
                "--owner",
                "mallory",
                "--public",
            ],
        ),
        "refused",
    );
    fails_with_one_line(
        &ctl_args(
            &["keystore", "revoke"],
            &upd,
            &["--group", "232.1.1.1", "--member-key", "nonsense"],
        ),
        "key id",
    );
    fails_with_one_line(
        &ctl_args(&["keystore", "show"], &show, &["--group", "232.9.9.9"]),
        "232.9.9.9",
    );
    fails_with_one_line(
        &ctl_args(
            &["keystore", "publish"],
            &upd,
            &[
                "--group",
                "10.1.1.1",
                "--name",
                "web",
                "--owner",
                "o",
                "--group-pub",
                &path(d, "group.pub"),
            ],
        ),
        "multicast",
    );
    assert_eq!(ks.txt(&group_name), before);
}

/// Issue 15: an IPv6 group and VIP (SPEC.md §8.1, §8.2): publish → show → rotate → revoke, with
/// `dig AAAA` at the service name and at the group's nibble name; mixed families are refused.
#[test]
fn ipv6_group_publish_show_rotate_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let ks = Keystore::start(d);
    let upd = ks.update_args();
    let show = ks.show_args();
    for k in ["group", "group2", "srv", "srv4", "srv6"] {
        ok(&ctl(&["key", "new", &path(d, k)]));
    }
    let group_name =
        format!("1.0.0.0.0.0.0.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.3.f.f.g6.{ZONE}");
    let service_name = format!("web6.{ZONE}");
    let aaaa = |name: &str| {
        String::from_utf8_lossy(&ks.dig(&[name, "AAAA"]).stdout)
            .trim()
            .to_owned()
    };

    let out = ok(&ctl_args(
        &["keystore", "publish"],
        &upd,
        &[
            "--group",
            "ff3e::8000:1",
            "--name",
            "web6",
            "--owner",
            "ops@example.org",
            "--group-pub",
            &path(d, "group.pub"),
            "--vip",
            "2001:db8::10",
        ],
    ));
    assert!(out.contains("published ff3e::8000:1 as web6."), "{out}");
    for name in [&group_name, &service_name] {
        let txt = ks.txt(name);
        assert!(
            txt.starts_with("v=MC1; g=ff3e::8000:1; n=web6; o=ops@example.org; f=protected"),
            "{txt}"
        );
        assert!(txt.ends_with("; s=2001:db8::10"), "{txt}");
        assert_eq!(ks.a(name), "", "{name} has no A");
    }
    assert_eq!(aaaa(&service_name), "2001:db8::10");
    assert_eq!(aaaa(&group_name), "ff3e::8000:1");

    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "ff3e::8000:1", "--json"],
    ));
    assert_eq!(v["group"]["group"], "ff3e::8000:1");
    assert_eq!(v["group"]["vip"], "2001:db8::10");
    assert_eq!(v["group"]["dnssec"], "validated");

    // rotate and revoke start from the validated IPv6 record.
    ok(&ctl_args(
        &["keystore", "rotate"],
        &upd,
        &["--group", "ff3e::8000:1", "--add", &path(d, "group2.pub")],
    ));
    ok(&ctl_args(
        &["keystore", "revoke"],
        &upd,
        &[
            "--group",
            "ff3e::8000:1",
            "--member-key",
            &path(d, "srv.pub"),
        ],
    ));
    let v = json(&ctl_args(
        &["keystore", "show"],
        &show,
        &["--group", "ff3e::8000:1", "--json"],
    ));
    assert_eq!(
        v["group"]["keys"][1]["id"],
        key_id(d, "group2.pub").as_str()
    );
    assert_eq!(v["group"]["revoked"][0], key_id(d, "srv.pub").as_str());
    assert_eq!(aaaa(&service_name), "2001:db8::10");

    // show --member-key checks a certificate's IPv6 groups against an IPv6 record: valid for
    // one certified for the group (`--group6`), not for one certified for IPv4 groups only.
    for (k, id, v6) in [("srv6", "6", true), ("srv4", "4", false)] {
        let mut issue = vec![
            "cert".to_owned(),
            "issue".into(),
            "--group-key".into(),
            path(d, "group2.key"),
            "--member-key".into(),
            path(d, &format!("{k}.pub")),
            "--id".into(),
            id.into(),
            "--group".into(),
            "232.1.1.1".into(),
            "--out".into(),
            path(d, &format!("{k}.cert")),
        ];
        if v6 {
            issue.extend(["--group6".into(), "ff3e::8000:1".into()]);
        }
        let issue: Vec<&str> = issue.iter().map(String::as_str).collect();
        ok(&ctl(&issue));
        ok(&ctl_args(
            &["keystore", "cert", "publish"],
            &upd,
            &["--cert", &path(d, &format!("{k}.cert"))],
        ));
    }
    let member = |k: &str| {
        ctl_args(
            &["keystore", "show"],
            &show,
            &["--group", "ff3e::8000:1", "--member-key", &path(d, k)],
        )
    };
    let table = ok(&member("srv6.pub"));
    assert!(
        table.contains(&format!(
            "signature   valid (group key {})",
            key_id(d, "group2.pub")
        )),
        "{table}"
    );
    assert!(
        table.contains("groups      232.1.1.1 ff3e::8000:1"),
        "{table}"
    );
    assert!(table.contains("slices6     ::/0"), "{table}");
    fails_with_one_line(&member("srv4.pub"), "not certified for ff3e::8000:1");

    // A VIP of the other family, a unicast group, an unpublished group: one line each.
    let before = ks.txt(&group_name);
    fails_with_one_line(
        &ctl_args(
            &["keystore", "publish"],
            &upd,
            &[
                "--group",
                "ff3e::8000:1",
                "--name",
                "web6",
                "--owner",
                "o",
                "--public",
                "--vip",
                "203.0.113.10",
            ],
        ),
        "address family",
    );
    fails_with_one_line(
        &ctl_args(
            &["keystore", "publish"],
            &upd,
            &[
                "--group",
                "2001:db8::1",
                "--name",
                "web6",
                "--owner",
                "o",
                "--public",
            ],
        ),
        "multicast",
    );
    fails_with_one_line(
        &ctl_args(&["keystore", "show"], &show, &["--group", "ff3e::9"]),
        "ff3e::9",
    );
    assert_eq!(ks.txt(&group_name), before);
}
