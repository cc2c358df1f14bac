//! `--config FILE` and `SKIFF_*` environment variables for `skiff server` and
//! `skiff agent`, done generically over the clap command: every flag of the
//! chosen subcommand can be set in a YAML mapping by its long name
//! (`api-addr: 0.0.0.0:6443`, `disable-agent: true`, `tls-san: [a, b]`) or by
//! `SKIFF_<FLAG_NAME_UPPER_SNAKE>` (`SKIFF_API_ADDR`; a repeatable flag takes a
//! comma-separated list; a flag with its own `env` name in clap keeps it).
//!
//! Precedence: built-in default < config file < environment < command line.
//! The settings become `--long=value` arguments placed right after the
//! subcommand's name, before the user's own, so clap parses, validates and
//! reports them like typed flags. A config entry is dropped when the flag's
//! environment variable is set; both are dropped when the user passed the
//! flag (repeatable flags do not add up across sources). The file's come
//! first, then the environment's, so that between two flags that override
//! each other (`--token`, `--token-file`) the one from the stronger source
//! wins.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};
use serde_norway::Value;

/// Read when `--config` (or `SKIFF_CONFIG`) is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/skiff/config.yaml";
/// The subcommands that take a config file and `SKIFF_*` variables.
const CONFIGURABLE: &[&str] = &["server", "agent"];
/// The flag that names the config file (not settable from within it).
const CONFIG_FLAG: &str = "config";

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` alone (true/false in a config file).
    Switch,
    /// `--flag VALUE`, once.
    Value,
    /// `--flag VALUE`, repeatable (a list in a config file).
    Repeated,
}

/// One flag of a subcommand, as clap describes it.
#[derive(Debug, Clone)]
pub struct Flag {
    pub long: String,
    pub aliases: Vec<String>,
    pub short: Option<char>,
    pub kind: Kind,
    /// The environment variable that sets it.
    pub env: String,
    /// clap reads `env` itself (`#[arg(env = ...)]`), so it is not injected.
    pub clap_env: bool,
}

/// `SKIFF_` and the flag's long name in upper snake case.
pub fn env_name(long: &str) -> String {
    format!("SKIFF_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The settable flags of `cmd` (help, version and `--config` excluded).
/// Global flags appear in a subcommand once the root command is built.
pub fn flags(cmd: &Command) -> Vec<Flag> {
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if long == CONFIG_FLAG {
                return None;
            }
            let kind = match a.get_action() {
                ArgAction::SetTrue => Kind::Switch,
                ArgAction::Set => Kind::Value,
                ArgAction::Append => Kind::Repeated,
                _ => return None,
            };
            let clap_env = a.get_env().and_then(|e| e.to_str()).map(str::to_string);
            Some(Flag {
                long: long.to_string(),
                aliases: a
                    .get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                short: a.get_short(),
                kind,
                env: clap_env.clone().unwrap_or_else(|| env_name(long)),
                clap_env: clap_env.is_some(),
            })
        })
        .collect()
}

fn find_long<'a>(flags: &'a [Flag], name: &str) -> Option<&'a Flag> {
    flags
        .iter()
        .find(|f| f.long == name || f.aliases.iter().any(|a| a == name))
}

