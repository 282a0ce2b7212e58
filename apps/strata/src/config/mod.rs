//! The node's configuration: built-in defaults, then the TOML file, then
//! `STRATA_*` environment variables (the `config` crate does the layering).
//!
//! A key `section.name` is overridden by `STRATA_SECTION__NAME` (two
//! underscores between the levels; list values are comma-separated).
//! `STRATA_HOME`, `STRATA_CONFIG`, `STRATA_PASSPHRASE` and
//! `STRATA_BACKUP_PASSPHRASE` are the CLI's own
//! variables, not config keys.
//!
//! Loading reports every problem it can find at once, each with its key
//! path, where the value came from (the file or the variable) and why it is
//! wrong: unknown keys (with the nearest known key), values of the wrong
//! type, and values that parse but cannot work (a non-loopback control API,
//! a broker URL that is not `ws://`/`wss://`, a malformed multiaddr).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use config::{ConfigError, Environment, File, FileFormat, Map, Source as _, Value, ValueKind};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, ErrorKind, Result};

mod network;

use network::parse_ice_server;
pub(crate) use network::{BrokerChoice, Libp2pNetwork, Network, broker_warning, parse_broker_url};

/// Variables with the `STRATA_` prefix that belong to the CLI, not to the
/// config.
pub(crate) const RESERVED_ENV: &[&str] = &[
    "STRATA_HOME",
    "STRATA_CONFIG",
    "STRATA_PASSPHRASE",
    "STRATA_BACKUP_PASSPHRASE",
];
const ENV_PREFIX: &str = "STRATA";
const ENV_SEPARATOR: &str = "__";
/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["peerjs.ice_servers", "libp2p.listen", "libp2p.bootstrap"];

/// The file `strata init` writes: every key, its default, and what it does.
/// A test checks that it parses to [`Config::default`].
pub(crate) const DEFAULT_FILE: &str = r#"# Strata node configuration.
#
# Every key is shown with its default. Any key can be overridden by an
# environment variable: `section.name` -> STRATA_SECTION__NAME (two
# underscores; lists are comma-separated), e.g. STRATA_API__PORT=0.
# `strata config show` prints the configuration in effect.

[api]
# The control API that `strata run` serves and the other commands use.
# Loopback only (127.0.0.1 or ::1): it is guarded by the token in
# api.token, but it is never meant to be reachable from the network.
address = "127.0.0.1"
# 0 lets the system pick a free port; the daemon writes the one it got to
# api.json in the data directory.
port = 7340

[peerjs]
# Reach peers through a PeerJS broker and WebRTC data channels.
enabled = true
# "embedded" runs a PeerJS-compatible broker inside the node (see [broker]);
# otherwise the URL of a broker, e.g. "wss://broker.example.org:443/myapp/".
broker = "embedded"
# The broker key (PeerJS's `key` option).
key = "peerjs"
# STUN/TURN servers for WebRTC, e.g. ["stun:stun.example.org:3478"].
# A TURN server carries its username and credential before an "@":
# "turn:alice:s3cret@turn.example.org:3478" (the username holds no ":",
# neither holds "@"). Empty: host candidates only (same machine or LAN).
ice_servers = []

[broker]
# The embedded broker of `strata run` (when peerjs.broker = "embedded"),
# and the defaults of `strata broker`. 127.0.0.1 keeps it to this machine;
# "0.0.0.0" serves other machines too.
address = "127.0.0.1"
port = 9000
# Answer GET /<key>/peers with the ids of connected peers.
allow_discovery = false

[libp2p]
# Join the Waku-relay gossip network over libp2p.
enabled = true
# Where to listen (multiaddrs).
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
# Peers to dial at start (multiaddrs ending in /p2p/<libp2p peer id>).
bootstrap = []
# Find peers on the local network with mDNS.
mdns = false
"#;

