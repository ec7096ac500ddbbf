//! VIP-mode members for the end-to-end tests and benches: the real `manycast-server` in VIP
//! mode holding the VIP on loopback (SPEC.md §11.7), a real HTTP server (Python's
//! `http.server`, HTTP/1.1 keep-alive) bound to the VIP whose `/whoami` names the member, and
//! the clients the tests use on it (curl, a keep-alive connection).

use crate::harness::{in_netns, wait_for, Lab};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const HTTP_PORT: u16 = 8080;
/// The VXLAN overlay of strategy "forward".
pub const OVERLAY: &str = "10.99.0.0/24";

/// Whether `ns` holds the VIP on its loopback.
pub fn lo_has_vip(ns: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/32"))
}

/// Starts member `i` (0-based) in `ns` in VIP mode on `interface` with `strategy`, then, once
/// it holds the VIP, the HTTP server bound to the VIP whose `/whoami` answers `m<i+1>`.
pub fn start_vip_member(lab: &mut Lab, i: usize, ns: &str, interface: &str, strategy: &str) {
    let ns = ns.to_owned();
    lab.start_server_with(
        i,
        &ns,
        interface,
        "ctl0",
        &format!(
            "mode = \"vip\"\nstrategy = \"{strategy}\"\n[vip]\naddress = \"{VIP}\"\n{}",
            if strategy == "forward" {
                format!("forward_overlay = \"{OVERLAY}\"\n")
            } else {
                String::new()
            }
        ),
        "",
    );
    wait_for("the member holds the VIP on lo", || lo_has_vip(&ns));
    whoami_server(lab, i, &ns, IpAddr::V4(VIP), "");
}

/// Starts Python's HTTP server in `ns` bound to `vip` (the member holds it on lo), whose
/// `/whoami` answers `m<i+1>`, and waits until it listens; its files are under `www<tag><i>`.
pub fn whoami_server(lab: &mut Lab, i: usize, ns: &str, vip: IpAddr, tag: &str) {
    let www = lab.dir.path().join(format!("www{tag}{i}"));
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("whoami"), format!("m{}\n", i + 1)).expect("whoami");
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-m", "http.server"])
        .args(["--bind", &vip.to_string(), "--protocol", "HTTP/1.1"])
        .arg("--directory")
        .arg(&www)
        .arg(HTTP_PORT.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server (is python3 installed? scripts/setup.sh)");
    lab.children.push((format!("http{tag}{i}"), child));
    wait_for("the HTTP server listens on the VIP", || {
        in_netns(ns, || {
            TcpStream::connect_timeout(&(vip, HTTP_PORT).into(), Duration::from_secs(1)).is_ok()
        })
    });
}

/// `curl` from `src` in `ns`: the body of `/whoami` on a new connection.
pub fn curl(ns: &str, src: Ipv4Addr) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "5"])
        .args(["--interface", &src.to_string()])
        .arg(format!("http://{VIP}:{HTTP_PORT}/whoami"))
        .output()
        .expect("curl (is curl installed? scripts/setup.sh)");
    assert!(
        out.status.success(),
        "curl from {src}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One HTTP/1.1 keep-alive connection from a chosen source address (IPv4, or IPv6 to the
/// IPv6 VIP).
pub struct KeepAlive<A = Ipv4Addr> {
    pub src: A,
    reader: BufReader<TcpStream>,
}

impl KeepAlive<Ipv6Addr> {
    /// From `src` in `ns` to `[vip6]:HTTP_PORT`.
    pub fn open6(ns: &str, src: Ipv6Addr, vip6: Ipv6Addr) -> KeepAlive<Ipv6Addr> {
        let stream: TcpStream = in_netns(ns, || {
            let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("tcp");
            s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, 0)))
                .expect("bind");
            s.connect_timeout(
                &SockAddr::from(SocketAddrV6::new(vip6, HTTP_PORT, 0, 0)),
                Duration::from_secs(5),
            )
            .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
            s.into()
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        KeepAlive {
            src,
            reader: BufReader::new(stream),
        }
    }
}

impl KeepAlive {
    pub fn open(ns: &str, src: Ipv4Addr) -> KeepAlive {
        let stream: TcpStream = in_netns(ns, || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("tcp");
            s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
                .expect("bind");
            s.connect_timeout(
                &SockAddr::from(SocketAddrV4::new(VIP, HTTP_PORT)),
                Duration::from_secs(5),
            )
            .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
            s.into()
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        KeepAlive {
            src,
            reader: BufReader::new(stream),
        }
    }
}

impl<A> KeepAlive<A> {
    /// GET /whoami on this connection: the body, or the error that ended the connection.
    pub fn ask(&mut self) -> std::io::Result<String> {
        self.reader
            .get_mut()
            .write_all(b"GET /whoami HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut length = None;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0u8; length.ok_or(std::io::ErrorKind::InvalidData)?];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    }

    /// Without sending anything: did the server end this connection (RST or FIN)?
    pub fn was_closed(&mut self) -> Option<String> {
        let s = self.reader.get_mut();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut b = [0u8; 1];
        let r = s.read(&mut b);
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        match r {
            Ok(0) => Some("EOF".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => Some(e.to_string()),
            Ok(_) => Some("unexpected bytes".into()),
        }
    }
}