/// The long names of the flags the user passed in `args` (up to `--`).
pub fn passed(flags: &[Flag], args: &[OsString]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut i = 0;
    while i < args.len() {
        let Some(t) = args[i].to_str() else {
            i += 1;
            continue;
        };
        if t == "--" {
            break;
        }
        if let Some(rest) = t.strip_prefix("--") {
            let (name, inline) = match rest.split_once('=') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            if let Some(f) = find_long(flags, name) {
                seen.insert(f.long.clone());
                if f.kind != Kind::Switch && !inline {
                    i += 1; // its value, whatever it looks like
                }
            }
        } else if let Some(shorts) = t.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (n, c) in shorts.char_indices() {
                let Some(f) = flags.iter().find(|f| f.short == Some(c)) else {
                    continue;
                };
                seen.insert(f.long.clone());
                if f.kind != Kind::Switch {
                    if n + c.len_utf8() == shorts.len() {
                        i += 1;
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    seen
}

/// The config file the user named (`--config F`, `--config=F`, the last one
/// wins; an empty name means none), or `None` when not named.
pub fn named_config(args: &[OsString]) -> Option<OsString> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let t = &args[i];
        if t == "--" {
            break;
        }
        if t == "--config" {
            found = Some(args.get(i + 1).cloned().unwrap_or_default());
            i += 1;
        } else if let Some(v) = t.to_str().and_then(|s| s.strip_prefix("--config=")) {
            found = Some(v.into());
        }
        i += 1;
    }
    found
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn arg(long: &str, value: &str) -> String {
    format!("--{long}={value}")
}

/// The arguments of one config entry.
fn from_config(f: &Flag, v: &Value, file: &Path) -> Result<Vec<String>, String> {
    let bad = |want: &str| format!("{}: {}: expected {want}", file.display(), f.long);
    Ok(match (f.kind, v) {
        (_, Value::Null) => vec![],
        (Kind::Switch, Value::Bool(b)) => {
            if *b {
                vec![format!("--{}", f.long)]
            } else {
                vec![]
            }
        }
        (Kind::Switch, Value::String(s)) => match parse_bool(s) {
            Some(true) => vec![format!("--{}", f.long)],
            Some(false) => vec![],
            None => return Err(bad("true or false")),
        },
        (Kind::Switch, _) => return Err(bad("true or false")),
        (Kind::Repeated, Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                scalar(i)
                    .map(|s| arg(&f.long, &s))
                    .ok_or_else(|| bad("a list of values"))
            })
            .collect::<Result<_, _>>()?,
        (Kind::Value, Value::Sequence(_)) => {
            return Err(bad("a single value (the flag is not repeatable)"));
        }
        (_, v) => vec![arg(
            &f.long,
            &scalar(v).ok_or_else(|| bad("a single value"))?,
        )],
    })
}

/// The arguments of one environment variable.
fn from_env(f: &Flag, v: &str) -> Result<Vec<String>, String> {
    Ok(match f.kind {
        Kind::Switch => match parse_bool(v) {
            Some(true) => vec![format!("--{}", f.long)],
            Some(false) => vec![],
            None => return Err(format!("{}: expected true or false, not {v:?}", f.env)),
        },
        Kind::Value => vec![arg(&f.long, v)],
        Kind::Repeated => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| arg(&f.long, s))
            .collect(),
    })
}

/// The arguments that the config file (`config`: its path and text) and the
/// environment (`env`) add for `subcommand`, whose flags are `flags`, given
/// the user's own arguments `user`. Pure: the table tests drive it.
pub fn injected(
    subcommand: &str,
    flags: &[Flag],
    user: &[OsString],
    config: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut entries = serde_norway::Mapping::new();
    if let Some((file, text)) = config {
        match serde_norway::from_str::<Value>(text) {
            Ok(Value::Mapping(m)) => entries = m,
            Ok(Value::Null) => {}
            Ok(_) => {
                return Err(format!(
                    "{}: expected a mapping of flag names to values",
                    file.display()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
        for key in entries.keys() {
            let name = key.as_str().ok_or_else(|| {
                format!("{}: keys must be flag names, not {key:?}", file.display())
            })?;
            if name == CONFIG_FLAG {
                return Err(format!(
                    "{}: \"config\" cannot be set in a config file",
                    file.display()
                ));
            }
            if !flags.iter().any(|f| f.long == name) {
                return Err(format!(
                    "{}: unknown key {name:?}: `skiff {subcommand}` has no flag --{name}",
                    file.display()
                ));
            }
        }
    }
    let passed = passed(flags, user);
    let env_of = |f: &Flag| env(&f.env).filter(|v| !v.is_empty());
    let (mut from_file, mut from_environment) = (Vec::new(), Vec::new());
    for f in flags {
        if passed.contains(&f.long) {
            continue;
        }
        if let Some(v) = env_of(f) {
            if !f.clap_env {
                from_environment.extend(from_env(f, &v)?);
            }
            continue;
        }
        if let (Some((file, _)), Some(v)) = (config, entries.get(f.long.as_str())) {
            from_file.extend(from_config(f, v, file)?);
        }
    }
    // File, then environment, then (after these) the user's: between flags
    // that override each other (`--token`, `--token-file`) the later wins.
    from_file.extend(from_environment);
    Ok(from_file)
}

/// Where the subcommand's name is in `argv` (after global flags), and its name.
fn subcommand_at(cmd: &Command, argv: &[OsString]) -> Option<(usize, String)> {
    let globals = flags(cmd);
    let mut i = 1;
    while i < argv.len() {
        let t = argv[i].to_str()?;
        if t == "--" {
            return None;
        }
        if let Some(rest) = t.strip_prefix("--") {
            if !rest.contains('=')
                && find_long(&globals, rest).is_some_and(|f| f.kind != Kind::Switch)
            {
                i += 1;
            }
        } else if !t.starts_with('-') {
            let sub = cmd.find_subcommand(t)?;
            return Some((i, sub.get_name().to_string()));
        }
        i += 1;
    }
    None
}

/// `argv` with the settings of the config file and of `SKIFF_*` variables of
/// `skiff server` / `skiff agent` inserted after the subcommand's name.
/// `cmd` must be built (`Command::build`), so that global flags are seen.
pub fn effective_args(cmd: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some((at, name)) = subcommand_at(cmd, &argv) else {
        return Ok(argv);
    };
    if !CONFIGURABLE.contains(&name.as_str()) {
        return Ok(argv);
    }
    let Some(sub) = cmd.find_subcommand(&name) else {
        return Ok(argv);
    };
    let flags = flags(sub);
    let user = &argv[at + 1..];
    let path: Option<PathBuf> =
        match named_config(user).or_else(|| std::env::var_os(env_name(CONFIG_FLAG))) {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p.into()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
    let text = match &path {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|e| format!("config file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let config = path.as_deref().zip(text.as_deref());
    let env = |k: &str| std::env::var(k).ok();
    let extra = injected(&name, &flags, user, config, &env)?;
    let mut out = argv[..=at].to_vec();
    out.extend(extra.into_iter().map(OsString::from));
    out.extend_from_slice(user);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, CommandFactory};
    use std::collections::HashMap;

    fn test_cmd() -> Command {
        let mut c = Command::new("skiff")
            .args_override_self(true)
            .arg(Arg::new("log-level").long("log-level").global(true))
            .subcommand(
                Command::new("server")
                    .arg(Arg::new("config").long("config"))
                    .arg(Arg::new("api-addr").long("api-addr"))
                    .arg(
                        Arg::new("token")
                            .long("token")
                            .env("SKIFF_TOKEN_CLAP")
                            .action(ArgAction::Set),
                    )
                    .arg(
                        Arg::new("disable-agent")
                            .long("disable-agent")
                            .action(ArgAction::SetTrue),
                    )
                    .arg(
                        Arg::new("tls-san")
                            .long("tls-san")
                            .short('s')
                            .action(ArgAction::Append),
                    ),
            )
            .subcommand(Command::new("version"));
        c.build();
        c
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_know_kinds_env_names_and_globals() {
        let cmd = test_cmd();
        let f = flags(cmd.find_subcommand("server").unwrap());
        let by = |n: &str| f.iter().find(|x| x.long == n).unwrap().clone();
        assert_eq!(by("api-addr").kind, Kind::Value);
        assert_eq!(by("api-addr").env, "SKIFF_API_ADDR");
        assert!(!by("api-addr").clap_env);
        assert_eq!(by("disable-agent").kind, Kind::Switch);
        assert_eq!(by("tls-san").kind, Kind::Repeated);
        assert_eq!(by("token").env, "SKIFF_TOKEN_CLAP");
        assert!(by("token").clap_env);
        assert_eq!(by("log-level").kind, Kind::Value, "global flags propagate");
        assert!(f.iter().all(|x| x.long != "config" && x.long != "help"));
    }

    #[test]
    fn injected_table() {
        let cmd = test_cmd();
        let f = flags(cmd.find_subcommand("server").unwrap());
        let file = Path::new("/etc/skiff/config.yaml");
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &str, &[(&str, &str)], &[&str], &[&str])] = &[
            // (name, config, env, user args, injected)
            ("nothing", "", &[], &[], &[]),
            ("empty mapping", "{}", &[], &[], &[]),
            (
                "config values",
                "api-addr: 0.0.0.0:6443\ndisable-agent: true\ntls-san: [a, 10.0.0.1]\nlog-level: debug\n",
                &[],
                &[],
                &[
                    "--api-addr=0.0.0.0:6443",
                    "--disable-agent",
                    "--tls-san=a",
                    "--tls-san=10.0.0.1",
                    "--log-level=debug",
                ],
            ),
            ("false switch", "disable-agent: false", &[], &[], &[]),
            (
                "string switch",
                "disable-agent: \"yes\"",
                &[],
                &[],
                &["--disable-agent"],
            ),
            ("null is unset", "api-addr: ~", &[], &[], &[]),
            ("number", "api-addr: 6443", &[], &[], &["--api-addr=6443"]),
            (
                "one value for a list",
                "tls-san: a",
                &[],
                &[],
                &["--tls-san=a"],
            ),
            (
                "env beats config",
                "api-addr: 1.1.1.1:1",
                &[("SKIFF_API_ADDR", "2.2.2.2:2")],
                &[],
                &["--api-addr=2.2.2.2:2"],
            ),
            (
                "empty env is unset",
                "api-addr: 1.1.1.1:1",
                &[("SKIFF_API_ADDR", "")],
                &[],
                &["--api-addr=1.1.1.1:1"],
            ),
            (
                "flag beats env and config",
                "api-addr: 1.1.1.1:1",
                &[("SKIFF_API_ADDR", "2.2.2.2:2")],
                &["--api-addr", "3.3.3.3:3"],
                &[],
            ),
            (
                "flag= form",
                "api-addr: 1.1.1.1:1",
                &[],
                &["--api-addr=x"],
                &[],
            ),
            (
                "a passed list replaces the config's",
                "tls-san: [a, b]",
                &[],
                &["-s", "c"],
                &[],
            ),
            (
                "file first, then env",
                "disable-agent: true",
                &[("SKIFF_API_ADDR", "e:1")],
                &[],
                &["--disable-agent", "--api-addr=e:1"],
            ),
            (
                "env list",
                "tls-san: [a]",
                &[("SKIFF_TLS_SAN", "x, y,")],
                &[],
                &["--tls-san=x", "--tls-san=y"],
            ),
            (
                "env switch off beats config on",
                "disable-agent: true",
                &[("SKIFF_DISABLE_AGENT", "false")],
                &[],
                &[],
            ),
            (
                "env switch on",
                "",
                &[("SKIFF_DISABLE_AGENT", "1")],
                &[],
                &["--disable-agent"],
            ),
            (
                "clap's own env var is left to clap and beats config",
                "token: fromfile",
                &[("SKIFF_TOKEN_CLAP", "fromenv")],
                &[],
                &[],
            ),
            ("config token", "token: t", &[], &[], &["--token=t"]),
            (
                "a value that looks like a flag is not a flag",
                "disable-agent: true",
                &[],
                &["--api-addr", "--disable-agent"],
                &["--disable-agent"],
            ),
            (
                "nothing after --",
                "api-addr: a:1",
                &[],
                &["--", "--api-addr"],
                &["--api-addr=a:1"],
            ),
        ];
        for (name, yaml, env, user, want) in cases {
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let got = injected("server", &f, &os(user), Some((file, yaml)), &|k: &str| {
                env.get(k).cloned()
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn injected_errors_name_the_key_and_file() {
        let cmd = test_cmd();
        let f = flags(cmd.find_subcommand("server").unwrap());
        let file = Path::new("/tmp/c.yaml");
        let no_env = |_: &str| None;
        for (yaml, env, want) in [
            ("api-adr: x", None, "/tmp/c.yaml: unknown key \"api-adr\""),
            ("config: other.yaml", None, "cannot be set"),
            ("- a\n- b", None, "expected a mapping"),
            (
                "api-addr: [a, b]",
                None,
                "api-addr: expected a single value",
            ),
            (
                "disable-agent: maybe",
                None,
                "disable-agent: expected true or false",
            ),
            (
                "tls-san: [{a: b}]",
                None,
                "tls-san: expected a list of values",
            ),
            (
                "api-addr: {a: b}",
                None,
                "api-addr: expected a single value",
            ),
            ("a: [", None, "/tmp/c.yaml: "),
            (
                "",
                Some(("SKIFF_DISABLE_AGENT", "maybe")),
                "SKIFF_DISABLE_AGENT",
            ),
        ] {
            let e = match env {
                Some((k, v)) => {
                    let env = move |q: &str| (q == k).then(|| v.to_string());
                    injected("server", &f, &[], Some((file, yaml)), &env)
                }
                None => injected("server", &f, &[], Some((file, yaml)), &no_env),
            }
            .expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn effective_args_insert_after_the_subcommand_and_parse() {
        let cmd = test_cmd();
        assert_eq!(
            subcommand_at(&cmd, &os(&["skiff", "server", "--x"]))
                .unwrap()
                .0,
            1
        );
        assert_eq!(
            subcommand_at(&cmd, &os(&["skiff", "--log-level", "debug", "server"])).unwrap(),
            (3, "server".to_string())
        );
        assert_eq!(
            subcommand_at(&cmd, &os(&["skiff", "--log-level=debug", "version"])).unwrap(),
            (2, "version".to_string())
        );
        assert!(subcommand_at(&cmd, &os(&["skiff", "--help"])).is_none());
        // Not configurable: unchanged.
        let v = os(&["skiff", "version"]);
        assert_eq!(effective_args(&cmd, v.clone()).unwrap(), v);
        // A named config file that does not exist is an error naming it.
        let e = effective_args(
            &cmd,
            os(&["skiff", "server", "--config", "/nonexistent/skiff.yaml"]),
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/skiff.yaml"), "{e}");
        // A file's settings come first; the user's flag overrides them.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "api-addr: 0.0.0.0:1\ntls-san: [a]\n").unwrap();
        let file = file.to_str().unwrap();
        let args = effective_args(
            &cmd,
            os(&[
                "skiff",
                "server",
                "--config",
                file,
                "--api-addr",
                "1.2.3.4:5",
            ]),
        )
        .unwrap();
        assert_eq!(
            args,
            os(&[
                "skiff",
                "server",
                "--tls-san=a",
                "--config",
                file,
                "--api-addr",
                "1.2.3.4:5"
            ])
        );
        // args_override_self: a later occurrence wins.
        let m = cmd
            .clone()
            .try_get_matches_from(os(&["skiff", "server", "--api-addr=a", "--api-addr", "b"]))
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert_eq!(sub.get_one::<String>("api-addr").unwrap(), "b");
    }

    #[test]
    fn named_config_forms() {
        assert_eq!(named_config(&os(&["--config", "a"])), Some("a".into()));
        assert_eq!(named_config(&os(&["--config=b", "--x"])), Some("b".into()));
        assert_eq!(
            named_config(&os(&["--config=b", "--config", "c"])),
            Some("c".into())
        );
        assert_eq!(named_config(&os(&["--", "--config", "c"])), None);
        assert_eq!(named_config(&os(&["--x"])), None);
    }

    #[test]
    fn every_server_and_agent_flag_is_settable_with_a_unique_env_name() {
        let mut cmd = crate::Cli::command();
        cmd.build();
        for name in CONFIGURABLE {
            let f = flags(cmd.find_subcommand(name).unwrap());
            let mut seen = BTreeSet::new();
            for x in &f {
                assert!(seen.insert(x.env.clone()), "{name}: {} twice", x.env);
            }
            for want in ["data-dir", "token", "token-file", "log-level", "log-format"] {
                assert!(f.iter().any(|x| x.long == want), "{name}: --{want}");
            }
        }
        let server = flags(cmd.find_subcommand("server").unwrap());
        for (long, kind) in [
            ("api-addr", Kind::Value),
            ("disable-agent", Kind::Switch),
            ("tls-san", Kind::Repeated),
            ("node-name", Kind::Value),
            ("node-ip", Kind::Value),
        ] {
            let x = server.iter().find(|x| x.long == long).unwrap();
            assert_eq!(x.kind, kind, "{long}");
        }
    }
}