/// The configuration, as the file spells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// `[api]`
    pub(crate) api: ApiSection,
    /// `[peerjs]`
    pub(crate) peerjs: PeerJsSection,
    /// `[broker]`
    pub(crate) broker: BrokerSection,
    /// `[libp2p]`
    pub(crate) libp2p: Libp2pSection,
}

/// `[api]`: the control API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ApiSection {
    /// A loopback address.
    pub(crate) address: String,
    /// The port; 0 for any.
    pub(crate) port: u16,
}

/// `[peerjs]`: the PeerJS transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PeerJsSection {
    /// Whether the node uses PeerJS.
    pub(crate) enabled: bool,
    /// `"embedded"` or a `ws://`/`wss://` URL.
    pub(crate) broker: String,
    /// The broker key.
    pub(crate) key: String,
    /// STUN/TURN URLs.
    pub(crate) ice_servers: Vec<String>,
}

/// `[broker]`: the embedded and the standalone broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BrokerSection {
    /// The address to bind.
    pub(crate) address: String,
    /// The port; 0 for any.
    pub(crate) port: u16,
    /// Serve the peer list.
    pub(crate) allow_discovery: bool,
}

/// `[libp2p]`: the gossip transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Libp2pSection {
    /// Whether the node joins the gossip network.
    pub(crate) enabled: bool,
    /// Listen multiaddrs.
    pub(crate) listen: Vec<String>,
    /// Bootstrap multiaddrs.
    pub(crate) bootstrap: Vec<String>,
    /// mDNS discovery.
    pub(crate) mdns: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api: ApiSection {
                address: "127.0.0.1".to_owned(),
                port: 7340,
            },
            peerjs: PeerJsSection {
                enabled: true,
                broker: "embedded".to_owned(),
                key: "peerjs".to_owned(),
                ice_servers: Vec::new(),
            },
            broker: BrokerSection {
                address: "127.0.0.1".to_owned(),
                port: 9000,
                allow_discovery: false,
            },
            libp2p: Libp2pSection {
                enabled: true,
                listen: vec!["/ip4/0.0.0.0/tcp/0".to_owned(), "/ip4/0.0.0.0/udp/0/quic-v1".to_owned()],
                bootstrap: Vec::new(),
                mdns: false,
            },
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Config::default().api
    }
}

impl Default for PeerJsSection {
    fn default() -> Self {
        Config::default().peerjs
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        Config::default().broker
    }
}

impl Default for Libp2pSection {
    fn default() -> Self {
        Config::default().libp2p
    }
}

/// Whether the config file must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileRule {
    /// The default file: the defaults apply until `init` writes it.
    MayBeAbsent,
    /// A file the user named: a typo must not silently mean defaults.
    MustExist,
}

impl Config {
    /// The control API's address (validated as loopback at load).
    pub(crate) fn api_addr(&self) -> Result<SocketAddr> {
        let ip = parse_ip(&self.api.address)
            .filter(IpAddr::is_loopback)
            .ok_or_else(|| invalid_after_load("api.address"))?;
        Ok(SocketAddr::new(ip, self.api.port))
    }

    /// Where the (embedded or standalone) broker listens.
    pub(crate) fn broker_addr(&self) -> Result<SocketAddr> {
        let ip = parse_ip(&self.broker.address).ok_or_else(|| invalid_after_load("broker.address"))?;
        Ok(SocketAddr::new(ip, self.broker.port))
    }

    /// The PeerJS broker, or `None` when PeerJS is off.
    pub(crate) fn broker_choice(&self) -> Result<Option<BrokerChoice>> {
        if !self.peerjs.enabled {
            return Ok(None);
        }
        if self.peerjs.broker == "embedded" {
            return Ok(Some(BrokerChoice::Embedded(self.broker_addr()?)));
        }
        let url = parse_broker_url(&self.peerjs.broker).map_err(|_| invalid_after_load("peerjs.broker"))?;
        Ok(Some(BrokerChoice::External(url)))
    }

