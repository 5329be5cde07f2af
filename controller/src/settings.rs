//! One settings struct for every role of the `wharf` binary.
//!
//! Each setting is a flag, a `WHARF_*` environment variable and a key of the TOML file named
//! by `--config`; a flag beats the environment, which beats the file, which beats the
//! default. [`Settings::resolve`] is the pure merge; [`Settings::load`] reads the file.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("parse config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// Settings shared by `wharf up`, `wharf controller`, `wharf node` and `wharf down`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct Settings {
    /// TOML file with any of these settings (keys as the long flags, with `_` for `-`).
    #[arg(long, env = "WHARF_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding all of this instance's state: Raft log, layers, containers, certificates.
    #[arg(long, env = "WHARF_DATA_DIR", default_value = "/var/lib/wharf")]
    pub data_dir: PathBuf,

    /// Address of the Docker API listener (mutual TLS).
    #[arg(long, env = "WHARF_API_ADDR", default_value = "127.0.0.1:2376")]
    pub api_addr: SocketAddr,

    /// Where to write the client's ca.pem, cert.pem and key.pem (default: DATA_DIR/client).
    #[arg(long, env = "WHARF_CLIENT_CERT_DIR")]
    pub client_cert_dir: Option<PathBuf>,

    /// This member's Raft node id.
    #[arg(long, env = "WHARF_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// Log filter (tracing's env-filter syntax), e.g. `info` or `wharf=debug`.
    #[arg(long, env = "WHARF_LOG", default_value = "info,openraft=warn")]
    pub log: String,

    /// Local unix socket serving the same API without TLS (owned by root, mode 0660).
    #[arg(
        long,
        env = "WHARF_UNIX_SOCKET",
        default_value = "/run/wharf/docker.sock"
    )]
    pub unix_socket: PathBuf,

    /// Plain-HTTP API listener without authentication; loopback addresses only.
    #[arg(long, env = "WHARF_INSECURE_API_ADDR")]
    pub insecure_api_addr: Option<SocketAddr>,

    /// Name of the default bridge (default: `wharf0` for /var/lib/wharf, else `wh-<hash of DATA_DIR>`).
    #[arg(long, env = "WHARF_BRIDGE_NAME")]
    pub bridge_name: Option<String>,

    /// IPv4 subnet of the default bridge, e.g. 10.200.0.0/24 (default: a free 10.128.0.0/10 /24 chosen per DATA_DIR).
    #[arg(long, env = "WHARF_BRIDGE_SUBNET")]
    pub bridge_subnet: Option<String>,
    /// The init binary `docker run --init` runs as the container's PID 1 (a static tini),
    /// bind-mounted read-only at /sbin/docker-init.
    #[arg(long, env = "WHARF_INIT_PATH", default_value = "/usr/bin/tini-static")]
    pub init_path: PathBuf,

    /// How `wharf up`'s controller reaches its agent: `in-process` (frames over an
    /// in-memory pipe) or `unix` (frames over DATA_DIR/agent.sock, as a separate agent).
    #[arg(
        long,
        env = "WHARF_AGENT_TRANSPORT",
        value_enum,
        default_value = "in-process"
    )]
    pub agent_transport: AgentTransport,

    /// This host's name in the cluster (`docker node ls` HOSTNAME; default: the host name).
    #[arg(long, env = "WHARF_NODE_NAME")]
    pub node_name: Option<String>,

    /// Controllers: the cluster port (joins, agents, Raft), mutual TLS (default: the API
    /// address's IP, port 2377).
    #[arg(long, env = "WHARF_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,

    /// Agents: the address other hosts reach this one on (default: the local address of
    /// its connection to a controller).
    #[arg(long, env = "WHARF_ADVERTISE_ADDR")]
    pub advertise_addr: Option<std::net::IpAddr>,

    /// Controllers: start a new cluster with this controller as its first member.
    #[arg(long, env = "WHARF_BOOTSTRAP")]
    pub bootstrap: bool,

    /// Join the cluster through the controller at this cluster address (`IP:2377`).
    #[arg(long, env = "WHARF_JOIN")]
    pub join: Option<SocketAddr>,

    /// The join token (`wharf cluster token agent|controller` on a controller).
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Hosts that run containers (agents, `wharf up`): an engine label of this host,
    /// `key=value` (repeatable); placement constraints read them (`-e constraint:key==value`,
    /// and `node.labels.key==value` until an operator changes the node's labels).
    #[arg(long = "label", env = "WHARF_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// How often a controller checks each agent (seconds).
    #[arg(long, env = "WHARF_HEARTBEAT_PERIOD", default_value_t = 1.0)]
    pub heartbeat_period: f64,

    /// An agent silent this long is Down (seconds).
    #[arg(long, env = "WHARF_HEARTBEAT_GRACE", default_value_t = 4.0)]
    pub heartbeat_grace: f64,

    /// Heartbeats a second a controller sends at most: with more agents than this many
    /// per period, the period, the grace and the agents' fencing lease stretch in
    /// proportion (10,000 agents: every 5 s, Down after 20 s).
    #[arg(long, env = "WHARF_HEARTBEAT_MAX_RATE", default_value_t = crate::cluster::registry::MAX_BEATS_PER_SEC)]
    pub heartbeat_max_rate: u32,

    /// Controllers: how many agents an image is put on before a load, import, commit or
    /// build answers (fewer when fewer agents are Ready).
    #[arg(long, env = "WHARF_MIN_LAYER_COPIES", default_value_t = 2)]
    pub min_layer_copies: usize,

    /// Controllers: also run containers here (an agent in this process), as Swarm's
    /// managers do in small fleets; listed once, as a manager that takes placements.
    #[arg(long, env = "WHARF_WITH_AGENT")]
    pub with_agent: bool,
}

