//! Everyday helpers of the CLI: logging flags, `skiff kubeconfig`,
//! `skiff completion`, build information, `--token-file`, duration flags and
//! the discovery of the node's IP.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The git commit this binary was built from ("unknown" outside a checkout).
pub const GIT_COMMIT: &str = env!("SKIFF_GIT_COMMIT");
/// When it was built (RFC 3339, UTC).
pub const BUILD_DATE: &str = env!("SKIFF_BUILD_DATE");

/// `skiff version`'s line.
pub fn version_line() -> String {
    format!(
        "skiff {} (commit {GIT_COMMIT}, built {BUILD_DATE})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The certificates a server keeps in `data_dir` and their validity, one
/// line each (renewed ones: when; the CA is not renewed).
pub fn certificates(data_dir: &std::path::Path) -> String {
    use skiff_control::pki::CertInfo;
    let when = |t: std::time::SystemTime| {
        jiff::Timestamp::try_from(t).map_or_else(|_| "?".to_string(), |t| t.to_string())
    };
    let mut out = String::new();
    for (what, file, renewed) in [
        ("cluster CA", "ca.crt", false),
        ("API serving", "tls/serving.crt", true),
        ("Raft peer", "tls/peer.crt", true),
    ] {
        let path = data_dir.join(file);
        let line = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| CertInfo::from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(info) => {
                let mut l = format!(
                    "{what}: {} valid {} to {}",
                    info.common_name.as_deref().unwrap_or_default(),
                    when(info.not_before),
                    when(info.not_after)
                );
                if renewed {
                    l.push_str(&format!(", renewed from {}", when(info.renew_at())));
                }
                l
            }
            Err(e) => format!("{what}: {}: {e}", path.display()),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Tell the API's `/version` what this binary is.
pub fn publish_build_info() {
    skiff_control::api::discovery::set_build_info(skiff_control::api::discovery::BuildInfo {
        commit: GIT_COMMIT,
        date: BUILD_DATE,
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging flags, global to every subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`debug`, `info,skiff_node=debug`). Given, it wins
    /// over RUST_LOG; without it RUST_LOG applies, else `info`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

/// The default filter: `info` without the chatter of raft and sled.
const DEFAULT_FILTER: &str = "info,raft=warn,sled=warn";

/// The log filter: `--log-level` > `RUST_LOG` > the default. `info` keeps
/// raft and sled at warn; any other level or filter is taken as it is.
pub fn log_filter(level: Option<&str>, rust_log: Option<&str>) -> String {
    match (level.map(str::trim).filter(|l| !l.is_empty()), rust_log) {
        (Some(l), _) if l.eq_ignore_ascii_case("info") => DEFAULT_FILTER.into(),
        (Some(l), _) => l.into(),
        (None, Some(r)) if !r.trim().is_empty() => r.into(),
        _ => DEFAULT_FILTER.into(),
    }
}

/// Install the tracing subscriber (stderr).
pub fn init_logging(a: &LogArgs) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = log_filter(a.log_level.as_deref(), rust_log.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| format!("invalid log level {filter:?}: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match a.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct KubeconfigArgs {
    /// The server's data directory (it wrote `kubeconfig` there).
    #[arg(long, default_value = "./skiff-data", env = "SKIFF_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// `skiff kubeconfig`: the admin kubeconfig on stdout.
pub fn print_kubeconfig(a: &KubeconfigArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let path = a.data_dir.join("kubeconfig");
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (is this a server's data directory? see --data-dir)",
            path.display()
        )
    })?;
    std::io::stdout().write_all(&text)?;
    Ok(())
}

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    pub shell: clap_complete::Shell,
}

/// `skiff completion SHELL`: the completion script on stdout.
pub fn print_completion(a: &CompletionArgs, mut cmd: clap::Command) -> anyhow::Result<()> {
    use std::io::Write;
    // Into a buffer first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "skiff", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The token: `--token`, or the first line of `--token-file`.
pub fn token(token: Option<String>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = file else {
        return Ok(token);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        anyhow::bail!("token file {} is empty", path.display());
    }
    Ok(Some(t))
}

/// A Go duration (`30s`, `1m30s`), or a bare number of seconds (what
/// integer flags used to take).
pub fn duration_or_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    skiff_common::scale::parse_duration(s)
}

/// The interface of the default IPv4 route in `/proc/net/route` text (the
/// one with the lowest metric), if there is one.
pub fn default_route_interface(route: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) =
                (*f.first()?, *f.get(1)?, *f.get(3)?, *f.get(6)?, *f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u64 = metric.parse().ok()?;
            (dest == "00000000" && mask == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The first IPv4 address of interface `name` (`getifaddrs`: no packet sent).
fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .filter_map(|a| Some(a.address?.as_sockaddr_in()?.ip()))
        .find(|ip| !ip.is_unspecified())
}

/// This host's address for `--node-ip` when it is not given: the IPv4
/// address of the default route's interface, or 127.0.0.1 without a default
/// route. Reads `/proc/net/route` and the interface list; sends nothing.
pub fn discover_node_ip() -> IpAddr {
    let found = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|r| default_route_interface(&r))
        .and_then(|iface| interface_ipv4(&iface));
    IpAddr::V4(found.unwrap_or(Ipv4Addr::LOCALHOST))
}

/// A byte size as a Kubernetes quantity (`10Mi`, `512Ki`, `1000000`).
pub fn byte_quantity(s: &str) -> Result<u64, String> {
    skiff_common::quantity::parse(s)
        .filter(|v| v.is_finite() && *v >= 1.0)
        .map(|v| v as u64)
        .ok_or_else(|| format!("{s:?} is not a size (like 10Mi)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn default_route_interface_table() {
        let row = |iface: &str, dest: &str, flags: &str, metric: u32, mask: &str| {
            format!("{iface}\t{dest}\t010200C0\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n")
        };
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("empty", ROUTE.to_string(), None),
            ("nothing at all", String::new(), None),
            (
                "one default",
                format!(
                    "{ROUTE}{}{}",
                    row("eth0", "00000000", "0003", 0, "00000000"),
                    row("eth0", "000200C0", "0001", 0, "00FFFFFF")
                ),
                Some("eth0"),
            ),
            (
                "no default, only a subnet",
                format!("{ROUTE}{}", row("eth0", "000200C0", "0001", 0, "00FFFFFF")),
                None,
            ),
            (
                "lowest metric wins",
                format!(
                    "{ROUTE}{}{}",
                    row("wlan0", "00000000", "0003", 600, "00000000"),
                    row("enp3s0", "00000000", "0003", 100, "00000000")
                ),
                Some("enp3s0"),
            ),
            (
                "a route that is not up is skipped",
                format!(
                    "{ROUTE}{}{}",
                    row("eth1", "00000000", "0002", 0, "00000000"),
                    row("eth0", "00000000", "0003", 50, "00000000")
                ),
                Some("eth0"),
            ),
            (
                "garbage lines are skipped",
                format!(
                    "{ROUTE}short line\n{}",
                    row("eth0", "00000000", "0003", 0, "00000000")
                ),
                Some("eth0"),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(default_route_interface(&text).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn discovered_node_ip_is_ipv4_and_local() {
        let ip = discover_node_ip();
        assert!(ip.is_ipv4() && !ip.is_unspecified(), "{ip}");
        assert!(interface_ipv4("no-such-interface0").is_none());
        assert_eq!(interface_ipv4("lo"), Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn durations_take_go_syntax_and_bare_seconds() {
        for (s, want) in [
            ("10", Some(10)),
            ("0", Some(0)),
            ("30s", Some(30)),
            ("1m30s", Some(90)),
            ("2h", Some(7200)),
            ("", None),
            ("-5", None),
            ("10x", None),
        ] {
            assert_eq!(duration_or_secs(s).ok().map(|d| d.as_secs()), want, "{s:?}");
        }
        assert_eq!(
            duration_or_secs("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn log_filter_precedence() {
        for (level, rust_log, want) in [
            (None, None, DEFAULT_FILTER),
            (None, Some("debug"), "debug"),
            (None, Some(" "), DEFAULT_FILTER),
            (Some("info"), Some("debug"), DEFAULT_FILTER),
            (Some("debug"), Some("warn"), "debug"),
            (Some("warn"), None, "warn"),
            (Some("info,skiff_node=trace"), None, "info,skiff_node=trace"),
        ] {
            assert_eq!(log_filter(level, rust_log), want, "{level:?} {rust_log:?}");
        }
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "abc123\n").unwrap();
        assert_eq!(
            token(Some("x".into()), Some(&f)).unwrap().as_deref(),
            Some("abc123")
        );
        assert_eq!(token(Some("x".into()), None).unwrap().as_deref(), Some("x"));
        assert_eq!(token(None, None).unwrap(), None);
        std::fs::write(&f, "\n").unwrap();
        assert!(token(None, Some(&f)).is_err());
        assert!(token(None, Some(&dir.path().join("missing"))).is_err());
    }
}
