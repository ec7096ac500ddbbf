//! Tests of `config.rs`.

use super::*;

const MINIMAL: &str = r#"
group = "232.1.1.1"
interface = "eth0"
member_key = "/k/m.key"
member_cert = "/k/m.cert"
group_pub = "/k/group.pub"
"#;

#[test]
fn health_tables_are_checked_with_the_file() {
    assert!(Config::parse(MINIMAL)
        .unwrap()
        .health_checks()
        .unwrap()
        .is_empty());
    let ok = format!("{MINIMAL}[[health]]\nkind = \"tcp\"\ntarget = \"127.0.0.1:80\"\n");
    let c = Config::parse(&ok).unwrap();
    assert_eq!(c.health_checks().unwrap()[0].name, "tcp-1");
    let bad = format!("{MINIMAL}[[health]]\nkind = \"http\"\ntarget = \"https://a/\"\n");
    let e = Config::parse(&bad).unwrap_err().0;
    assert!(
        e.starts_with("health[1]: target \"https://a/\": an https:// URL needs kind = \"https\""),
        "{e}"
    );
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.mode, Mode::Native);
    assert_eq!(c.service_port, 5000);
    assert_eq!(c.strategy, Strategy::Reset);
    assert_eq!(c.weight, 1);
    assert_eq!(c.control, ControlConfig::default());
    assert_eq!(c.control.group, IpAddr::V4(Ipv4Addr::new(239, 77, 0, 1)));
    assert!(!c.control.site_scope, "no site: nothing changes");
    assert_eq!(c.control_interface(), "eth0");
    assert_eq!(c.igmp.refresh_ms, 10_000);
    assert_eq!(c.service.max_sessions, 65_536);
    assert_eq!(c.metrics_file, None);
    assert_eq!(c.vip, VipConfig::default());
    assert_eq!(c.vip.reset_delay_ms, 200);
    assert_eq!(c.reallocation, ReallocationConfig::default());
    assert_eq!(c.hold(), Duration::from_millis(500));
    assert!(!c.drains_on_terminate());
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.admin_socket, Path::new("/run/manycast/admin.sock"));
    assert_eq!(
        c.group_key_source(),
        Ok(GroupKeySource::File(Path::new("/k/group.pub")))
    );
    let cc = c.control_config();
    assert_eq!(cc.down_after, Duration::from_millis(200));
}

#[test]
fn every_field_is_read() {
    let c = Config::parse(&format!(
        "{MINIMAL}mode = \"vip\"\nservice_port = 7\nstrategy = \"pin\"\nweight = 3\n\
         metrics_file = \"/tmp/m.prom\"\nmetrics_listen = \"127.0.0.1:9466\"\n\
         admin_socket = \"/tmp/a.sock\"\n[control]\ngroup = \"239.1.2.3\"\nport = 9\n\
         interface = \"ctl0\"\nttl = 4\nslice_bits = 4\nsite_scope = true\n[igmp]\nrobustness = 3\n\
         refresh_ms = 5000\n[service]\nmax_sessions = 10\n\
         [vip]\naddress = \"10.200.0.1\"\nreset_delay_ms = 50\n\
         [reallocation]\nhold_ms = 50\n\
         drain_timeout_ms = 900\ndirect_path = \"10.0.1.2:4790\"\n"
    ))
    .unwrap();
    assert_eq!(c.mode, Mode::Vip);
    assert_eq!(c.strategy, Strategy::Pin);
    assert_eq!(c.vip.address, Some(Ipv4Addr::new(10, 200, 0, 1)));
    assert_eq!(c.vip.reset_delay_ms, 50);
    assert_eq!(c.control_interface(), "ctl0");
    assert_eq!(c.control.slice_bits, 4);
    assert!(c.control.site_scope);
    assert_eq!(c.agent_config().robustness, 3);
    assert_eq!(c.service.max_sessions, 10);
    assert_eq!(c.hold(), Duration::from_millis(50));
    assert_eq!(c.drain_timeout(), Duration::from_millis(900));
    assert_eq!(
        c.reallocation.direct_path,
        Some(SocketAddr::from((Ipv4Addr::new(10, 0, 1, 2), 4790)))
    );
    assert!(c.drains_on_terminate());
    assert_eq!(c.vip.forward_overlay, None);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9466".parse().unwrap()));
    assert_eq!(c.admin_socket, Path::new("/tmp/a.sock"));
}