    /// The effective configuration as TOML.
    pub(crate) fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| AppError::internal(format!("cannot print the configuration: {e}")))
    }

    /// Loads `file` and the `STRATA_*` variables of `env`, and checks
    /// everything.
    pub(crate) fn load(file: &Path, rule: FileRule, env: &HashMap<String, String>) -> Result<Self> {
        if rule == FileRule::MustExist && !file.exists() {
            return Err(AppError::new(
                ErrorKind::Config,
                format!("the config file {} does not exist", file.display()),
            )
            .hint("check the --config path, or drop --config to use the data directory's config.toml"));
        }
        let file_source = File::from(file).format(FileFormat::Toml).required(false);
        let env_source = LIST_KEYS.iter().fold(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator(ENV_SEPARATOR)
                // Needed for lists; numbers and booleans convert either way.
                .try_parsing(true)
                .list_separator(",")
                .source(Some(config_env(env))),
            |source, key| source.with_list_parse_key(key),
        );
        let built = config::Config::builder()
            .add_source(file_source)
            .add_source(env_source)
            .build()
            .map_err(|e| load_error(file, e))?;
        let tree = built.collect().map_err(|e| load_error(file, e))?;

        let mut problems = Vec::new();
        let schema =
            serde_json::to_value(Config::default()).map_err(|e| AppError::internal(format!("config schema: {e}")))?;
        unknown_keys(&tree, &schema, "", &mut problems);
        if !problems.is_empty() {
            return Err(report(problems, file));
        }
        let config: Config = match built.try_deserialize() {
            Ok(config) => config,
            Err(e) => return Err(report(vec![type_problem(&tree, e)], file)),
        };
        config.check(&tree, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(report(problems, file))
        }
    }

    /// Values that parse but cannot work.
    fn check(&self, tree: &Map<String, Value>, problems: &mut Vec<Problem>) {
        let mut bad = |key: &str, reason: String| {
            problems.push(Problem {
                key: key.to_owned(),
                origin: origin_of(tree, key),
                reason,
            });
        };
        match parse_ip(&self.api.address) {
            None => bad("api.address", format!("{:?} is not an IP address", self.api.address)),
            Some(ip) if !ip.is_loopback() => bad(
                "api.address",
                format!(
                    "{ip} is not a loopback address: the control API only listens on 127.0.0.1 or ::1 \
                     (it controls the node and must never be reachable from the network)"
                ),
            ),
            Some(_) => {}
        }
        if parse_ip(&self.broker.address).is_none() {
            bad(
                "broker.address",
                format!(
                    "{:?} is not an IP address (use 127.0.0.1 or 0.0.0.0)",
                    self.broker.address
                ),
            );
        }
        if self.peerjs.broker != "embedded"
            && let Err(reason) = parse_broker_url(&self.peerjs.broker)
        {
            bad("peerjs.broker", reason);
        }
        if self.peerjs.key.is_empty() {
            bad("peerjs.key", "the broker key must not be empty".to_owned());
        }
        for (i, server) in self.peerjs.ice_servers.iter().enumerate() {
            if let Err(reason) = parse_ice_server(server) {
                bad(&format!("peerjs.ice_servers[{i}]"), reason);
            }
        }
        for (list, values) in [
            ("libp2p.listen", &self.libp2p.listen),
            ("libp2p.bootstrap", &self.libp2p.bootstrap),
        ] {
            for (i, addr) in values.iter().enumerate() {
                if let Err(e) = addr.parse::<libp2p::Multiaddr>() {
                    bad(&format!("{list}[{i}]"), format!("{addr:?} is not a multiaddr: {e}"));
                }
            }
        }
        if self.libp2p.enabled && self.libp2p.listen.is_empty() && self.libp2p.bootstrap.is_empty() {
            bad(
                "libp2p.listen",
                "with no listen address and no bootstrap peer the node cannot reach anyone; \
                 add one, or set libp2p.enabled = false"
                    .to_owned(),
            );
        }
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// After a successful load this cannot happen; if it does, say which key.
fn invalid_after_load(key: &str) -> AppError {
    AppError::internal(format!("config key `{key}` changed after it was checked"))
}

/// The `STRATA_*` variables that are config keys.
fn config_env(env: &HashMap<String, String>) -> Map<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("STRATA_") && !RESERVED_ENV.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The variable that sets `key`.
fn env_var(key: &str) -> String {
    let base = key.split('[').next().unwrap_or(key);
    format!("{ENV_PREFIX}_{}", base.replace('.', ENV_SEPARATOR).to_uppercase())
}

/// One thing wrong with the configuration.
#[derive(Debug, PartialEq, Eq)]
struct Problem {
    /// The key path, e.g. `api.port` or `libp2p.listen[1]`.
    key: String,
    /// The file, or the environment.
    origin: Origin,
    /// Why it is wrong.
    reason: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Origin {
    File(String),
    Env,
    Unknown,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(file) => write!(f, "`{}` (in {file}): {}", self.key, self.reason),
            Origin::Env => write!(f, "`{}` (from {}): {}", self.key, env_var(&self.key), self.reason),
            Origin::Unknown => write!(f, "`{}`: {}", self.key, self.reason),
        }
    }
}

