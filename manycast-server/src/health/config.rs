//! The `[[health]]` tables of the server configuration (SPEC.md §11.9): what each check probes
//! and its timing, with keepalived/HAProxy-like defaults, checked into a [`CheckSpec`] with
//! one-line errors naming the check and the field.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Every how long a check runs by default (HAProxy's `inter`).
pub const DEFAULT_INTERVAL_MS: u64 = 2_000;
/// How long a check may take by default (keepalived's `connect_timeout` is 5 s; shorter here
/// because it must stay below the interval).
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Passes in a row that bring a check up (HAProxy's `rise`).
pub const DEFAULT_RISE: u32 = 2;
/// Failures in a row that take a check down (HAProxy's `fall`).
pub const DEFAULT_FALL: u32 = 3;

/// What a check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `GET` over HTTP/1.1; passes on the expected status.
    Http,
    /// The same `GET` over TLS (keepalived's `SSL_GET`), the certificate verified by default.
    Https,
    /// A TCP connect; passes when it is accepted.
    Tcp,
    /// A command; passes on exit status 0.
    Command,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Tcp => "tcp",
            CheckKind::Command => "command",
        }
    }
}

/// `target`: a URL or `host:port` (a string), or a command's argv (an array).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Target {
    Text(String),
    Argv(Vec<String>),
}

/// One `[[health]]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The check's name in status and metrics; default `<kind>-<n>` (n from 1, in file order).
    #[serde(default)]
    pub name: Option<String>,
    pub kind: CheckKind,
    pub target: Target,
    /// `http` and `https` only; default 200.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// `https` only: a PEM file of the CA certificates to trust instead of the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `https` only: accept any certificate (self-signed local services; HAProxy's `verify
    /// none`). The handshake still runs; who answers is not checked.
    #[serde(default)]
    pub danger_skip_verify: bool,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_rise() -> u32 {
    DEFAULT_RISE
}
fn default_fall() -> u32 {
    DEFAULT_FALL
}

/// What to probe, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path HTTP/1.1` to `host:port` with `Host: host`.
    Http {
        host: String,
        port: u16,
        path: String,
        expect_status: u16,
    },
    /// The same over TLS: the certificate checked by `verify` for the name `host`.
    Https {
        host: String,
        port: u16,
        path: String,
        expect_status: u16,
        verify: Verify,
    },
    /// Connect to `addr` (`host:port`; a name is resolved at each check, within the timeout).
    Tcp { addr: String },
    /// Run `argv` (no shell); exit 0 passes.
    Command { argv: Vec<String> },
}

/// How an `https` check verifies the server's certificate (chain, validity, and the URL's host
/// as its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the system's root certificates (`/etc/ssl/certs`, or `SSL_CERT_FILE`).
    SystemRoots,
    /// Against the CA certificates of this PEM file only (read when the daemon starts).
    CaFile(PathBuf),
    /// Not at all: any certificate is taken.
    DangerSkip,
}

/// One check, checked: what it probes and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl CheckSpec {
    pub fn kind(&self) -> CheckKind {
        match self.probe {
            Probe::Http { .. } => CheckKind::Http,
            Probe::Https { .. } => CheckKind::Https,
            Probe::Tcp { .. } => CheckKind::Tcp,
            Probe::Command { .. } => CheckKind::Command,
        }
    }

    /// The target as the configuration wrote it (for status).
    pub fn target(&self) -> String {
        match &self.probe {
            Probe::Http {
                host, port, path, ..
            } => format!("http://{}:{port}{path}", url_host(host)),
            Probe::Https {
                host, port, path, ..
            } => format!("https://{}:{port}{path}", url_host(host)),
            Probe::Tcp { addr } => addr.clone(),
            Probe::Command { argv } => argv.join(" "),
        }
    }
}

/// Checks every `[[health]]` table; the error names the check (`health[n]`, n from 1) and the
/// field.
pub fn specs(checks: &[HealthCheckConfig]) -> Result<Vec<CheckSpec>, String> {
    let mut out: Vec<CheckSpec> = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let at = format!("health[{}]", i + 1);
        let spec = spec(c, i + 1).map_err(|e| format!("{at}: {e}"))?;
        if out.iter().any(|o| o.name == spec.name) {
            return Err(format!("{at}: name {:?} is used twice", spec.name));
        }
        out.push(spec);
    }
    Ok(out)
}