/// How `wharf up`'s controller reaches its agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentTransport {
    /// Agent protocol frames over an in-memory pipe.
    InProcess,
    /// Agent protocol frames over a unix socket in the data dir.
    Unix,
}

/// The TOML file: every key optional, unknown keys refused.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    data_dir: Option<PathBuf>,
    api_addr: Option<SocketAddr>,
    client_cert_dir: Option<PathBuf>,
    node_id: Option<u64>,
    log: Option<String>,
    unix_socket: Option<PathBuf>,
    insecure_api_addr: Option<SocketAddr>,
    bridge_name: Option<String>,
    bridge_subnet: Option<String>,
    init_path: Option<PathBuf>,
    agent_transport: Option<AgentTransport>,
    node_name: Option<String>,
    cluster_addr: Option<SocketAddr>,
    advertise_addr: Option<std::net::IpAddr>,
    bootstrap: Option<bool>,
    join: Option<SocketAddr>,
    token: Option<String>,
    labels: Option<Vec<String>>,
    heartbeat_period: Option<f64>,
    heartbeat_grace: Option<f64>,
    heartbeat_max_rate: Option<u32>,
    min_layer_copies: Option<usize>,
    with_agent: Option<bool>,
}

impl Settings {
    /// Fill in settings that came from defaults with the config file's values, if any.
    pub fn load(mut self, matches: &ArgMatches) -> Result<Settings, SettingsError> {
        if let Some(path) = self.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
                path: path.clone(),
                source,
            })?;
            let file: SettingsFile =
                toml::from_str(&text).map_err(|source| SettingsError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            self.resolve(file, |id| matches.value_source(id));
        }
        if self.data_dir.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| SettingsError::Invalid(e.to_string()))?;
            self.data_dir = cwd.join(&self.data_dir);
        }
        Ok(self)
    }

    /// Pure merge: a file value replaces a value that came from the default (or nowhere).
    fn resolve(&mut self, file: SettingsFile, source: impl Fn(&str) -> Option<ValueSource>) {
        let from_default = |id: &str| matches!(source(id), None | Some(ValueSource::DefaultValue));
        if let (true, Some(v)) = (from_default("data_dir"), file.data_dir) {
            self.data_dir = v;
        }
        if let (true, Some(v)) = (from_default("api_addr"), file.api_addr) {
            self.api_addr = v;
        }
        if let (true, Some(v)) = (from_default("client_cert_dir"), file.client_cert_dir) {
            self.client_cert_dir = Some(v);
        }
        if let (true, Some(v)) = (from_default("node_id"), file.node_id) {
            self.node_id = v;
        }
        if let (true, Some(v)) = (from_default("log"), file.log) {
            self.log = v;
        }
        if let (true, Some(v)) = (from_default("unix_socket"), file.unix_socket) {
            self.unix_socket = v;
        }
        if let (true, Some(v)) = (from_default("insecure_api_addr"), file.insecure_api_addr) {
            self.insecure_api_addr = Some(v);
        }
        if let (true, Some(v)) = (from_default("init_path"), file.init_path) {
            self.init_path = v;
        }
        if let (true, Some(v)) = (from_default("bridge_name"), file.bridge_name) {
            self.bridge_name = Some(v);
        }
        if let (true, Some(v)) = (from_default("bridge_subnet"), file.bridge_subnet) {
            self.bridge_subnet = Some(v);
        }
        if let (true, Some(v)) = (from_default("agent_transport"), file.agent_transport) {
            self.agent_transport = v;
        }
        if let (true, Some(v)) = (from_default("node_name"), file.node_name) {
            self.node_name = Some(v);
        }
        if let (true, Some(v)) = (from_default("cluster_addr"), file.cluster_addr) {
            self.cluster_addr = Some(v);
        }
        if let (true, Some(v)) = (from_default("advertise_addr"), file.advertise_addr) {
            self.advertise_addr = Some(v);
        }
        if let (true, Some(v)) = (from_default("bootstrap"), file.bootstrap) {
            self.bootstrap = v;
        }
        if let (true, Some(v)) = (from_default("join"), file.join) {
            self.join = Some(v);
        }
        if let (true, Some(v)) = (from_default("token"), file.token) {
            self.token = Some(v);
        }
        if let (true, Some(v)) = (from_default("labels"), file.labels) {
            self.labels = v;
        }
        if let (true, Some(v)) = (from_default("heartbeat_period"), file.heartbeat_period) {
            self.heartbeat_period = v;
        }
        if let (true, Some(v)) = (from_default("heartbeat_grace"), file.heartbeat_grace) {
            self.heartbeat_grace = v;
        }
        if let (true, Some(v)) = (from_default("heartbeat_max_rate"), file.heartbeat_max_rate) {
            self.heartbeat_max_rate = v;
        }
        if let (true, Some(v)) = (from_default("min_layer_copies"), file.min_layer_copies) {
            self.min_layer_copies = v;
        }
        if let (true, Some(v)) = (from_default("with_agent"), file.with_agent) {
            self.with_agent = v;
        }
    }

    /// The cluster port's address: `--cluster-addr`, else the API's IP on port 2377.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
            .unwrap_or_else(|| SocketAddr::new(self.api_addr.ip(), 2377))
    }

    /// The `--label` values as a map; a label without `=` is refused (pure).
    pub fn label_map(&self) -> Result<std::collections::BTreeMap<String, String>, SettingsError> {
        self.labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(SettingsError::Invalid(format!(
                    "--label {l:?}: expected key=value"
                ))),
            })
            .collect()
    }

    /// The heartbeat period and grace, checked (pure).
    pub fn liveness(&self) -> Result<(std::time::Duration, std::time::Duration), SettingsError> {
        let ok = |v: f64| v.is_finite() && v > 0.0 && v <= 3600.0;
        if !ok(self.heartbeat_period) || !ok(self.heartbeat_grace) {
            return Err(SettingsError::Invalid(
                "--heartbeat-period and --heartbeat-grace must be positive numbers of seconds"
                    .into(),
            ));
        }
        if self.heartbeat_max_rate == 0 {
            return Err(SettingsError::Invalid(
                "--heartbeat-max-rate must be at least 1".into(),
            ));
        }
        if self.heartbeat_grace < self.heartbeat_period {
            return Err(SettingsError::Invalid(
                "--heartbeat-grace must be at least --heartbeat-period".into(),
            ));
        }
        Ok((
            std::time::Duration::from_secs_f64(self.heartbeat_period),
            std::time::Duration::from_secs_f64(self.heartbeat_grace),
        ))
    }

    /// The parsed `--bridge-subnet`, if given.
    pub fn bridge_subnet(&self) -> Result<Option<wharf_protocol::network::Subnet>, SettingsError> {
        self.bridge_subnet
            .as_deref()
            .map(wharf_protocol::network::Subnet::parse)
            .transpose()
            .map_err(|e| SettingsError::Invalid(format!("--bridge-subnet: {e}")))
    }

    /// Refuse a plain-HTTP listener that is not on a loopback address (pure).
    ///
    /// Call before binding: unauthenticated access to the API is root on every host of the
    /// cluster, so it may only be reachable from this host.
    pub fn check_insecure_api_addr(&self) -> Result<(), SettingsError> {
        match self.insecure_api_addr {
            Some(addr) if !addr.ip().is_loopback() => Err(SettingsError::Invalid(format!(
                "refusing --insecure-api-addr {addr}: it is not a loopback address; the plain-HTTP \
                 API has no authentication, and whoever reaches it is root on every host of the \
                 cluster (use the mutual-TLS --api-addr, or a 127.0.0.0/8 or ::1 address)"
            ))),
            _ => Ok(()),
        }
    }

    /// The folder usable as `DOCKER_CERT_PATH`.
    pub fn client_dir(&self) -> PathBuf {
        self.client_cert_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("client"))
    }

    /// The file holding the three `export` lines for a client shell.
    pub fn client_env_path(&self) -> PathBuf {
        self.data_dir.join("client.env")
    }
}