fn origin(value_origin: Option<&str>) -> Origin {
    match value_origin {
        Some("the environment") => Origin::Env,
        Some(file) => Origin::File(file.to_owned()),
        None => Origin::Unknown,
    }
}

/// Where the value at `key` (`a.b` or `a.b[2]`) came from.
fn origin_of(tree: &Map<String, Value>, key: &str) -> Origin {
    let base = key.split('[').next().unwrap_or(key);
    let mut parts = base.split('.');
    let Some(first) = parts.next() else {
        return Origin::Unknown;
    };
    let mut value = tree.get(first);
    for part in parts {
        value = match value.map(|v| &v.kind) {
            Some(ValueKind::Table(table)) => table.get(part),
            _ => None,
        };
    }
    value.map_or(Origin::Unknown, |v| origin(v.origin()))
}

/// The `config` crate names a file by a path relative to a base of its own
/// choosing; there is one file, so name it by the path the user gave.
fn report(mut problems: Vec<Problem>, file: &Path) -> AppError {
    for problem in &mut problems {
        if let Origin::File(shown) = &mut problem.origin {
            *shown = file.display().to_string();
        }
    }
    let mut message = String::from("invalid configuration:");
    for problem in &problems {
        message.push_str("\n  - ");
        message.push_str(&problem.to_string());
    }
    AppError::new(ErrorKind::Config, message).hint(
        "fix the file or the variable; `strata init` documents every key in config.toml, \
         and `strata config show` prints the configuration in effect",
    )
}

fn load_error(file: &Path, error: ConfigError) -> AppError {
    let message = match error {
        ConfigError::FileParse { uri, cause } => format!(
            "the config file {} is not valid TOML: {cause}",
            uri.unwrap_or_else(|| file.display().to_string())
        ),
        other => format!("cannot read the configuration from {}: {other}", file.display()),
    };
    AppError::new(ErrorKind::Config, message).hint("fix the file; `strata init` documents every key in config.toml")
}

/// Reports keys of `tree` that the schema does not have.
fn unknown_keys(tree: &Map<String, Value>, schema: &serde_json::Value, prefix: &str, out: &mut Vec<Problem>) {
    let mut keys: Vec<&String> = tree.keys().collect();
    keys.sort();
    for key in keys {
        let Some(value) = tree.get(key) else { continue };
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (schema.get(key.as_str()), &value.kind) {
            (None, _) => {
                let origin = origin(value.origin());
                let suggestion = nearest_key(&path, schema_paths(&Config::default()));
                let reason = match (&origin, suggestion) {
                    (Origin::Env, Some(near)) => format!("unknown key (did you mean {}?)", env_var(&near)),
                    (_, Some(near)) => format!("unknown key (did you mean `{near}`?)"),
                    (_, None) => "unknown key".to_owned(),
                };
                out.push(Problem {
                    key: path,
                    origin,
                    reason,
                });
            }
            (Some(sub @ serde_json::Value::Object(_)), ValueKind::Table(table)) => {
                unknown_keys(table, sub, &path, out);
            }
            (Some(serde_json::Value::Object(_)), _) => out.push(Problem {
                key: path.clone(),
                origin: origin(value.origin()),
                reason: format!("must be a table ([{path}] with keys), not a single value"),
            }),
            (Some(_), _) => {}
        }
    }
}

