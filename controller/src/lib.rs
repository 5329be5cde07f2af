//! The Wharf controller: replicated cluster state (Raft), the Docker Engine API over mutual
//! TLS, and the process roles (`up`, `down`, `certs`) of the one `wharf` binary.

#![recursion_limit = "256"]

pub mod agent_client;
pub mod api;
pub mod build;
pub mod certs;
pub mod cluster;
pub mod daemon;
pub mod docker_types;
pub mod engine;
pub mod names;
pub mod raft;
pub mod settings;
pub mod up;
