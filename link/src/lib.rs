//! The driver of an agent connection: tokio tasks that carry the frames of
//! [`wharf_protocol::wire`] over any byte stream (a unix socket, an in-memory pipe for the
//! in-process agent of `wharf up`, later a QUIC stream), as `quinn` drives `quinn-proto`.
//!
//! ```text
//!   controller                                 agent
//!   Client::open(req) ─► ClientCall            serve(handler) ─► handler(ServerCall)
//!        │  output: ItemSender ──── frames ───►  input: ItemReceiver
//!        │  input:  ItemReceiver ◄── frames ────  output: ItemSender, respond()
//!        └─ one reader and one writer task per side; credit per call and direction
//! ```
//!
//! Decisions (framing, credit) are in `wharf_protocol::wire`; this crate only moves
//! frames between the connection and the calls.

mod client;
mod conn;
mod server;
mod stream;

pub use client::{connect, unexpected, Client, ClientCall, Response};
pub use server::{serve, EventSender, ServerCall};
pub use stream::{ItemReceiver, ItemSender};

use wharf_protocol::agent::{AgentFailure, FailureKind};

/// The failure every call of a connection that closed gets.
pub fn connection_lost() -> AgentFailure {
    AgentFailure::new(FailureKind::Unavailable, "the agent connection closed")
}

#[cfg(test)]
mod tests;
