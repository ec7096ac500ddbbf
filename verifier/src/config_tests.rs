//! The verifier's configuration: what parses, what is refused and with which one-line error.

use super::*;

const MINIMAL: &str = "interfaces = [\"c0\", \"s1\"]\nkeys = \"/etc/manycast/keys.toml\"\n";

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = Config::parse(MINIMAL).expect("valid");
    assert_eq!(
        c.status_socket,
        PathBuf::from("/run/manycast-verifier.sock")
    );
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.gap_policy().unwrap(), GapPolicy::Drop);
    assert_eq!(c.native.idle_timeout_ms, 60_000);
    assert!(c.native.route_plain_groups);
    assert_eq!(c.native.dataplane, Dataplane::Auto);
    assert_eq!(c.rate_limit.per_source_pps, 50);
    assert_eq!(
        c.router_config().unwrap().admission,
        AdmissionConfig::default()
    );
    let v = c.verifier_config().unwrap();
    assert_eq!(
        v.protected,
        vec![Slice::prefix(Ipv4Addr::new(232, 0, 0, 0), 8)]
    );
    // Claims live for the Group Membership Interval: 2 × 10 s + 2 s.
    assert_eq!(v.claim_hold, Duration::from_secs(22));
    assert!(!c.shutdown.keep_kernel_state);
    assert!(c.vip.is_empty());
}