/// The text of `client.env`: exactly three export lines.
pub fn client_env(api_addr: SocketAddr, cert_dir: &Path) -> String {
    let host = if api_addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api_addr.port())
    } else {
        api_addr
    };
    format!(
        "export DOCKER_HOST=tcp://{host}\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH={}\n",
        cert_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings {
            config: None,
            data_dir: "/var/lib/wharf".into(),
            api_addr: "127.0.0.1:2376".parse().unwrap(),
            client_cert_dir: None,
            node_id: 1,
            log: "info".into(),
            unix_socket: "/run/wharf/docker.sock".into(),
            insecure_api_addr: None,
            bridge_name: None,
            bridge_subnet: None,
            init_path: "/usr/bin/tini-static".into(),
            agent_transport: AgentTransport::InProcess,
            node_name: None,
            cluster_addr: None,
            advertise_addr: None,
            bootstrap: false,
            join: None,
            token: None,
            labels: vec![],
            heartbeat_period: 1.0,
            heartbeat_grace: 4.0,
            heartbeat_max_rate: crate::cluster::registry::MAX_BEATS_PER_SEC,
            min_layer_copies: 2,
            with_agent: false,
        }
    }

    #[test]
    fn labels_and_liveness_are_checked() {
        let mut s = defaults();
        s.labels = vec!["zone=a".into(), "ssd=".into()];
        let m = s.label_map().unwrap();
        assert_eq!(m["zone"], "a");
        assert_eq!(m["ssd"], "");
        s.labels = vec!["nokey".into()];
        assert!(s.label_map().unwrap_err().to_string().contains("key=value"));
        assert!(s.liveness().is_ok());
        s.heartbeat_grace = 0.5;
        assert!(s.liveness().is_err());
        s.heartbeat_period = f64::NAN;
        assert!(s.liveness().is_err());
        assert_eq!(s.cluster_addr(), "127.0.0.1:2377".parse().unwrap());
    }

    #[test]
    fn insecure_listener_only_on_loopback() {
        let mut s = defaults();
        assert!(s.check_insecure_api_addr().is_ok());
        s.insecure_api_addr = Some("127.0.0.1:2375".parse().unwrap());
        assert!(s.check_insecure_api_addr().is_ok());
        s.insecure_api_addr = Some("[::1]:2375".parse().unwrap());
        assert!(s.check_insecure_api_addr().is_ok());
        s.insecure_api_addr = Some("0.0.0.0:2375".parse().unwrap());
        let e = s.check_insecure_api_addr().unwrap_err().to_string();
        assert!(
            e.contains("not a loopback address") && e.contains("root on every host"),
            "{e}"
        );
        s.insecure_api_addr = Some("192.168.1.5:2375".parse().unwrap());
        assert!(s.check_insecure_api_addr().is_err());
    }

    #[test]
    fn socket_and_insecure_addr_come_from_the_file() {
        let mut s = defaults();
        let file: SettingsFile =
            toml::from_str("unix_socket = \"/tmp/w.sock\"\ninsecure_api_addr = \"127.0.0.1:2375\"")
                .unwrap();
        s.resolve(file, |_| Some(ValueSource::DefaultValue));
        assert_eq!(s.unix_socket, PathBuf::from("/tmp/w.sock"));
        assert_eq!(s.insecure_api_addr, Some("127.0.0.1:2375".parse().unwrap()));
        let file: SettingsFile = toml::from_str("init_path = \"/opt/tini\"").unwrap();
        s.resolve(file, |_| Some(ValueSource::DefaultValue));
        assert_eq!(s.init_path, PathBuf::from("/opt/tini"));
    }

    #[test]
    fn file_fills_defaults_but_not_flags() {
        let mut s = defaults();
        s.api_addr = "127.0.0.1:9999".parse().unwrap();
        let file: SettingsFile =
            toml::from_str("data_dir = \"/srv/w\"\napi_addr = \"127.0.0.1:1\"\nlog = \"debug\"")
                .unwrap();
        s.resolve(file, |id| match id {
            "api_addr" => Some(ValueSource::CommandLine),
            "log" => Some(ValueSource::EnvVariable),
            _ => Some(ValueSource::DefaultValue),
        });
        assert_eq!(s.data_dir, PathBuf::from("/srv/w"));
        assert_eq!(s.api_addr.port(), 9999, "flag wins over file");
        assert_eq!(s.log, "info", "environment wins over file");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<SettingsFile>("data-dir = \"/x\"").is_err());
        assert!(toml::from_str::<SettingsFile>("api_addr = \"nonsense\"").is_err());
    }

    #[test]
    fn client_env_has_exactly_three_lines() {
        let text = client_env("127.0.0.1:2376".parse().unwrap(), Path::new("/d/client"));
        assert_eq!(
            text,
            "export DOCKER_HOST=tcp://127.0.0.1:2376\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH=/d/client\n"
        );
        let any = client_env("0.0.0.0:2376".parse().unwrap(), Path::new("/c"));
        assert!(any.starts_with("export DOCKER_HOST=tcp://127.0.0.1:2376\n"));
    }
}