fn spec(c: &HealthCheckConfig, n: usize) -> Result<CheckSpec, String> {
    let name = match &c.name {
        Some(s)
            if s.is_empty()
                || s.len() > 64
                || !s
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch)) =>
        {
            // It is a metrics label value and a word in `manycastctl` tables.
            return Err("name must be 1 to 64 of A-Z a-z 0-9 - _ . :".into());
        }
        Some(s) => s.clone(),
        None => format!("{}-{n}", c.kind.as_str()),
    };
    if c.interval_ms == 0 || c.timeout_ms == 0 {
        return Err("interval_ms and timeout_ms must be non-zero".into());
    }
    if c.timeout_ms >= c.interval_ms {
        return Err(format!(
            "timeout_ms {} must be below interval_ms {}",
            c.timeout_ms, c.interval_ms
        ));
    }
    if c.rise == 0 || c.fall == 0 {
        return Err("rise and fall must be at least 1".into());
    }
    let web = matches!(c.kind, CheckKind::Http | CheckKind::Https);
    if c.expect_status.is_some() && !web {
        return Err("expect_status is only for kind = \"http\" or \"https\"".into());
    }
    if c.kind != CheckKind::Https && (c.ca.is_some() || c.danger_skip_verify) {
        return Err("ca and danger_skip_verify are only for kind = \"https\"".into());
    }
    let expect_status = c.expect_status.unwrap_or(200);
    if !(100..=599).contains(&expect_status) {
        return Err(format!(
            "expect_status {expect_status} is not an HTTP status"
        ));
    }
    let probe = match (c.kind, &c.target) {
        (CheckKind::Http, Target::Text(url)) => {
            let (host, port, path) = web_url(url, "http", 80)?;
            Probe::Http {
                host,
                port,
                path,
                expect_status,
            }
        }
        (CheckKind::Https, Target::Text(url)) => {
            let (host, port, path) = web_url(url, "https", 443)?;
            // The certificate is checked for this name (a DNS name or an IP address).
            if rustls_pki_types::ServerName::try_from(host.as_str()).is_err() {
                return Err(format!(
                    "target {url:?}: {host:?} is not a DNS name or an IP address"
                ));
            }
            let verify = match (&c.ca, c.danger_skip_verify) {
                (Some(_), true) => {
                    return Err("ca and danger_skip_verify = true exclude each other".into())
                }
                (Some(p), false) if p.as_os_str().is_empty() => {
                    return Err("ca is empty (a PEM file of CA certificates)".into())
                }
                (Some(p), false) => Verify::CaFile(p.clone()),
                (None, true) => Verify::DangerSkip,
                (None, false) => Verify::SystemRoots,
            };
            Probe::Https {
                host,
                port,
                path,
                expect_status,
                verify,
            }
        }
        (CheckKind::Tcp, Target::Text(addr)) => {
            host_port(addr, None)?;
            Probe::Tcp { addr: addr.clone() }
        }
        (CheckKind::Command, Target::Argv(argv)) => {
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err("target: the command's argv is empty".into());
            }
            Probe::Command { argv: argv.clone() }
        }
        (CheckKind::Command, Target::Text(_)) => return Err(
            "target: a command is an argv array, e.g. [\"/usr/bin/pgrep\", \"nginx\"] (no shell)"
                .into(),
        ),
        (_, Target::Argv(_)) => {
            return Err("target: a URL or host:port string, not an array".into())
        }
    };
    Ok(CheckSpec {
        name,
        probe,
        interval: Duration::from_millis(c.interval_ms),
        timeout: Duration::from_millis(c.timeout_ms),
        rise: c.rise,
        fall: c.fall,
    })
}