/// Every leaf key path of the schema.
fn schema_paths(config: &Config) -> Vec<String> {
    fn walk(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    walk(v, &path, out);
                } else {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(config) {
        walk(&value, "", &mut out);
    }
    out
}

/// The known key closest to `key`, if it is close enough to be a typo.
/// Environment variables spell `a.b_c` as `a_b_c` when a user forgets the
/// double underscore, so separators are compared as equal.
fn nearest_key(key: &str, known: Vec<String>) -> Option<String> {
    let norm = |s: &str| s.replace(['.', '_'], "_");
    let target = norm(key);
    known
        .into_iter()
        .map(|k| (edit_distance(&norm(&k), &target), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let (Some(&left), Some(&up)) = (row.get(j), row.get(j + 1)) else {
                break;
            };
            let cost = usize::from(ca != *cb);
            let value = (prev + cost).min(left + 1).min(up + 1);
            prev = up;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}

/// A deserialization error, with the key and origin the `config` crate
/// knows.
fn type_problem(tree: &Map<String, Value>, error: ConfigError) -> Problem {
    match error {
        ConfigError::Type {
            origin: value_origin,
            unexpected,
            expected,
            key,
        } => {
            let key = key.unwrap_or_default();
            let origin = match origin(value_origin.as_deref()) {
                Origin::Unknown => origin_of(tree, &key),
                known => known,
            };
            Problem {
                key,
                origin,
                reason: format!("expected {}, found {unexpected}", expected_name(expected)),
            }
        }
        ConfigError::At {
            error,
            origin: value_origin,
            key,
        } => {
            let key = key.unwrap_or_default();
            let origin = match origin(value_origin.as_deref()) {
                Origin::Unknown => origin_of(tree, &key),
                known => known,
            };
            Problem {
                key,
                origin,
                reason: error.to_string(),
            }
        }
        other => Problem {
            key: String::new(),
            origin: Origin::Unknown,
            reason: other.to_string(),
        },
    }
}

/// The `config` crate names expected types by Rust type; say it for humans.
fn expected_name(expected: &str) -> &str {
    match expected {
        "u16" | "16" | "an unsigned 16 bit integer" => "an integer from 0 to 65535",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" => "a string",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> (Result<Config>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        if let Some(toml) = toml {
            fs::write(&file, toml).unwrap();
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        (Config::load(&file, FileRule::MayBeAbsent, &env), dir)
    }

    fn message(result: Result<Config>) -> String {
        let err = result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        err.message
    }

    #[test]
    fn the_commented_default_file_is_the_default() {
        let (config, _dir) = load(Some(DEFAULT_FILE), &[]);
        assert_eq!(config.unwrap(), Config::default());
        let (config, _dir) = load(None, &[]);
        assert_eq!(config.unwrap(), Config::default());
        // Every key is documented in the file.
        for key in schema_paths(&Config::default()) {
            let name = key.rsplit('.').next().unwrap();
            assert!(
                DEFAULT_FILE.contains(&format!("\n{name} = ")),
                "{key} missing from DEFAULT_FILE"
            );
        }
    }

    #[test]
    fn file_values_and_environment_overrides_apply_in_order() {
        let (config, _dir) = load(
            Some("[api]\nport = 1234\n[libp2p]\nmdns = true\n"),
            &[
                ("STRATA_API__PORT", "0"),
                ("STRATA_LIBP2P__BOOTSTRAP", "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2"),
                ("STRATA_PEERJS__BROKER", "wss://broker.example.org:443/app/"),
                // The CLI's own variables are not config keys.
                ("STRATA_HOME", "/somewhere"),
                ("STRATA_PASSPHRASE", "x"),
                ("OTHER", "ignored"),
            ],
        );
        let config = config.unwrap();
        assert_eq!(config.api.port, 0);
        assert!(config.libp2p.mdns);
        assert_eq!(config.libp2p.bootstrap.len(), 2);
        assert!(matches!(
            config.broker_choice().unwrap(),
            Some(BrokerChoice::External(url)) if url.host_str() == Some("broker.example.org")
        ));
    }

    #[test]
    fn unknown_keys_are_reported_with_path_origin_and_suggestion() {
        let (result, dir) = load(Some("[api]\nprot = 1\n[nonsense]\nx = 1\n"), &[]);
        let msg = message(result);
        assert!(msg.contains("`api.prot`"), "{msg}");
        assert!(msg.contains("did you mean `api.port`?"), "{msg}");
        assert!(msg.contains("`nonsense`"), "{msg}");
        assert!(
            msg.contains(&dir.path().join("config.toml").display().to_string()),
            "{msg}"
        );

        let (result, _dir) = load(None, &[("STRATA_API_PORT", "1")]);
        let msg = message(result);
        assert!(msg.contains("`api_port` (from STRATA_API_PORT): unknown key"), "{msg}");
        assert!(msg.contains("did you mean STRATA_API__PORT?"), "{msg}");
    }

    #[test]
    fn wrong_types_are_reported_with_path_and_origin() {
        let (result, _dir) = load(Some("[api]\nport = \"high\"\n"), &[]);
        let msg = message(result);
        assert!(msg.contains("`api.port`"), "{msg}");
        assert!(msg.contains("config.toml"), "{msg}");
        assert!(msg.contains("\"high\""), "{msg}");

        let (result, _dir) = load(None, &[("STRATA_API__PORT", "seventy")]);
        let msg = message(result);
        assert!(msg.contains("`api.port` (from STRATA_API__PORT)"), "{msg}");

        let (result, _dir) = load(Some("[api]\nport = 70000\n"), &[]);
        let msg = message(result);
        assert!(msg.contains("`api.port`"), "{msg}");

        let (result, _dir) = load(Some("api = 3\n"), &[]);
        let msg = message(result);
        assert!(msg.contains("`api`") && msg.contains("must be a table"), "{msg}");
    }

    #[test]
    fn unworkable_values_are_reported_together() {
        let (result, _dir) = load(
            Some(
                "[api]\naddress = \"0.0.0.0\"\n[peerjs]\nbroker = \"http://x\"\nice_servers = [\"stun:ok:1\", \"nope\"]\n\
                 [libp2p]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\", \"not-a-multiaddr\"]\n",
            ),
            &[],
        );
        let msg = message(result);
        assert!(
            msg.contains("`api.address`") && msg.contains("not a loopback address"),
            "{msg}"
        );
        assert!(msg.contains("`peerjs.broker`") && msg.contains("ws://"), "{msg}");
        assert!(msg.contains("`peerjs.ice_servers[1]`"), "{msg}");
        assert!(
            msg.contains("`libp2p.bootstrap[1]`") && msg.contains("not a multiaddr"),
            "{msg}"
        );
        assert!(!msg.contains("ice_servers[0]"), "{msg}");
    }

    #[test]
    fn a_missing_explicit_file_and_bad_toml_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(&missing, FileRule::MustExist, &HashMap::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("nope.toml"));

        let (result, _dir) = load(Some("[api\nport = 1\n"), &[]);
        let msg = message(result);
        assert!(msg.contains("not valid TOML"), "{msg}");
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = schema_paths(&Config::default());
        assert_eq!(
            nearest_key("libp2p.bootstrp", known.clone()).as_deref(),
            Some("libp2p.bootstrap")
        );
        assert_eq!(nearest_key("completely.different", known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(env_var("libp2p.listen[2]"), "STRATA_LIBP2P__LISTEN");
    }
}
