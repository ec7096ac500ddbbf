//! `make bench B=keystore`: record lookups served per second by the real daemon over UDP on
//! loopback (a window of outstanding queries from one socket, rate limit off), and the cost of
//! the client's cached lookup (`KeySource::group_keys`), in the same run.

use daemon_kit::wall_clock;
use dns_keystore::admin::Admin;
use dns_keystore::client::{ClientConfig, KeystoreClient};
use dns_keystore::record::GroupRecord;
use dns_keystore::validate::TrustAnchor;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use igmp_ext::fixtures::Fixture;
use igmp_ext::verify::KeySource;
use igmp_ext::Timestamp;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QUERIES: usize = 40_000;
const WINDOW: usize = 32;
const LOOKUPS: usize = 2_000_000;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("dns-keystore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(
        dir.join("ks.toml"),
        format!(
            "zone = \"groups.manycast.test\"\nstate_dir = \"{}\"\nlisten = \"{addr}\"\nrate_limit_qps = 0\n",
            dir.join("state").display()
        ),
    )
    .expect("config");
    let _daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_dns-keystore"))
            .arg("--config")
            .arg(dir.join("ks.toml"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start dns-keystore"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let f = Fixture::new(1);
    let record = GroupRecord {
        group: f.group,
        name: "web".into(),
        owner: "bench".into(),
        protected: true,
        keys: vec![f.group_key.verifying_key()],
        not_before: Timestamp::from_secs(0),
        not_after: Timestamp::from_secs(4_000_000_000),
        revoked: vec![],
        vip: Some(Ipv4Addr::new(203, 0, 113, 10)),
    };
    let state = dir.join("state");
    let client = runtime.block_on(async {
        for _ in 0..200 {
            if state.join("tsig.key").exists() && state.join("trust-anchor.conf").exists() {
                let key = std::fs::read(state.join("tsig.key")).expect("tsig key");
                let admin = Admin::new(addr, "groups.manycast.test", "manycast-admin", key, 300)
                    .expect("admin");
                if admin.publish(&record).await.is_ok() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let anchor = TrustAnchor::parse(
            &std::fs::read_to_string(state.join("trust-anchor.conf")).expect("anchor"),
        )
        .expect("anchor parses");
        let client = KeystoreClient::new(ClientConfig::new(addr, anchor));
        client
            .refresh(f.group, wall_clock())
            .await
            .expect("validated fetch");
        client
    });

    // Queries served per second: TXT with DNSSEC records, by group-address name.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("1.1.1.232.g.groups.manycast.test.").expect("name"),
        RecordType::TXT,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(true);
    q.edns = Some(edns);
    let query = q.to_vec().expect("query");
    let mut buf = [0u8; 2048];
    let (mut sent, mut answered, mut lost) = (0usize, 0usize, 0usize);
    let t = Instant::now();
    while sent < WINDOW {
        socket.send(&query).expect("send");
        sent += 1;
    }
    while answered + lost < QUERIES {
        match socket.recv(&mut buf) {
            Ok(_) => answered += 1,
            Err(_) => lost += WINDOW.min(sent - answered - lost),
        }
        if sent < QUERIES && sent - answered - lost < WINDOW {
            socket.send(&query).expect("send");
            sent += 1;
        }
    }
    let queries_per_s = answered as f64 / t.elapsed().as_secs_f64();

    // Cached lookup: what the verifier pays per protected join.
    let now = wall_clock();
    let t = Instant::now();
    for _ in 0..LOOKUPS {
        black_box(client.group_keys(black_box(f.group), now).expect("cached"));
    }
    let cached_lookup_ns = t.elapsed().as_nanos() as f64 / LOOKUPS as f64;

    eprintln!(
        "keystore: {answered} of {QUERIES} queries answered ({lost} lost), window {WINDOW}, one client socket; {LOOKUPS} cached lookups"
    );
    let line = format!(
        "{{\"bench\":\"keystore\",\"queries_per_s\":{queries_per_s:.0},\"cached_lookup_ns\":{cached_lookup_ns:.1}}}"
    );
    let out = std::env::var("MANYCAST_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench").to_string());
    std::fs::create_dir_all(&out).expect("create bench dir");
    std::fs::write(format!("{out}/keystore.json"), format!("{line}\n")).expect("write result");
    let _ = std::fs::remove_dir_all(&dir);
    println!("{line}");
}
