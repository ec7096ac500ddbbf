//! `manycast-server` with `[keystore]`: the real daemon fetches its group's record (and its
//! certificate record) from the real `dns-keystore` daemon through the DNSSEC-validating client,
//! and stops with the reason when they do not back its certificate (SPEC.md §11.1). Each test
//! runs in its own network namespace (keystore, `manycastctl` and the member all inside it; the
//! member's interface is a dummy link), removed by the harness's `Lab` guard.

use super::key_id;
use crate::harness::{in_netns, wait_for, Lab, GROUP};
use crate::support::keystore_daemon::Keystore;
use crate::{ctl, ok, path};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A namespace with the keystore (records with `record_ttl` s), an interface `s0` for the
/// member, and the group's record published with the lab's group key.
struct Setup {
    lab: Lab,
    ns: String,
    ks: Keystore,
    /// TTL of the records we publish, seconds.
    ttl: u32,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {}", args.join(" "));
}

fn setup(record_ttl: u32) -> Setup {
    setup_members(1, record_ttl)
}

fn setup_members(members: u32, record_ttl: u32) -> Setup {
    let mut lab = Lab::new(members);
    lab.group_pub = false;
    let ns = lab.netns("ks");
    // No dummy driver in this kernel: a veth pair whose far end stays in the namespace.
    ip(&[
        "-n", &ns, "link", "add", "s0", "type", "veth", "peer", "name", "s1",
    ]);
    ip(&["-n", &ns, "link", "set", "s1", "up"]);
    ip(&["-n", &ns, "link", "set", "s0", "up"]);
    ip(&["-n", &ns, "addr", "add", "10.9.0.1/24", "dev", "s0"]);
    let dir = lab.dir.path().to_owned();
    // Spawned from a thread inside the namespace, the daemon (and dig) run there.
    let ks = in_netns(&ns, || Keystore::start_with_ttl(&dir, record_ttl));
    let s = Setup {
        lab,
        ns,
        ks,
        ttl: record_ttl,
    };
    s.publish("group.pub");
    s
}

impl Setup {
    fn d(&self) -> &Path {
        self.lab.dir.path()
    }

    /// `manycastctl keystore <head> <update options> <tail>` inside the namespace.
    fn update(&self, head: &[&str], tail: &[&str]) -> String {
        in_netns(&self.ns, || self.ks.update(self.ttl, head, tail))
    }

    /// Publishes the group's record with the group key in `pub_file` (in the lab's directory).
    fn publish(&self, pub_file: &str) {
        in_netns(&self.ns, || {
            self.ks.publish(self.ttl, GROUP, &self.d().join(pub_file))
        });
    }

    /// Revokes the member key `key` (an id) in the group's record.
    fn revoke(&self, key: &str) {
        in_netns(&self.ns, || self.ks.revoke(self.ttl, GROUP, key));
    }

    /// Member 1's key id.
    fn member_key_id(&self) -> String {
        igmp_ext::KeyId::of(&self.lab.fixture.members[0].key.verifying_key()).to_string()
    }

    /// The `[keystore]` table for member 1, pointing at `server`.
    /// Members 1 and 2 on the keystore: member 2 on the veth peer of member 1's link, in the
    /// same namespace (where the keystore listens on loopback). Each link then receives
    /// datagrams whose source is a local address of the namespace, which the kernel drops as
    /// martian unless `accept_local` is set.
    fn spawn_pair(&mut self) {
        ip(&["-n", &self.ns, "addr", "add", "10.9.0.2/24", "dev", "s1"]);
        for link in ["s0", "s1"] {
            let st = Command::new("ip")
                .args(["netns", "exec", &self.ns, "sysctl", "-qw"])
                .arg(format!("net.ipv4.conf.{link}.accept_local=1"))
                .status()
                .expect("sysctl");
            assert!(st.success(), "accept_local on {link}");
        }
        let server = self.ks.addr.to_string();
        let table = self.keystore_table(&server, "");
        let c1 = self.lab.write_config(0, "s0", "s0", "", &table);
        let c2 = self.lab.write_config(1, "s1", "s1", "", &table);
        let ns = self.ns.clone();
        self.lab.spawn_server(0, &ns, &c1);
        self.lab.spawn_server(1, &ns, &c2);
    }

    fn keystore_table(&self, server: &str, extra: &str) -> String {
        let marks = self.d().join("rollback.marks");
        format!(
            "[keystore]\n{}start_timeout_ms = 1500\n{extra}",
            self.ks.client_lines(server, 300, &marks)
        )
    }

    fn config(&self, table: &str) -> std::path::PathBuf {
        self.lab.write_config(0, "s0", "s0", "", table)
    }

