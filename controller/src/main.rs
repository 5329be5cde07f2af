//! `wharf`: one binary for every role, as Nomad and Consul do.
//!
//! `wharf up` runs a whole single-host cluster (a one-member controller and an agent) in
//! this process; `wharf down` removes what an instance left; `wharf certs` issues client
//! certificates; `wharf shim` is the per-container supervisor the agent starts.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use wharf_controller::settings::Settings;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Wharf: a fleet of Linux hosts as one Docker endpoint"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run a whole single-host Wharf (a one-member controller and an agent) in the foreground.
    Up(Settings),
    /// Stop a running instance of DATA_DIR and remove its containers, shims, mounts and cgroups.
    Down(Settings),
    /// Run a controller of a multi-host cluster: a Raft member serving the Docker API and the
    /// cluster port (`--bootstrap` for the first, `--join ADDR --token T` for more).
    Controller(Settings),
    /// Run an agent of a multi-host cluster: it joins once (`--join ADDR --token T`) and runs
    /// the containers the controllers place on it.
    Node(Settings),
    /// Cluster administration on a controller host.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Issue certificates from the cluster CA.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Supervise one container (started by the agent, not by hand).
    #[command(hide = true)]
    Shim {
        /// The container's state folder.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Fork shims for the agent (started by the agent, not by hand).
    #[command(hide = true)]
    ShimZygote {
        /// The containers folder of the instance (names the process for `wharf down`).
        #[arg(long)]
        containers_dir: PathBuf,
        /// Blank room in the command line for the forked shims' own.
        #[arg(long, default_value = "")]
        room: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Print the join token of a role (`agent` or `controller`).
    Token {
        /// A controller's data dir.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "/var/lib/wharf")]
        data_dir: PathBuf,
        /// `agent` or `controller`.
        role: String,
    },
    /// List the controllers (Raft members): ID, host, address, state, leader.
    Members {
        /// The local API socket of a running controller.
        #[arg(
            long,
            env = "WHARF_UNIX_SOCKET",
            default_value = "/run/wharf/docker.sock"
        )]
        unix_socket: PathBuf,
    },
    /// Show or change the cluster's settings: the scheduler's strategy and overcommit,
    /// and whether agents that lose every controller for the lease stop their movable
    /// containers (fencing).
    Update {
        /// The local API socket of a running controller.
        #[arg(
            long,
            env = "WHARF_UNIX_SOCKET",
            default_value = "/run/wharf/docker.sock"
        )]
        unix_socket: PathBuf,
        /// `spread` (fewest containers first) or `binpack` (fullest node that fits).
        #[arg(long)]
        strategy: Option<String>,
        /// CPU and memory that may be reserved, as a multiple of a node's (1 to 10).
        #[arg(long)]
        overcommit: Option<f64>,
        /// `on` or `off`.
        #[arg(long)]
        fencing: Option<String>,
        /// Seconds an agent without any controller keeps its movable containers running
        /// when fencing is on (shorter than the heartbeat grace).
        #[arg(long)]
        lease: Option<f64>,
    },
    /// Remove a host that is down (a controller leaves the Raft group); its ID is revoked.
    Remove {
        /// The local API socket of a running controller (the leader, for a controller).
        #[arg(
            long,
            env = "WHARF_UNIX_SOCKET",
            default_value = "/run/wharf/docker.sock"
        )]
        unix_socket: PathBuf,
        /// Node ID, unique prefix or host name.
        node: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Issue a client certificate (EKU clientAuth) into a folder usable as DOCKER_CERT_PATH.
    Client {
        /// The instance whose CA signs.
        #[arg(long, env = "WHARF_DATA_DIR", default_value = "/var/lib/wharf")]
        data_dir: PathBuf,
        /// Folder to write ca.pem, cert.pem and key.pem into.
        #[arg(long)]
        out: PathBuf,
        /// Common name of the certificate.
        #[arg(long, default_value = "wharf-client")]
        name: String,
    },
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The shim must not start a multi-threaded runtime before it creates the container.
    if let Role::Shim { state_dir } = &cli.role {
        std::process::exit(wharf_node::runtime::shim_main(state_dir));
    }
    // Neither may the zygote: it forks shims.
    if let Role::ShimZygote { .. } = &cli.role {
        std::process::exit(wharf_node::runtime::zygote::zygote_main());
    }
    let sub = matches.subcommand().map(|(_, m)| m.clone());
    let code = match run(cli.role, sub) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(role: Role, sub: Option<clap::ArgMatches>) -> anyhow::Result<()> {
    let sub = sub.context("no role given")?;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the async runtime")
    };
    match role {
        Role::Up(s) => {
            let s = s.load(&sub)?;
            init_tracing(&s.log);
            // Before the runtime's threads exist (see wharf_node::memory).
            wharf_node::memory::limit_arenas();
            rt()?.block_on(wharf_controller::up::up(s))
        }
        Role::Down(s) => {
            let s = s.load(&sub)?;
            init_tracing(&s.log);
            use wharf_controller::daemon;
            match daemon::read_membership(&s.data_dir)? {
                Some(m) if m.role == "agent" => rt()?.block_on(daemon::node_down(&s)),
                Some(_) => rt()?.block_on(daemon::controller_down(&s)),
                None => rt()?.block_on(wharf_controller::up::down(s)),
            }
        }
        Role::Controller(s) => {
            let s = s.load(&sub)?;
            init_tracing(&s.log);
            rt()?.block_on(wharf_controller::daemon::controller(s))
        }
        Role::Node(s) => {
            let s = s.load(&sub)?;
            init_tracing(&s.log);
            wharf_node::memory::limit_arenas();
            rt()?.block_on(wharf_controller::daemon::node(s))
        }
        Role::Cluster {
            cmd: ClusterCmd::Token { data_dir, role },
        } => wharf_controller::daemon::print_token(&data_dir, &role),
        Role::Cluster {
            cmd: ClusterCmd::Members { unix_socket },
        } => wharf_controller::daemon::print_members(&unix_socket),
        Role::Cluster {
            cmd: ClusterCmd::Remove { unix_socket, node },
        } => wharf_controller::daemon::remove_node(&unix_socket, &node),
        Role::Cluster {
            cmd:
                ClusterCmd::Update {
                    unix_socket,
                    strategy,
                    overcommit,
                    fencing,
                    lease,
                },
        } => wharf_controller::daemon::update_settings(
            &unix_socket,
            &wharf_controller::daemon::SettingsChange {
                strategy,
                overcommit,
                fencing,
                lease,
            },
        ),
        Role::Certs {
            cmd:
                CertsCmd::Client {
                    data_dir,
                    out,
                    name,
                },
        } => {
            let ca = wharf_controller::certs::Authority::open_or_create(&data_dir.join("certs"))?;
            ca.issue_client(&name, &out)?;
            println!("wrote {}/{{ca,cert,key}}.pem for {name}", out.display());
            Ok(())
        }
        Role::Shim { .. } | Role::ShimZygote { .. } => {
            unreachable!("dispatched before the runtime starts")
        }
    }
}
