//! Health checks end to end (SPEC.md §11.9): two real `manycast-server`s, member 2 with a check
//! against a service the test runs in its namespace. TCP, behind the real verifier: the service
//! stops, member 2's units move to member 1 (claim withdrawn at once) and the router steers
//! every client there; it starts again, and after `rise` passes member 2 takes units back. HTTP,
//! behind a plain flooding switch: the service flaps (200 and 503 by turns: never `fall`
//! failures in a row, so nothing moves), then answers 503: member 2 drains (planned),
//! `manycastctl` shows it degraded and says why it cannot resume it; 200 again brings it back.
//! HTTPS, against `openssl s_server` with a private CA: verified with `ca`, refused against the
//! system's roots (the member stays out, planned), taken with `danger_skip_verify`, dead once
//! killed; a CA file that cannot be read stops `--check-config` with one line.

use crate::harness::{in_netns, steered_members, verifier_status, wait_for, Clients, Lab, Routed};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const SWITCHED: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 101), Ipv4Addr::new(10, 1, 0, 102)];
const CHECK_PORT: u16 = 18_080;
/// The HTTP service's status setting for "200 and 503 by turns".
const FLAP: u16 = 0;

/// A TCP service in a namespace that accepts (and closes) every connection until stopped;
/// stopped, its port is closed and a connect is refused. With `http`, it answers each request
/// with that status.
struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn answer_http(mut c: std::net::TcpStream, status: u16) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 1024];
    let _ = c.read(&mut buf);
    let _ = c.write_all(
        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
}

impl Service {
    fn start(ns: &str) -> Service {
        Service::start_http(ns, None)
    }