    /// Runs member 1 to its exit with `config`, inside the namespace (`timeout` bounds a hung
    /// run; it is not a timing check).
    fn run_to_exit(&self, config: &Path) -> Output {
        Command::new("timeout")
            .args(["60", "ip", "netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_manycast-server"))
            .arg("--config")
            .arg(config)
            .output()
            .expect("run manycast-server")
    }
}

/// Stopped by itself (not by `timeout`, status 124) with a non-zero status, and its last line
/// on stderr is the one-line reason.
fn stopped_with(out: &Output, expect: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| c != 0 && c != 124),
        "status {code:?}: {err}"
    );
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("manycast-server: keystore: ") && last.contains(expect),
        "want {expect:?} in the last line: {err}"
    );
    last
}

fn prom(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.path().join("m1.prom")).unwrap_or_default()
}

#[test]
fn member_starts_on_a_published_key_and_leaves_after_its_key_is_revoked() {
    let mut s = setup(2);
    let server = s.ks.addr.to_string();
    let config = s.config(&s.keystore_table(&server, ""));
    let ns = s.ns.clone();
    s.lab.spawn_server(0, &ns, &config);
    wait_for("member 1 to start and commit its slices", || {
        s.lab.metric(0, "commits_total") >= 1
    });
    let log = std::fs::read_to_string(s.d().join("m1.log")).unwrap_or_default();
    assert!(log.contains("manycast-server started"), "{}", s.lab.logs());
    wait_for("keystore_ok = 1", || {
        prom(&s.lab).contains("manycast_server_keystore_ok 1\n")
    });
    assert_eq!(s.lab.exited("m1"), None, "{}", s.lab.logs());

    // Revoked while running: logged, exposed in the metrics, then (one record TTL later) the
    // member leaves and exits non-zero with the reason.
    let me = s.member_key_id();
    s.revoke(&me);
    let status = s.lab.wait_exit("m1", Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", s.lab.logs());
    let text = prom(&s.lab);
    assert!(text.contains("manycast_server_keystore_ok 0\n"), "{text}");
    assert!(
        text.contains("manycast_server_keystore_stale 0\n"),
        "{text}"
    );
    assert!(
        text.contains("manycast_server_keystore_mismatch{reason=\"revoked\"} 1"),
        "{text}"
    );
    let log = std::fs::read_to_string(s.d().join("m1.log")).unwrap_or_default();
    let warned = log
        .find("serving on until the verifiers refuse our claims")
        .expect("the revocation is logged before leaving");
    let left = log.find("leaving the cluster").expect("leaving is logged");
    assert!(warned < left, "{log}");
    assert!(
        log.contains(&format!("our member key {me} is revoked")),
        "{log}"
    );
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("manycast-server: keystore: ")
                && l.contains("is revoked in the keystore")),
        "{log}"
    );
}

#[test]
fn member_serves_through_a_rotation_and_leaves_when_its_issuer_is_retired() {
    let mut s = setup(2);
    let d = s.d().to_owned();
    ok(&ctl(&["key", "new", &path(&d, "next")]));
    let next = key_id(&d, "next.pub");
    let server = s.ks.addr.to_string();
    let config = s.config(&s.keystore_table(&server, ""));
    let ns = s.ns.clone();
    s.lab.spawn_server(0, &ns, &config);
    wait_for("keystore_ok = 1", || {
        prom(&s.lab).contains("manycast_server_keystore_ok 1\n")
    });
    let log = || std::fs::read_to_string(d.join("m1.log")).unwrap_or_default();
    // Both keys published: our issuer is still among them.
    s.update(
        &["keystore", "rotate"],
        &[
            "--group",
            &GROUP.to_string(),
            "--add",
            &path(&d, "next.pub"),
        ],
    );
    wait_for("the member to validate the rotated record", || {
        // The debug line `keystore: record validated keys=<old>,<new> revoked=0`.
        log().contains(&format!(",{next} "))
    });
    assert!(!log().contains("ERROR"), "{}", log());
    assert_eq!(s.lab.exited("m1"), None, "{}", log());
    // The old key retired: our certificate is no longer issued by a published key.
    let old = key_id(&d, "group.pub");
    s.update(
        &["keystore", "rotate"],
        &["--group", &GROUP.to_string(), "--retire", &old],
    );
    let status = s.lab.wait_exit("m1", Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", log());
    let last = log().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.contains(&format!(
            "our certificate's issuer {old} is not among the published group keys ({next})"
        )),
        "{last}"
    );
    assert!(
        prom(&s.lab)
            .contains("manycast_server_keystore_mismatch{reason=\"issuer-not-published\"} 1"),
        "{}",
        prom(&s.lab)
    );
}

