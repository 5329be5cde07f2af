//! The embedded DNS resolvers of the user networks whose bridges are on this host
//! (Docker's 127.0.0.11, here on each network's gateway address): containers on a user
//! network resolve each other's names, aliases and short IDs; every other query is
//! forwarded to the host's name servers, except from an `--internal` network (SERVFAIL,
//! as Docker). Only queries from the network's own subnet are answered.
//!
//! ```text
//!  controller ── SetDnsTable{table} / StopDns{network} ──► Resolvers (one task a network)
//!  container ──udp/53──► gateway IP ─► answer::decide(table, from, query)
//!                                        ├─ a name in the table ─► A record
//!                                        └─ anything else ─► resolv.conf server ─► relayed
//! ```
//!
//! The controller computes the tables from the replicated state and sends them whenever
//! the names on a network change and when this agent (re)connects; the agent keeps only
//! the newest it got. [`answer`] decides (pure); [`Resolvers`] binds, receives and relays.
//! While the agent is down names do not resolve; they do again as soon as its controller
//! connection is back.

pub mod answer;

use answer::{decide, Answer};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{debug, info};
use wharf_protocol::dns::DnsTable;

/// The port resolvers listen on.
pub const DNS_PORT: u16 = 53;

/// How long a forwarded query waits for each upstream server.
const UPSTREAM_WAIT: Duration = Duration::from_secs(3);

/// Why a resolver could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The gateway address could not be bound (no such address on the host, port in use).
    #[error("embedded DNS of network {network}: bind {addr}: {source}")]
    Bind {
        /// The network's ID.
        network: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a new table does to the resolver of its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// No resolver yet: start one.
    Start,
    /// Same address: serve the new table.
    Update,
    /// The gateway moved: stop the resolver, start one on the new address.
    Restart,
    /// Older than the table served: keep that one.
    Ignore,
}

/// What `table` does, given the served resolver's gateway and table revision (pure).
pub fn change(served: Option<(Ipv4Addr, u64)>, table: &DnsTable) -> Change {
    match served {
        None => Change::Start,
        Some((_, revision)) if table.revision < revision => Change::Ignore,
        Some((gateway, _)) if gateway != table.gateway => Change::Restart,
        Some(_) => Change::Update,
    }
}

/// One network's resolver.
struct Served {
    gateway: Ipv4Addr,
    addr: SocketAddr,
    table: watch::Sender<DnsTable>,
    task: JoinHandle<()>,
}

impl Served {
    /// Stop it and wait until its socket is closed (a new resolver may bind the address).
    async fn shut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The resolvers of this host, one per user network; what the agent's `SetDnsTable` and
/// `StopDns` requests drive.
pub struct Resolvers {
    port: u16,
    served: Mutex<HashMap<String, Served>>,
}

impl Default for Resolvers {
    fn default() -> Resolvers {
        Resolvers::on_port(DNS_PORT)
    }
}

impl Resolvers {
    /// Resolvers listening on `port` of each gateway (53 but in tests).
    pub fn on_port(port: u16) -> Resolvers {
        Resolvers {
            port,
            served: Mutex::default(),
        }
    }

    /// Serve `table` on its gateway: start the network's resolver if it has none, serve
    /// the new table otherwise (an older one than served is ignored). Call from a tokio
    /// runtime.
    pub async fn set(&self, table: DnsTable) -> Result<(), DnsError> {
        let mut served = self.served.lock().await;
        let current = served
            .get(&table.network)
            .map(|s| (s.gateway, s.table.borrow().revision));
        match change(current, &table) {
            Change::Ignore => {
                debug!(network = %table.network, revision = table.revision, "an older DNS table ignored");
                return Ok(());
            }
            Change::Update => {
                if let Some(s) = served.get(&table.network) {
                    s.table.send_replace(table);
                }
                return Ok(());
            }
            Change::Restart => {
                if let Some(old) = served.remove(&table.network) {
                    old.shut().await;
                }
            }
            Change::Start => {}
        }
        let network = table.network.clone();
        let addr = SocketAddr::from((table.gateway, self.port));
        let bind_err = |source| DnsError::Bind {
            network: network.clone(),
            addr,
            source,
        };
        let sock = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let addr = sock.local_addr().map_err(bind_err)?;
        info!(network = %network, %addr, "embedded DNS listening");
        let gateway = table.gateway;
        let (tx, rx) = watch::channel(table);
        let task = tokio::spawn(serve(sock, rx));
        served.insert(
            network,
            Served {
                gateway,
                addr,
                table: tx,
                task,
            },
        );
        Ok(())
    }

    /// Stop the resolver of `network` and close its socket; absent is fine.
    pub async fn stop(&self, network: &str) {
        let old = self.served.lock().await.remove(network);
        if let Some(old) = old {
            old.shut().await;
            info!(network, "embedded DNS stopped");
        }
    }

    /// The address the resolver of `network` listens on, if it runs.
    pub async fn local_addr(&self, network: &str) -> Option<SocketAddr> {
        self.served.lock().await.get(network).map(|s| s.addr)
    }
}

impl Drop for Resolvers {
    fn drop(&mut self) {
        for s in self.served.get_mut().values() {
            s.task.abort();
        }
    }
}

/// Receive queries on `sock` and answer them from the table `table` holds now; forwarded
/// ones are relayed by their own tasks, whose replies come back here (the socket is this
/// task's alone, so aborting it closes the socket at once).
async fn serve(sock: UdpSocket, table: watch::Receiver<DnsTable>) {
    let (replies, mut relayed) = mpsc::channel::<(Vec<u8>, SocketAddr)>(64);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = got else {
                    continue;
                };
                let SocketAddr::V4(from_v4) = from else {
                    continue;
                };
                let query = &buf[..n];
                let decided = decide(Some(&*table.borrow()), *from_v4.ip(), query);
                match decided {
                    Answer::Reply(bytes) => {
                        let _ = sock.send_to(&bytes, from).await;
                    }
                    Answer::Forward => {
                        let (query, replies) = (query.to_vec(), replies.clone());
                        tokio::spawn(async move {
                            match forward(&query).await {
                                Some(bytes) => {
                                    let _ = replies.send((bytes, from)).await;
                                }
                                None => debug!("no upstream answered"),
                            }
                        });
                    }
                    Answer::Drop => {}
                }
            }
            Some((bytes, to)) = relayed.recv() => {
                let _ = sock.send_to(&bytes, to).await;
            }
        }
    }
}

/// The name servers of a resolv.conf text (loopback ones work from the host); Google's
/// when it names none.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::from(([8, 8, 8, 8], DNS_PORT)));
    }
    out
}

/// Relay `query` to the host's name servers in turn; the first answer.
async fn forward(query: &[u8]) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for up in upstreams(&text) {
        let bind: SocketAddr = if up.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(UPSTREAM_WAIT, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                buf.truncate(n);
                return Some(buf);
            }
            _ => debug!(upstream = %up, "name server did not answer"),
        }
    }
    None
}

#[cfg(test)]
#[path = "dns_test.rs"]
mod tests;