    fn start_http(ns: &str, http: Option<Arc<AtomicU16>>) -> Service {
        let listener = in_netns(ns, || {
            TcpListener::bind(("127.0.0.1", CHECK_PORT)).expect("bind the checked service")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answered = 0u64;
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => match &http {
                        Some(status) => {
                            answered += 1;
                            let code = match status.load(Ordering::Relaxed) {
                                // Flapping: 200 and 503 by turns, one failure in a row at most.
                                FLAP => [200, 503][usize::from(answered % 2 == 0)],
                                code => code,
                            };
                            answer_http(c, code)
                        }
                        None => drop(c),
                    },
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Service {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.halt();
    }
}

fn ctl(lab: &Lab, i: usize, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_manycastctl"))
        .args(args)
        .arg("--socket")
        .arg(lab.admin_socket(i))
        .output()
        .expect("run manycastctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn health_out(lab: &Lab) -> Option<String> {
    lab.admin_status(1)
        .and_then(|s| s.health.out)
        .map(|e| format!("{e:?}"))
}

#[test]
fn a_member_whose_service_fails_its_check_gives_its_units_away_until_it_rises() {
    // As `native.rs`: two members on their own subnets behind a router running the real
    // verifier, their control group on a back-end switch.
    let mut lab = Lab::new(2);
    let srcs: Vec<Ipv4Addr> = (2..14).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    let Routed {
        router,
        client,
        servers,
        ..
    } = lab.routed(2, &srcs);
    let socket = lab.start_verifier(&router, &["c0", "s1", "s2"], "", Some("debug"));
    let health = format!(
        "\n[[health]]\nname = \"web\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:{CHECK_PORT}\"\n\
         interval_ms = 200\ntimeout_ms = 100\nrise = 2\nfall = 2\n"
    );
    let service = Service::start(&servers[1]);
    lab.start_server(0, &servers[0], "m0", "ctl0");
    lab.start_server_with(
        1,
        &servers[1],
        "m0",
        "ctl0",
        "strategy = \"reset\"",
        &health,
    );
    lab.wait_split();
    wait_for("the verifier steers to both members", || {
        verifier_status(&socket).is_some_and(|s| steered_members(&s) == [Some(1), Some(2)].into())
    });

    wait_for("member 2's status shows its one check up", || {
        lab.admin_status(1).is_some_and(|s| {
            s.health.checks.len() == 1 && s.health.checks[0].up && s.health.out.is_none()
        })
    });

    // The service stops: connects are refused, so after `fall` failures member 2 leaves the
    // allocation at once, and member 1 takes everything.
    service.stop();
    wait_for("member 1 owns every address, member 2 none", || {
        lab.metric(0, "slice_addresses") == 1 << 32 && lab.metric(1, "slice_addresses") == 0
    });
    wait_for(
        "the verifier steers everything to member 1 and holds no claim of member 2",
        || {
            verifier_status(&socket).is_some_and(|s| {
                steered_members(&s) == [Some(1)].into() && s.ownership.iter().all(|r| r.member != 2)
            })
        },
    );
    assert_eq!(health_out(&lab).as_deref(), Some("Immediate"));
    wait_for("member 2's metrics say it is out", || {
        lab.metric(1, "health_out") == 1
    });
    let s = lab.admin_status(1).expect("member 2's status");
    let c = &s.health.checks[0];
    assert!(!c.up && c.dead_total >= 2, "{c:?}");
    assert!(
        c.last.as_deref().unwrap_or("").starts_with("dead:"),
        "{c:?}"
    );
    let me = s.members.iter().find(|m| m.me).expect("own row");
    assert_eq!((me.weight, me.units), (Some(0), 0), "{me:?}");
    let got = Clients::new(&client, &srcs).ask(1);
    let member1 = Ipv4Addr::new(10, 0, 1, 2);
    assert!(
        got.len() == srcs.len()
            && got
                .values()
                .all(|g| !g.is_empty() && g.iter().all(|(server, _)| *server == member1)),
        "every source answered by member 1: {got:?}"
    );

    // The service is back: after `rise` passes member 2 announces its weight again and takes
    // units back.
    let _service = Service::start(&servers[1]);
    wait_for("both members own slices again", || {
        lab.metric(0, "slices") > 0
            && lab.metric(1, "slices") > 0
            && lab.metric(0, "epoch") == lab.metric(1, "epoch")
    });
    wait_for("member 2's health is up in its status", || {
        lab.admin_status(1).is_some_and(|s| {
            s.health.out.is_none() && s.health.checks.first().is_some_and(|c| c.up)
        })
    });
    wait_for("the verifier steers to both members again", || {
        verifier_status(&socket).is_some_and(|s| steered_members(&s) == [Some(1), Some(2)].into())
    });
    assert!(lab.logs().contains("health checks up again: released"));
}

#[test]
fn a_degraded_http_service_drains_its_member_and_an_operator_cannot_resume_it() {
    let mut lab = Lab::new(2);
    let sw = lab.switch("sw");
    let servers = lab.switched_servers(&sw, &SWITCHED);
    let health = format!(
        "\n[[health]]\nname = \"web\"\nkind = \"http\"\n\
         target = \"http://127.0.0.1:{CHECK_PORT}/healthz\"\n\
         interval_ms = 200\ntimeout_ms = 100\nrise = 2\nfall = 2\n"
    );
    let status = Arc::new(AtomicU16::new(200));
    let _service = Service::start_http(&servers[1], Some(status.clone()));
    lab.start_server(0, &servers[0], "eth0", "eth0");
    lab.start_server_with(
        1,
        &servers[1],
        "eth0",
        "eth0",
        "strategy = \"reset\"",
        &health,
    );
    lab.wait_split();
    let (ok, table) = ctl(&lab, 1, &["members"]);
    assert!(ok, "{table}");
    let me = table
        .lines()
        .find(|l| l.starts_with("m2*"))
        .expect("m2 row");
    assert!(me.contains(" up "), "{table}");

    // Flapping, one failure at a time (fall 2): the check never falls and no unit moves.
    let runs = |lab: &Lab| {
        lab.admin_status(1)
            .and_then(|s| {
                s.health
                    .checks
                    .first()
                    .map(|c| (c.pass_total, c.slow_total))
            })
            .unwrap_or((0, 0))
    };
    let (pass0, slow0) = runs(&lab);
    status.store(FLAP, Ordering::Relaxed);
    wait_for("ten flapping runs each way", || {
        let (pass, slow) = runs(&lab);
        pass >= pass0 + 10 && slow >= slow0 + 10
    });
    status.store(200, Ordering::Relaxed);
    assert!(
        !lab.logs().contains("health checks failing"),
        "{}",
        lab.logs()
    );
    assert!(lab.metric(1, "slices") > 0);

    // 503: answering, but not well: a planned drain.
    status.store(503, Ordering::Relaxed);
    wait_for("member 1 owns every address, member 2 none", || {
        lab.metric(0, "slice_addresses") == 1 << 32 && lab.metric(1, "slice_addresses") == 0
    });
    assert_eq!(health_out(&lab).as_deref(), Some("Planned"));
    let (ok, table) = ctl(&lab, 1, &["members"]);
    assert!(ok, "{table}");
    let me = table
        .lines()
        .find(|l| l.starts_with("m2*"))
        .expect("m2 row");
    assert!(me.contains("degraded"), "{table}");
    assert!(
        table.contains("last slow: HTTP status 503, expected 200"),
        "{table}"
    );
    // An operator's resume is held back while the check is down, and says why.
    let (ok, said) = ctl(&lab, 1, &["resume"]);
    assert!(!ok, "{said}");
    assert!(said.contains("health checks are failing (web)"), "{said}");
    assert_eq!(lab.metric(1, "slice_addresses"), 0);

    // 200 again: back after rise passes.
    status.store(200, Ordering::Relaxed);
    wait_for("both members own slices again", || {
        lab.metric(0, "slices") > 0 && lab.metric(1, "slices") > 0
    });
    wait_for("member 2's health is up in its status", || {
        lab.admin_status(1).is_some_and(|s| {
            s.health.out.is_none() && s.health.checks.first().is_some_and(|c| c.up)
        })
    });
}

/// `openssl` with `args` in `dir`; panics with its stderr unless it succeeds.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl s_server -www` in a namespace (answers `GET /` with 200), killed when dropped,
/// also when the test fails.
struct TlsService(std::process::Child);

impl TlsService {
    fn start(ns: &str, dir: &std::path::Path) -> TlsService {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "openssl", "s_server", "-quiet", "-www"])
            .args(["-accept", &format!("127.0.0.1:{TLS_PORT}")])
            .arg("-cert")
            .arg(dir.join("c.pem"))
            .arg("-key")
            .arg(dir.join("k.pem"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        TlsService(child)
    }
}

impl Drop for TlsService {
    fn drop(&mut self) {
        // `ip netns exec` execs openssl: the child is the server.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TLS_PORT: u16 = 18_443;

fn check_last(lab: &Lab, i: usize, name: &str) -> (bool, String) {
    lab.admin_status(i)
        .and_then(|s| s.health.checks.into_iter().find(|c| c.name == name))
        .map(|c| (c.up, c.last.unwrap_or_default()))
        .unwrap_or_default()
}

#[test]
fn https_checks_verify_the_certificate_unless_told_not_to() {
    let mut lab = Lab::new(2);
    // A private CA and a certificate it signed for `localhost` only.
    let dir = lab.dir.path().to_owned();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=manycast test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "k.pem",
            "-out",
            "c.csr",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-CAcreateserial",
            "-in",
            "c.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-extfile",
            "ext",
            "-out",
            "c.pem",
        ],
    );
    let sw = lab.switch("sw");
    let servers = lab.switched_servers(&sw, &SWITCHED);
    let _tls1 = TlsService::start(&servers[0], &dir);
    let tls2 = TlsService::start(&servers[1], &dir);
    let timing = "interval_ms = 400\ntimeout_ms = 300\nrise = 2\nfall = 2\n";
    // Member 1 verifies against the system's roots, which do not hold the private CA: never up.
    let unverified = format!(
        "\n[[health]]\nname = \"unverified\"\nkind = \"https\"\n\
         target = \"https://localhost:{TLS_PORT}/\"\n{timing}"
    );
    // Member 2 verifies against the CA, and also checks by address with verification off.
    let verified = format!(
        "\n[[health]]\nname = \"verified\"\nkind = \"https\"\n\
         target = \"https://localhost:{TLS_PORT}/\"\nca = \"{ca}\"\n{timing}\
         \n[[health]]\nname = \"skipped\"\nkind = \"https\"\n\
         target = \"https://127.0.0.1:{TLS_PORT}/\"\ndanger_skip_verify = true\n{timing}",
        ca = dir.join("ca.pem").display()
    );
    lab.start_server_with(0, &servers[0], "eth0", "eth0", "", &unverified);
    lab.start_server_with(
        1,
        &servers[1],
        "eth0",
        "eth0",
        "strategy = \"reset\"",
        &verified,
    );

    wait_for("member 2's checks are up and it owns every address", || {
        check_last(&lab, 1, "verified").0
            && check_last(&lab, 1, "skipped").0
            && lab.metric(1, "slice_addresses") == 1 << 32
            && lab.metric(0, "slice_addresses") == 0
    });
    assert_eq!(check_last(&lab, 1, "verified").1, "pass");
    assert!(lab.admin_status(1).is_some_and(|s| s.health.out.is_none()));
    // The unverified certificate: a failed check, with rustls' reason, and member 1 held out.
    // (Status is refreshed every second; a first run may have met no listener yet.)
    let refused = "slow: TLS handshake: invalid peer certificate: UnknownIssuer";
    wait_for("member 1's check fails on the certificate", || {
        check_last(&lab, 0, "unverified").1 == refused
    });
    let s = lab.admin_status(0).expect("member 1's status");
    let c = &s.health.checks[0];
    assert!(
        !c.up && c.last.as_deref() == Some(refused) && c.slow_total > 0,
        "{c:?}"
    );
    assert_eq!(s.health.out, Some(manycast_server::health::Exit::Planned));
    assert_eq!(lab.metric(0, "slice_addresses"), 0);

    // The TLS service is killed: connects are refused, member 2 is out at once.
    drop(tls2);
    wait_for("member 2's checks are both down", || {
        !check_last(&lab, 1, "verified").0 && !check_last(&lab, 1, "skipped").0
    });
    for name in ["verified", "skipped"] {
        let (_, last) = check_last(&lab, 1, name);
        assert!(last.starts_with("dead: connect:"), "{name}: {last}");
    }
    let out = lab.admin_status(1).and_then(|s| s.health.out);
    assert_eq!(out, Some(manycast_server::health::Exit::Immediate));
}

#[test]
fn an_https_check_whose_ca_file_cannot_be_read_is_a_one_line_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("server.toml");
    let check = |tail: &str| {
        std::fs::write(
            &config,
            format!(
                "group = \"232.1.1.1\"\ninterface = \"lo\"\nmember_key = \"/k/m1.key\"\n\
                 member_cert = \"/k/m1.cert\"\ngroup_pub = \"/k/group.pub\"\n\
                 [control]\ngroup = \"232.1.1.2\"\n\
                 [[health]]\nname = \"web\"\ntarget = \"https://localhost/\"\n{tail}"
            ),
        )
        .expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_manycast-server"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .expect("run manycast-server");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let missing = dir.path().join("missing.pem");
    let err = check(&format!(
        "kind = \"https\"\nca = \"{}\"\n",
        missing.display()
    ));
    assert!(
        err.contains(&format!("health check \"web\": ca {}: ", missing.display())),
        "{err}"
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let err = check(&format!(
        "kind = \"https\"\nca = \"{}\"\n",
        not_pem.display()
    ));
    assert!(err.contains("no PEM CERTIFICATE in it"), "{err}");
    let err = check("kind = \"http\"\n");
    assert!(
        err.contains("an https:// URL needs kind = \"https\""),
        "{err}"
    );
    let err = check("kind = \"tcp\"\ndanger_skip_verify = true\n");
    assert!(err.contains("only for kind = \"https\""), "{err}");
}