/// A key rotation with members on both keys: the record publishes the old and the new group
/// key; member 1 (certified by the old key) and member 2 (reissued under the new one) meet in
/// the control channel and split the slices at one epoch. Before the control channel took
/// every published key, member 1 refused member 2's certificate (`bad-certificate`) and each
/// served the whole space alone (`control-channel` test
/// `certificates_from_every_published_group_key_are_accepted` has the refusal).
#[test]
fn members_certified_by_either_published_key_form_one_cluster_during_a_rotation() {
    let mut s = setup_members(2, 2);
    let d = s.d().to_owned();
    ok(&ctl(&["key", "new", &path(&d, "next")]));
    s.update(
        &["keystore", "rotate"],
        &[
            "--group",
            &GROUP.to_string(),
            "--add",
            &path(&d, "next.pub"),
        ],
    );
    // Member 2's certificate, reissued under the new key.
    let next = manycast_server::keys::read_private_key(&d.join("next.key")).expect("next.key");
    let m2 = &s.lab.fixture.members[1];
    let body = igmp_ext::CertificateBody {
        member_id: m2.id,
        member_key: m2.key.verifying_key(),
        issuer: igmp_ext::KeyId::of(&next.verifying_key()),
        not_before: igmp_ext::Timestamp::from_secs(1_767_225_600),
        not_after: igmp_ext::Timestamp::from_secs(1_830_297_600),
        groups: vec![GROUP, crate::harness::CONTROL],
        slices: igmp_ext::SliceSet::full(),
    };
    let cert = body.issue(&next).expect("issue");
    let m2_cert = d.join(format!("{}.cert", m2.id));
    std::fs::remove_file(&m2_cert).expect("the fixture's m2.cert");
    manycast_server::keys::write_certificate(&m2_cert, &cert).expect("write m2.cert");
    s.spawn_pair();
    let split = || {
        s.lab.metric(0, "slice_addresses") == 1 << 31
            && s.lab.metric(1, "slice_addresses") == 1 << 31
            && s.lab.metric(0, "epoch") == s.lab.metric(1, "epoch")
    };
    // A deadline for a hung run (not a timing check); on failure the logs say why.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !split() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        split(),
        "the members did not split the slices: {}",
        s.lab.logs()
    );
    assert_eq!(s.lab.exited("m1"), None, "{}", s.lab.logs());
    assert_eq!(s.lab.exited("m2"), None, "{}", s.lab.logs());
}

#[test]
fn member_keeps_serving_when_the_keystore_goes_away_and_reports_it_stale() {
    let mut s = setup(2);
    let server = s.ks.addr.to_string();
    let config = s.config(&s.keystore_table(&server, "max_stale_ms = 500\n"));
    let ns = s.ns.clone();
    s.lab.spawn_server(0, &ns, &config);
    wait_for("keystore_ok = 1", || {
        prom(&s.lab).contains("manycast_server_keystore_ok 1\n")
    });
    assert!(prom(&s.lab).contains("manycast_server_keystore_stale 0\n"));
    // The keystore daemon stops: refreshes fail, and after TTL + max_stale the member says the
    // verifiers' keys are stale, but it neither stops nor calls its credentials bad.
    if let Some(mut c) = s.ks.child.take() {
        c.kill().expect("kill dns-keystore");
        c.wait().expect("reap dns-keystore");
    }
    wait_for("keystore_stale = 1", || {
        prom(&s.lab).contains("manycast_server_keystore_stale 1\n")
    });
    let text = prom(&s.lab);
    assert!(text.contains("manycast_server_keystore_ok 1\n"), "{text}");
    assert!(
        s.lab.metric(0, "keystore_refresh_failures_total") >= 1,
        "{text}"
    );
    assert_eq!(s.lab.exited("m1"), None, "{}", s.lab.logs());
}