#[test]
fn vip_forward_takes_an_overlay_and_gives_member_m_host_m() {
    let c = Config::parse(&format!(
        "{MINIMAL}mode = \"vip\"\nstrategy = \"forward\"\n\
         [vip]\naddress = \"10.200.0.1\"\nforward_overlay = \"10.99.0.0/24\"\n"
    ))
    .unwrap();
    let overlay = c.vip.forward_overlay.unwrap();
    assert_eq!(overlay.to_string(), "10.99.0.0/24");
    assert_eq!(overlay.host(1), Some(Ipv4Addr::new(10, 99, 0, 1)));
    assert_eq!(overlay.host(254), Some(Ipv4Addr::new(10, 99, 0, 254)));
    // Neither the network nor the broadcast address.
    assert_eq!(overlay.host(0), None);
    assert_eq!(overlay.host(255), None);
    assert_eq!(overlay.max_member(), 254);
    assert_eq!(c.vip.forward_vni, 7_700);
    assert_eq!(c.vip.forward_port, 4_789);
    assert_eq!(c.forward_linger(), Duration::from_secs(300));
    assert!(c.drains_on_terminate());
}

#[test]
fn bad_files_give_one_line() {
    let cases = [
        ("group = \"1.2.3.4\"\n", "not a multicast"),
        ("strategy = \"teleport\"\n", "unknown variant"),
        ("colour = \"blue\"\n", "unknown field"),
        ("[control]\ngroup = \"232.1.1.1\"\n", "must differ"),
        ("[control]\nslice_bits = 30\n", "above 16"),
        (
            "[control]\nslice_bits = 11\n",
            "above 10: a member's join could need more",
        ),
        ("[igmp]\nrobustness = 0\n", "at least 1"),
        ("mode = \"vip\"\n", "needs vip.address"),
        ("[vip]\naddress = \"10.200.0.1\"\n", "mode is not"),
        (
            "mode = \"vip\"\n[vip]\naddress = \"224.0.0.9\"\n",
            "not a unicast",
        ),
        (
            "mode = \"vip\"\nstrategy = \"handoff\"\n[vip]\naddress = \"10.200.0.1\"\n",
            "not available in VIP mode",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n",
            "needs vip.forward_overlay",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n\
             forward_overlay = \"10.99.0.1/24\"\n",
            "host bits are set (did you mean 10.99.0.0/24?)",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n\
             forward_overlay = \"10.99.0.0/31\"\n",
            "prefix length must be 16..=30",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.99.0.1\"\n\
             forward_overlay = \"10.99.0.0/24\"\n",
            "inside vip.forward_overlay",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n\
             forward_overlay = \"10.99.0.0/24\"\nforward_vni = 16777216\n",
            "not a 24-bit VXLAN id",
        ),
        ("[vip]\nforward_overlay = \"10.99.0.0/24\"\n", "mode is not"),
        ("[vip]\nport = 80\n", "unknown field"),
        ("[reallocation]\nhold_ms = 0\n", "must be non-zero"),
        (
            "[reallocation]\ndirect_path = \"10.0.0.1\"\n",
            "socket address",
        ),
        ("metrics_listen = \"localhost\"\n", "invalid socket address"),
        ("admin_socket = \"\"\n", "admin_socket is empty"),
        (
            "[keystore]\nserver = \"127.0.0.1:53\"\ntrust_anchor = \"/t\"\n",
            "exactly one group key source",
        ),
    ];
    for (extra, want) in cases {
        // Later keys would be duplicates of MINIMAL's: drop the ones the case redefines.
        let base: String = MINIMAL
            .lines()
            .filter(|l| !(extra.starts_with("group =") && l.starts_with("group =")))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = Config::parse(&format!("{base}{extra}")).unwrap_err().0;
        assert!(e.contains(want), "{extra:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = Config::parse("group = \"232.1.1.1\"\n").unwrap_err().0;
    assert!(e.contains("missing field"), "{e}");
}

/// `MINIMAL` with `group_pub` replaced by `extra`.
fn keystore_file(extra: &str) -> String {
    let base: String = MINIMAL
        .lines()
        .filter(|l| !l.starts_with("group_pub"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{base}{extra}")
}

#[test]
fn keystore_table_with_defaults_and_its_errors() {
    let c = Config::parse(&keystore_file(
        "[keystore]\nserver = \"10.0.0.53:53\"\ntrust_anchor = \"/var/lib/ks/trust-anchor.conf\"\n",
    ))
    .unwrap();
    let GroupKeySource::Keystore(ks) = c.group_key_source().unwrap() else {
        panic!("not the keystore");
    };
    assert_eq!(ks.server, "10.0.0.53:53".parse().unwrap());
    assert_eq!(ks.refresh(), Duration::from_secs(5));
    assert_eq!(ks.start_timeout(), Duration::from_secs(10));
    assert_eq!(ks.max_stale_ms, None);
    assert!(!ks.require_certificate);
    let c = Config::parse(&keystore_file(
        "[keystore]\nserver = \"10.0.0.53:53\"\ntrust_anchor = \"/t\"\nrefresh_ms = 700\n\
         max_stale_ms = 9000\nstart_timeout_ms = 1500\nrequire_certificate = true\n",
    ))
    .unwrap();
    let ks = c.keystore.as_ref().unwrap();
    assert_eq!(ks.refresh_ms, 700);
    assert_eq!(ks.max_stale_ms, Some(9000));
    assert_eq!(ks.start_timeout_ms, 1500);
    assert!(ks.require_certificate);
    let cases = [
        ("", "no group key source"),
        (
            "[keystore]\ntrust_anchor = \"/t\"\n",
            "missing field `server`",
        ),
        (
            "[keystore]\nserver = \"10.0.0.53\"\ntrust_anchor = \"/t\"\n",
            "socket address",
        ),
        (
            "[keystore]\nserver = \"10.0.0.53:53\"\ntrust_anchor = \"/t\"\nrefresh_ms = 0\n",
            "must be non-zero",
        ),
        (
            "[keystore]\nserver = \"10.0.0.53:53\"\ntrust_anchor = \"/t\"\ngroups = []\n",
            "unknown field",
        ),
    ];
    for (extra, want) in cases {
        let e = Config::parse(&keystore_file(extra)).unwrap_err().0;
        assert!(e.contains(want), "{extra:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// `group6` is optional and must be an IPv6 SSM group (ff3e::/32).
#[test]
fn group6_is_an_ipv6_ssm_group() {
    let c = Config::parse(&format!("group6 = \"ff3e::8000:1\"\n{MINIMAL}")).unwrap();
    assert_eq!(c.group6, Some("ff3e::8000:1".parse().unwrap()));
    assert_eq!(Config::parse(MINIMAL).unwrap().group6, None);
    for bad in ["ff0e::1", "ff3e:1::1", "2001:db8::1"] {
        let e = Config::parse(&format!("group6 = \"{bad}\"\n{MINIMAL}")).unwrap_err();
        assert!(e.0.contains("not in ff3e::/32"), "{bad}: {e}");
    }
}

/// `vip.address6` (SPEC.md §11.7.2): a global IPv6 VIP beside the IPv4 one, with `group6`.
#[test]
fn vip_address6_needs_vip_mode_group6_and_a_global_address() {
    let vip = "mode = \"vip\"\n[vip]\naddress = \"10.200.0.1\"\n";
    let c = Config::parse(&format!(
        "group6 = \"ff3e::8000:1\"\n{MINIMAL}{vip}address6 = \"2001:db8:f::1\"\n"
    ))
    .unwrap();
    assert_eq!(c.vip.address6, Some("2001:db8:f::1".parse().unwrap()));
    assert_eq!(
        Config::parse(&format!("{MINIMAL}{vip}"))
            .unwrap()
            .vip
            .address6,
        None
    );
    let with_group6 = format!("group6 = \"ff3e::8000:1\"\n{MINIMAL}");
    let cases = [
        (
            format!("{MINIMAL}{vip}address6 = \"2001:db8:f::1\"\n"),
            "vip.address6 2001:db8:f::1 needs group6",
        ),
        (
            format!("{with_group6}[vip]\naddress6 = \"2001:db8:f::1\"\n"),
            "vip.address6 is set but mode is not \"vip\"",
        ),
        (
            format!("{with_group6}mode = \"vip\"\n[vip]\naddress6 = \"2001:db8:f::1\"\n"),
            "needs vip.address",
        ),
        (
            format!("{with_group6}{vip}address6 = \"10.200.0.2\"\n"),
            "invalid IPv6 address",
        ),
    ];
    for (text, want) in &cases {
        let e = Config::parse(text).unwrap_err().0;
        assert!(e.contains(want), "{text:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    for bad in ["ff3e::8000:1", "::", "::1", "fe80::1", "::ffff:10.200.0.1"] {
        let text = format!("{with_group6}{vip}address6 = \"{bad}\"\n");
        let e = Config::parse(&text).unwrap_err().0;
        assert_eq!(
            e,
            format!("vip.address6 {bad} is not a global unicast IPv6 address"),
            "{bad}"
        );
    }
}

/// An IPv6 control group (issue 15 item 5): the endpoint's cluster is its id and the
/// certificate check looks among the IPv6 groups; an IPv6 direct path is taken with it.
#[test]
fn an_ipv6_control_group_is_taken() {
    let text = format!(
        "{MINIMAL}strategy = \"handoff\"\n[control]\ngroup = \"ff02::4d43:1\"\nttl = 1\n\
         [reallocation]\ndirect_path = \"[fe80::2]:4790\"\n"
    );
    let c = Config::parse(&text).unwrap();
    let g: std::net::Ipv6Addr = "ff02::4d43:1".parse().unwrap();
    assert_eq!(c.control.group, IpAddr::V6(g));
    let cc = c.control_config();
    assert_eq!(cc.group6, Some(g));
    assert_eq!(cc.cluster, control_channel::cluster_id6(g));
    assert_eq!(c.routed_control_group(), None);
}

/// Each bad IPv6 control-group setting is one line naming it, refused at load.
#[test]
fn bad_ipv6_control_groups_are_refused_at_load() {
    let cases = [
        (
            "[control]\ngroup = \"2001:db8::1\"\n",
            "control.group 2001:db8::1 is not a multicast address",
        ),
        (
            "[control]\ngroup = \"fe80::1\"\n",
            "is not a multicast address",
        ),
        (
            "[control]\ngroup = \"ff01::4d43:1\"\n",
            "control.group ff01::4d43:1 does not leave this host",
        ),
        (
            "[control]\ngroup = \"ff0f::4d43:1\"\n",
            "control.group ff0f::4d43:1 has the reserved scope 0xf",
        ),
        ("[control]\nttl = 0\n", "control.ttl 0 is outside 1..=255"),
        (
            "[control]\ngroup = \"ff02::4d43:1\"\nttl = 256\n",
            "control.ttl 256 is outside 1..=255",
        ),
        (
            "[control]\ngroup = \"ff02::4d43:1\"\nrouted = true\n",
            "control.routed needs an IPv4 control.group",
        ),
        (
            "group6 = \"ff3e::1\"\n[control]\ngroup = \"ff3e::1\"\n",
            "control.group must differ from the service group",
        ),
        (
            "strategy = \"handoff\"\n[reallocation]\ndirect_path = \"[fe80::2]:4790\"\n",
            "is IPv6 but control.group 239.77.0.1 is IPv4",
        ),
        (
            "mode = \"vip\"\nstrategy = \"forward\"\n[vip]\naddress = \"10.200.0.1\"\n\
             forward_overlay = \"10.99.0.0/24\"\n[control]\ngroup = \"ff02::4d43:1\"\n\
             [reallocation]\ndirect_path = \"[fe80::2]:4790\"\n",
            "VIP forward's overlay runs between IPv4 direct paths",
        ),
    ];
    for (extra, want) in cases {
        let e = Config::parse(&format!("{MINIMAL}{extra}")).unwrap_err().0;
        assert!(e.contains(want), "{extra:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