#[test]
fn announce_needs_a_vip_and_a_protocol_the_kernel_does_not_reserve() {
    let vip = "[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n";
    let c = Config::parse(&format!("{MINIMAL}[announce]\nenabled = true\n{vip}")).expect("valid");
    assert_eq!(c.router_config().expect("valid").announce.protocol, 77);
    for (bad, says) in [
        ("[announce]\nenabled = true\n".to_owned(), "no [[vip]]"),
        (
            format!("[announce]\nenabled = true\nprotocol = 4\n{vip}"),
            "reserves",
        ),
    ] {
        let e = Config::parse(&format!("{MINIMAL}{bad}")).expect_err(&bad);
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn full_config_parses() {
    let c = Config::parse(
        r#"
interfaces = ["c0", "s1", "s2"]
keys = "keys.toml"
status_socket = "/tmp/v.sock"
metrics_listen = "127.0.0.1:9465"
[verifier]
protected = ["232.1.0.0/16"]
[querier]
robustness = 3
query_interval_ms = 5000
query_response_interval_ms = 1000
[native]
gap = "fallback"
fallback_member = 2
idle_timeout_ms = 5000
route_plain_groups = false
dataplane = "nft"
[[vip]]
address = "10.200.0.1"
group = "232.1.1.1"
pin = true
[vip_pin]
dataplane = "nft"
pin_dir = "/sys/fs/bpf/lab"
"#,
    )
    .expect("valid");
    assert_eq!(c.vip_pin.dataplane, PinDataplane::Nft);
    assert_eq!(c.vip_pin.pin_dir(), PathBuf::from("/sys/fs/bpf/lab"));
    let default = VipPinSection::default().pin_dir().display().to_string();
    assert!(
        default.starts_with("/sys/fs/bpf/manycast/net-") && !default.ends_with("net-0"),
        "{default:?}"
    );
    assert_eq!(c.gap_policy().unwrap(), GapPolicy::Fallback(MemberId(2)));
    assert_eq!(c.querier_config().robustness, 3);
    assert!(!c.native.route_plain_groups);
    assert_eq!(c.native.dataplane, Dataplane::Nft);
    assert!(c.vip[0].pin);
}

#[test]
fn keystore_config_parses_with_defaults() {
    let c = Config::parse(
        r#"
interfaces = ["c0"]
[keystore]
server = "127.0.0.1:5353"
trust_anchor = "/var/lib/dns-keystore/trust-anchors"
groups = ["232.1.1.1", "232.1.1.2"]
"#,
    )
    .expect("valid");
    let KeySourceConfig::Keystore(ks) = c.key_source().unwrap() else {
        panic!("not the keystore");
    };
    assert_eq!(ks.server, "127.0.0.1:5353".parse().unwrap());
    assert_eq!(ks.groups.len(), 2);
    assert_eq!(ks.refresh_ms, 5_000);
    assert_eq!(ks.max_stale_ms, None);
    assert_eq!(c.keys, None);
    // A missing trust-anchor file is one line naming it.
    let e = Config::keystore_client_config(ks).unwrap_err();
    assert!(
        e.to_string()
            .contains("/var/lib/dns-keystore/trust-anchors"),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'), "{e:?}");
}

#[test]
fn keystore_trust_anchor_is_read_and_checked() {
    let dir = std::env::temp_dir().join(format!("mc-verifier-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-anchor");
    std::fs::write(&bad, "not an anchor").unwrap();
    let ks = KeystoreSection {
        server: "127.0.0.1:53".parse().unwrap(),
        trust_anchor: bad.clone(),
        groups: vec![Ipv4Addr::new(232, 1, 1, 1)],
        groups6: Vec::new(),
        refresh_ms: 1000,
        max_stale_ms: Some(2500),
        rollback_marks: default_rollback_marks(),
    };
    let e = Config::keystore_client_config(&ks).unwrap_err();
    assert!(e.to_string().contains("trust-anchors"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configs_fail_with_one_line() {
    for (text, want) in [
        ("interfaces = []\nkeys = \"k\"", "`interfaces` is empty"),
        ("keys = \"k\"", "missing field `interfaces`"),
        ("interfaces = [\"a\"]", "no key source"),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[keystore]\nserver = \"127.0.0.1:53\"\ntrust_anchor = \"t\"\ngroups = [\"232.1.1.1\"]",
            "configure exactly one key source",
        ),
        (
            "interfaces = [\"a\"]\n[keystore]\nserver = \"127.0.0.1:53\"\ntrust_anchor = \"t\"\ngroups = []",
            "keystore.groups and keystore.groups6 are empty",
        ),
        (
            "interfaces = [\"a\"]\n[keystore]\nserver = \"127.0.0.1:53\"\ntrust_anchor = \"t\"\ngroups = [\"239.1.1.1\"]",
            "group 239.1.1.1 is not protected",
        ),
        (
            "interfaces = [\"a\"]\n[keystore]\nserver = \"127.0.0.1\"\ntrust_anchor = \"t\"\ngroups = [\"232.1.1.1\"]",
            "invalid socket address",
        ),
        (
            "interfaces = [\"a\"]\n[keystore]\ntrust_anchor = \"t\"\ngroups = [\"232.1.1.1\"]",
            "missing field `server`",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\nbogus = 1",
            "unknown field `bogus`",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[native]\ngap = \"fallback\"",
            "needs native.fallback_member",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[native]\ndataplane = \"ebpf\"",
            "unknown variant `ebpf`",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[verifier]\nprotected = [\"232.0.0.0\"]",
            "not a prefix",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[rate_limit]\nverify_per_second = 0",
            "rate_limit.verify_per_second must be at least 1",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[rate_limit]\nverify_backlog = 1",
            "rate_limit.verify_backlog must be 16 to 1000000",
        ),
        (
            "interfaces = [\"a\"]\nkeys = \"k\"\n[[vip]]\naddress = \"10.0.0.1\"\ngroup = \"239.1.1.1\"",
            "is not protected",
        ),
    ] {
        let e = Config::parse(text).expect_err(text);
        assert!(e.to_string().contains(want), "{text:?}: {e}");
        assert!(!e.to_string().contains('\n'), "{e:?}");
    }
}

#[test]
fn control_groups_are_protected_and_never_steered_or_vip_groups() {
    let base = "interfaces = [\"a\", \"b\"]\nkeys = \"k\"\n";
    let c = Config::parse(&format!("{base}control_groups = [\"239.77.0.1\"]\n")).expect("valid");
    let r = c.router_config().expect("valid");
    assert_eq!(r.control_groups, vec![Ipv4Addr::new(239, 77, 0, 1)]);
    assert!(r
        .verifier
        .protected
        .contains(&Slice::prefix(Ipv4Addr::new(239, 77, 0, 1), 32)));
    for (groups, extra, why) in [
        ("\"232.1.1.1\"", "", "inside verifier.protected"),
        ("\"10.0.0.1\"", "", "not a routable multicast"),
        ("\"224.0.0.9\"", "", "not a routable multicast"),
        ("\"239.7.7.7\", \"239.7.7.7\"", "", "named twice"),
        (
            "\"239.1.1.1\"",
            "[verifier]\nprotected = [\"232.0.0.0/8\", \"239.1.1.1/32\"]\n",
            "inside verifier.protected",
        ),
    ] {
        let text = format!("{base}control_groups = [{groups}]\n{extra}");
        let e = Config::parse(&text).expect_err(&text).to_string();
        assert!(e.contains(why), "{text}: {e}");
    }
    let vip = "[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"239.1.1.1\"\n";
    let text = format!("{base}control_groups = [\"239.1.1.1\"]\n{vip}");
    let e = Config::parse(&text).expect_err(&text).to_string();
    assert!(e.contains("a VIP's group"), "{e}");
}

#[test]
fn ipv6_is_off_unless_an_ipv6_group_is_protected() {
    let base = "interfaces = [\"a\"]\nkeys = \"k\"\n";
    let off = Config::parse(base).expect("valid");
    assert!(off.router_config().expect("valid").protected6.is_empty());
    let on = Config::parse(&format!(
        "{base}[verifier]\nprotected6 = [\"ff3e::/32\", \"ff35::8000:0/112\"]\n"
    ))
    .expect("valid");
    let p = on.router_config().expect("valid").protected6;
    assert_eq!(p.len(), 2);
    assert!(p[0].contains_addr("ff3e::8000:1".parse().expect("address")));
    for (value, why) in [
        ("2001:db8::/32", "not inside the IPv6 multicast range"),
        ("ff3e::/4", "not inside the IPv6 multicast range"),
        ("ff3e::", "invalid IPv6 slice"),
    ] {
        let text = format!("{base}[verifier]\nprotected6 = [\"{value}\"]\n");
        let e = Config::parse(&text).expect_err(&text).to_string();
        assert!(e.contains(why), "{text}: {e}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    let keystore = "interfaces = [\"a\"]\n[keystore]\nserver = \"127.0.0.1:53\"\n\
                    trust_anchor = \"/nonexistent\"\ngroups6 = [\"ff3e::8000:1\"]\n";
    let e = Config::parse(keystore)
        .expect_err("outside protected6")
        .to_string();
    assert!(e.contains("not inside verifier.protected6"), "{e}");
    let ok = format!("{keystore}[verifier]\nprotected6 = [\"ff3e::/32\"]\n");
    let c = Config::parse(&ok).expect("an IPv6-only keystore source");
    assert!(matches!(c.key_source(), Ok(KeySourceConfig::Keystore(ks)) if ks.groups.is_empty()));
}

#[test]
fn an_ipv6_vip_needs_an_ipv6_group_inside_protected6() {
    let base = "interfaces = [\"a\"]\nkeys = \"k\"\n[verifier]\nprotected6 = [\"ff3e::/32\"]\n";
    let vip6 = "[[vip]]\naddress = \"2001:db8:ffff::80\"\ngroup = \"ff3e::8000:1\"\npin = true\n";
    let vip4 = "[[vip]]\naddress = \"10.200.0.1\"\ngroup = \"232.1.1.1\"\n";
    let c = Config::parse(&format!("{base}{vip4}{vip6}")).expect("both families");
    let r = c.router_config().expect("valid");
    assert_eq!(r.vips.len(), 1);
    assert_eq!(r.vips[0].address, Ipv4Addr::new(10, 200, 0, 1));
    assert_eq!(
        r.vips6,
        [Vip6Spec {
            address: "2001:db8:ffff::80".parse().expect("address"),
            group: "ff3e::8000:1".parse().expect("group"),
            pin: true,
        }]
    );
    for (vip, why) in [
        (
            "address = \"2001:db8:ffff::80\"\ngroup = \"232.1.1.1\"",
            "vip 2001:db8:ffff::80: group 232.1.1.1 is of the other address family",
        ),
        (
            "address = \"10.200.0.1\"\ngroup = \"ff3e::8000:1\"",
            "vip 10.200.0.1: group ff3e::8000:1 is of the other address family",
        ),
        (
            "address = \"2001:db8:ffff::80\"\ngroup = \"ff35::1\"",
            "group ff35::1 is not inside verifier.protected6",
        ),
        (
            "address = \"ff3e::1\"\ngroup = \"ff3e::8000:1\"",
            "not a unicast address",
        ),
    ] {
        let text = format!("{base}[[vip]]\n{vip}\n");
        let e = Config::parse(&text).expect_err(&text).to_string();
        assert!(e.contains(why), "{text}: {e}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    let twice = format!("{base}{vip6}{vip6}");
    let e = Config::parse(&twice).expect_err("twice").to_string();
    assert!(e.contains("named twice"), "{e}");
    // Without protected6 no IPv6 group is protected.
    let e = Config::parse(&format!("interfaces = [\"a\"]\nkeys = \"k\"\n{vip6}"))
        .expect_err("no protected6")
        .to_string();
    assert!(e.contains("not inside verifier.protected6"), "{e}");
}

const SITE: &str = "[native]\ndataplane = \"nft\"\n[site]\nupstream = \"up0\"\n\
    router_key = \"/etc/manycast/router.key\"\nrouter_certificate = \"/etc/manycast/router.cert\"\n\
    group = \"232.1.1.1\"\nupper_group = \"239.77.1.1\"\n";

#[test]
fn a_site_section_gets_the_servers_control_defaults() {
    let c = Config::parse(&format!("{MINIMAL}{SITE}")).expect("valid");
    let s = c.site.expect("site");
    assert_eq!(s.upstream, "up0");
    assert_eq!((s.upper_port, s.weight, s.slice_bits), (4790, 1, 8));
    assert_eq!(s.refresh_ms, 10_000);
    let u = s.upper_config();
    assert_eq!(u.cluster, Ipv4Addr::new(239, 77, 1, 1));
    assert_eq!(u.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(u.down_after, Duration::from_millis(200));
    assert_eq!(u.slicing, igmp_ext::Slicing::LowOrder { bits: 8 });
    let a = s.agent_config();
    assert_eq!(a.refresh, Duration::from_secs(10));
    assert_eq!(a.weight, 1);
}

#[test]
fn a_bad_site_section_is_refused_with_what_is_wrong() {
    for (change, says) in [
        (
            ("upstream = \"up0\"", "upstream = \"s1\""),
            "also in `interfaces`",
        ),
        (
            ("group = \"232.1.1.1\"", "group = \"239.1.1.1\""),
            "not inside verifier.protected",
        ),
        (
            (
                "upper_group = \"239.77.1.1\"",
                "upper_group = \"232.9.9.9\"",
            ),
            "protected here",
        ),
        (
            (
                "upper_group = \"239.77.1.1\"",
                "upper_group = \"224.0.0.9\"",
            ),
            "outside 224.0.0.0/24",
        ),
        (
            ("upper_group = \"239.77.1.1\"", "upper_group = \"10.0.0.1\""),
            "not a multicast group",
        ),
        (
            ("dataplane = \"nft\"", "dataplane = \"mroute\""),
            "needs the nftables data plane",
        ),
        (("\n[site]\n", "\n[site]\nweight = 0\n"), "weight must be"),
        (("\n[site]\n", "\n[site]\nweight = 17\n"), "weight must be"),
        (("\n[site]\n", "\n[site]\nslice_bits = 0\n"), "slice_bits"),
        (("\n[site]\n", "\n[site]\nslice_bits = 17\n"), "slice_bits"),
        (("\n[site]\n", "\n[site]\nrefresh_ms = 0\n"), "refresh_ms"),
        (
            ("\n[site]\n", "\n[site]\ndown_after_ms = 50\n"),
            "below down_after_ms",
        ),
    ] {
        let text = format!("{MINIMAL}{}", SITE.replace(change.0, change.1));
        assert_ne!(
            text,
            format!("{MINIMAL}{SITE}"),
            "{change:?} changed nothing"
        );
        let e = Config::parse(&text).expect_err(change.1);
        assert!(e.to_string().contains(says), "{change:?}: {e}");
    }
    let e = Config::parse(&format!("{MINIMAL}{SITE}bogus = 1\n")).expect_err("unknown key");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn a_site_router_may_leave_the_data_plane_to_auto() {
    // Decided at start: the multicast routing socket then refuses to start the agent.
    let text = format!(
        "{MINIMAL}{}",
        SITE.replace("dataplane = \"nft\"", "dataplane = \"auto\"")
    );
    assert!(Config::parse(&text).expect("valid").site.is_some());
}