#[test]
fn member_refuses_to_start_when_the_keystore_does_not_back_its_certificate() {
    let s = setup(300);
    let server = s.ks.addr.to_string();
    let d = s.d().to_owned();

    // The record carries another group key: our certificate's issuer is not published.
    ok(&ctl(&["key", "new", &path(&d, "other")]));
    s.publish("other.pub");
    let out = s.run_to_exit(&s.config(&s.keystore_table(&server, "")));
    let line = stopped_with(&out, "is not among the published group keys");
    assert!(line.contains(&key_id(&d, "other.pub")), "{line}");

    // The right key again, but member 1's key revoked.
    s.publish("group.pub");
    let me = s.member_key_id();
    s.revoke(&me);
    let out = s.run_to_exit(&s.config(&s.keystore_table(&server, "")));
    stopped_with(&out, &format!("our member key {me} is revoked"));

    // Not revoked (republished without r=), but the certificate must be published and is not.
    s.publish("group.pub");
    let out = s.run_to_exit(&s.config(&s.keystore_table(&server, "require_certificate = true\n")));
    stopped_with(
        &out,
        &format!("publishes no certificate for our member key {me}"),
    );

    // Member 1's certificate published: it starts (checked with --check-config, which runs the
    // same start-up checks and exits 0).
    s.update(
        &["keystore", "cert", "publish"],
        &["--cert", &path(&d, "m1.cert")],
    );
    let config = s.config(&s.keystore_table(&server, "require_certificate = true\n"));
    let out = Command::new("ip")
        .args(["netns", "exec", &s.ns])
        .arg(env!("CARGO_BIN_EXE_manycast-server"))
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .expect("run manycast-server");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK: member m1"));
}

#[test]
fn member_stops_when_the_keystore_cannot_be_reached_within_the_bound() {
    let s = setup(300);
    // A port in the namespace that nobody listens on (ICMP port unreachable, or silence).
    let nobody = format!("127.0.0.1:{}", s.ks.addr.port().wrapping_add(1).max(1));
    let out = s.run_to_exit(&s.config(&s.keystore_table(&nobody, "")));
    let line = stopped_with(&out, "keystore unreachable");
    // Refused at once (ICMP) or never answered: either way within the 1.5 s bound.
    assert!(line.contains("1.5s"), "{line}");
    assert!(line.contains(&GROUP.to_string()), "{line}");
}

#[test]
fn bad_keystore_config_is_one_line_and_exit_2() {
    let s = setup(300);
    let server = s.ks.addr.to_string();
    // (top-level lines, tables, what the one line names); written one at a time (same file).
    let anchor = |p: &str| {
        format!(
            "[keystore]\nserver = \"{server}\"\ntrust_anchor = \"{}\"\n",
            s.d().join(p).display()
        )
    };
    let cases = [
        (
            format!("group_pub = \"{}\"", path(s.d(), "group.pub")),
            s.keystore_table(&server, ""),
            "exactly one group key source",
        ),
        (
            String::new(),
            "[keystore]\ntrust_anchor = \"/nonexistent\"\n".to_owned(),
            "missing field `server`",
        ),
        (
            String::new(),
            anchor("nonexistent-anchor"),
            "keystore.trust_anchor",
        ),
        // A file that is not a trust anchor.
        (String::new(), anchor("m1.cert"), "keystore.trust_anchor"),
        (
            String::new(),
            s.keystore_table(&server, "groups = [\"232.1.1.1\"]\n"),
            "unknown field",
        ),
        (
            String::new(),
            format!("{}refresh_ms = 0\n", anchor("nonexistent-anchor")),
            "must be non-zero",
        ),
    ];
    for (top, tables, want) in cases {
        let config = s.lab.write_config(0, "s0", "s0", &top, &tables);
        let out = s.run_to_exit(&config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.starts_with("manycast-server: ") && err.contains(want),
            "{err}"
        );
    }
}

/// A revoked member that keeps running (compromised, say) is dropped from the other members'
/// control channel at their next keystore refresh: they log it, refuse what it sends, and take
/// its slices (SPEC.md §9.7). Before, revocations never reached the control channel and the
/// member stayed in every view until it left by itself.
#[test]
fn a_revoked_peer_is_dropped_from_the_control_group_at_the_next_refresh() {
    let mut s = setup_members(2, 2);
    s.spawn_pair();
    wait_for("the members split the slices", || {
        s.lab.metric(0, "slice_addresses") == 1 << 31
            && s.lab.metric(1, "slice_addresses") == 1 << 31
            && s.lab.metric(0, "epoch") == s.lab.metric(1, "epoch")
    });
    let m2 = igmp_ext::KeyId::of(&s.lab.fixture.members[1].key.verifying_key()).to_string();
    s.revoke(&m2);
    let log = || std::fs::read_to_string(s.d().join("m1.log")).unwrap_or_default();
    wait_for("member 1 drops member 2 for its revocation", || {
        log().contains("member revoked by the keystore")
    });
    let text = log();
    let line = text
        .lines()
        .find(|l| l.contains("member revoked by the keystore"))
        .unwrap_or_default();
    assert!(line.contains("m2"), "{text}");
    wait_for("member 1 owns every slice", || {
        s.lab.metric(0, "slice_addresses") == 1 << 32
    });
    assert_eq!(s.lab.exited("m1"), None, "{}", s.lab.logs());
}