/// `scheme://host[:port][/path]` into host, port and path. The scheme names the kind: an
/// `https://` URL under `kind = "http"` (or the reverse) is refused rather than guessed at, so
/// whether a check verifies a certificate is always written in its kind.
fn web_url(url: &str, scheme: &str, default_port: u16) -> Result<(String, u16, String), String> {
    let rest = match url.split_once("://") {
        Some((s, rest)) if s == scheme => rest,
        Some(("https", _)) => {
            return Err(format!(
                "target {url:?}: an https:// URL needs kind = \"https\""
            ))
        }
        Some(("http", _)) => {
            return Err(format!(
                "target {url:?}: an http:// URL needs kind = \"http\""
            ))
        }
        _ => return Err(format!("target {url:?} is not an {scheme}:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "target {url:?}: the path has a space or control character"
        ));
    }
    let (host, port) = host_port(authority, Some(default_port))?;
    Ok((host, port, path.to_owned()))
}

/// `host:port` (or `host` with a default port); `[v6]:port` and `[v6]` are taken too, the
/// host without its brackets.
fn host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let bad = || format!("target {s:?} is not host:port");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after.strip_prefix(':') {
            Some(p) => (v6, p.parse::<u16>().map_err(|_| bad())?),
            None if after.is_empty() => (v6, default_port.ok_or_else(bad)?),
            None => return Err(bad()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            None => (s, default_port.ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    };
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// A host as a URL writes it: an IPv6 address in brackets.
pub fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<CheckSpec>, String> {
        #[derive(Deserialize)]
        struct F {
            health: Vec<HealthCheckConfig>,
        }
        let f: F = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        specs(&f.health)
    }

    #[test]
    fn defaults_and_targets() {
        let s = parse(
            r#"
            [[health]]
            kind = "http"
            target = "http://127.0.0.1:8080/healthz"
            [[health]]
            kind = "tcp"
            target = "localhost:443"
            name = "tls"
            [[health]]
            kind = "command"
            target = ["/usr/bin/pgrep", "nginx"]
            interval_ms = 500
            timeout_ms = 400
            rise = 1
            fall = 1
            "#,
        )
        .unwrap();
        assert_eq!(s[0].name, "http-1");
        assert_eq!(
            s[0].probe,
            Probe::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/healthz".into(),
                expect_status: 200
            }
        );
        assert_eq!(s[0].interval, Duration::from_millis(2_000));
        assert_eq!(s[0].timeout, Duration::from_millis(1_000));
        assert_eq!((s[0].rise, s[0].fall), (2, 3));
        assert_eq!(s[1].name, "tls");
        assert_eq!(s[1].target(), "localhost:443");
        assert_eq!(s[2].kind(), CheckKind::Command);
        assert_eq!((s[2].rise, s[2].fall), (1, 1));
        let s = parse("[[health]]\nkind = \"http\"\ntarget = \"http://web\"\n").unwrap();
        assert_eq!(s[0].target(), "http://web:80/");
    }

    #[test]
    fn https_checks_verify_by_default() {
        let s = parse(
            r#"
            [[health]]
            kind = "https"
            target = "https://www.example.com/healthz"
            [[health]]
            kind = "https"
            target = "https://127.0.0.1:8443"
            ca = "/etc/manycast/web-ca.pem"
            expect_status = 204
            [[health]]
            kind = "https"
            target = "https://localhost:8443/"
            danger_skip_verify = true
            "#,
        )
        .unwrap();
        assert_eq!(s[0].name, "https-1");
        assert_eq!(s[0].kind(), CheckKind::Https);
        assert_eq!(
            s[0].probe,
            Probe::Https {
                host: "www.example.com".into(),
                port: 443,
                path: "/healthz".into(),
                expect_status: 200,
                verify: Verify::SystemRoots,
            }
        );
        assert_eq!(s[0].target(), "https://www.example.com:443/healthz");
        assert_eq!(
            s[1].probe,
            Probe::Https {
                host: "127.0.0.1".into(),
                port: 8443,
                path: "/".into(),
                expect_status: 204,
                verify: Verify::CaFile("/etc/manycast/web-ca.pem".into()),
            }
        );
        assert!(matches!(
            &s[2].probe,
            Probe::Https {
                verify: Verify::DangerSkip,
                ..
            }
        ));
        // Regression: an IPv6 literal is the address, not a name with brackets.
        let s = parse("[[health]]\nkind = \"https\"\ntarget = \"https://[::1]/h\"\n").unwrap();
        assert!(
            matches!(&s[0].probe, Probe::Https { host, port: 443, .. } if host == "::1"),
            "{:?}",
            s[0].probe
        );
        assert_eq!(s[0].target(), "https://[::1]:443/h");
    }

    #[test]
    fn bad_checks_are_named_in_one_line() {
        let cases = [
            (
                "kind = \"http\"\ntarget = \"https://a:443/\"",
                "an https:// URL needs kind = \"https\"",
            ),
            (
                "kind = \"https\"\ntarget = \"http://a/\"",
                "an http:// URL needs kind = \"http\"",
            ),
            (
                "kind = \"http\"\ntarget = \"ftp://a/\"",
                "not an http:// URL",
            ),
            ("kind = \"https\"\ntarget = \"a:443\"", "not an https:// URL"),
            ("kind = \"https\"\ntarget = \"https://a:x/\"", "not host:port"),
            (
                "kind = \"https\"\ntarget = \"https://a_b!/\"",
                "not a DNS name or an IP address",
            ),
            (
                "kind = \"http\"\ntarget = \"http://a/\"\nca = \"/ca.pem\"",
                "ca and danger_skip_verify are only for kind = \"https\"",
            ),
            (
                "kind = \"tcp\"\ntarget = \"a:443\"\ndanger_skip_verify = true",
                "only for kind = \"https\"",
            ),
            (
                "kind = \"https\"\ntarget = \"https://a/\"\nca = \"/ca.pem\"\ndanger_skip_verify = true",
                "exclude each other",
            ),
            ("kind = \"https\"\ntarget = \"https://a/\"\nca = \"\"", "ca is empty"),
            (
                "kind = \"https\"\ntarget = \"https://a/\"\nexpect_status = 600",
                "not an HTTP status",
            ),
            ("kind = \"tcp\"\ntarget = \"a\"", "not host:port"),
            ("kind = \"tcp\"\ntarget = \"a:0\"", "not host:port"),
            ("kind = \"tcp\"\ntarget = \"[::1\"", "not host:port"),
            ("kind = \"tcp\"\ntarget = \"[a]:1\"", "not host:port"),
            ("kind = \"http\"\ntarget = \"http://[::1]x/\"", "not host:port"),
            (
                "kind = \"tcp\"\ntarget = \"a:1\"\nexpect_status = 200",
                "only for kind",
            ),
            (
                "kind = \"tcp\"\ntarget = \"a:1\"\ntimeout_ms = 2000",
                "below interval_ms",
            ),
            ("kind = \"tcp\"\ntarget = \"a:1\"\nrise = 0", "at least 1"),
            ("kind = \"command\"\ntarget = \"pgrep nginx\"", "argv array"),
            ("kind = \"command\"\ntarget = []", "argv is empty"),
            (
                "kind = \"tcp\"\ntarget = \"a:1\"\nname = \"a b\"",
                "name must be",
            ),
            (
                "kind = \"tcp\"\ntarget = \"a:1\"\nname = \"\"",
                "name must be",
            ),
            (
                "kind = \"http\"\ntarget = \"http://a/\"\nexpect_status = 42",
                "not an HTTP status",
            ),
        ];
        for (body, want) in cases {
            let e = parse(&format!("[[health]]\n{body}\n")).unwrap_err();
            assert!(
                e.starts_with("health[1]: ") && e.contains(want),
                "{body}: {e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        let e = parse("[[health]]\nkind = \"tcp\"\ntarget = \"a:1\"\n[[health]]\nkind = \"tcp\"\ntarget = \"b:1\"\nname = \"tcp-1\"\n").unwrap_err();
        assert!(e.contains("health[2]: name \"tcp-1\" is used twice"), "{e}");
        let e = parse("[[health]]\nkind = \"tcp\"\ntarget = \"a:1\"\nport = 3\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
