//! The engine's errors: what failed, and of which kind, with no HTTP in them.
//!
//! The kinds are moby's `errdefs` classes (`InvalidParameter`, `NotFound`, `Conflict`,
//! `Forbidden`, `NotModified`, `Unavailable`, `System`): the engine says what kind of
//! failure it met, and `api/error.rs` alone turns a kind into Docker's status code, as
//! moby's `httpstatus.FromError` does. The message is the text a client shows; it
//! matches Docker's where clients parse it ("No such container: x").

use wharf_protocol::agent::{AgentFailure, FailureKind};
use wharf_protocol::state::StateError;

/// The class of a failure (moby `errdefs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something it may not (errdefs.InvalidParameter).
    InvalidParameter,
    /// No such object (errdefs.NotFound).
    NotFound,
    /// The object's state forbids the request (errdefs.Conflict).
    Conflict,
    /// Refused whatever the object's state (errdefs.Forbidden): a read-only path, a
    /// predefined network.
    Forbidden,
    /// Nothing to do: already started, already stopped (errdefs.NotModified).
    NotModified,
    /// The host that must act cannot be reached (errdefs.Unavailable).
    Unavailable,
    /// Wharf failed (errdefs.System).
    System,
}

/// A failed engine operation: its kind and the text a client shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What failed, on what.
    pub message: String,
}

impl EngineError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> EngineError {
        EngineError {
            kind,
            message: message.into(),
        }
    }
    /// The request is malformed.
    pub fn invalid(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::InvalidParameter, message)
    }
    /// No such object.
    pub fn not_found(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::NotFound, message)
    }
    /// The object's state forbids it.
    pub fn conflict(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Conflict, message)
    }
    /// Refused whatever the state.
    pub fn forbidden(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Forbidden, message)
    }
    /// Wharf failed.
    pub fn internal(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::System, message)
    }
    /// Nothing to do.
    pub fn not_modified() -> EngineError {
        EngineError::new(ErrorKind::NotModified, "")
    }
    /// No container by that reference.
    pub fn no_such_container(name: &str) -> EngineError {
        EngineError::not_found(format!("No such container: {name}"))
    }
    /// No image by that reference.
    pub fn no_such_image(name: &str) -> EngineError {
        EngineError::not_found(format!("No such image: {name}"))
    }
    /// Whether this is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }
}

/// A command the state refused, by what it refused.
impl From<StateError> for EngineError {
    fn from(e: StateError) -> EngineError {
        use StateError as S;
        let kind = match &e {
            S::NameInUse { .. } | S::ImageInUse { .. } => ErrorKind::Conflict,
            S::NoSuchContainer(_) | S::NoSuchImage(_) => ErrorKind::NotFound,
            S::NoSuchVolume(_) => ErrorKind::NotFound,
            S::VolumeInUse { .. } => ErrorKind::Conflict,
            S::NoSuchNetwork(_) => ErrorKind::NotFound,
            S::NetworkNameInUse(_) | S::NetworkInUse { .. } | S::AlreadyConnected { .. } => {
                ErrorKind::Conflict
            }
            S::SubnetOverlap => ErrorKind::InvalidParameter,
            S::NotConnected { .. } | S::AddressInUse(_) | S::PortInUse(_) | S::NoFreeAddress(_) => {
                ErrorKind::System
            }
            S::NoSuchNode(_) => ErrorKind::NotFound,
            S::NodeRevoked(_) => ErrorKind::Forbidden,
            S::NodeNotDown(_) => ErrorKind::Conflict,
        };
        EngineError::new(kind, e.to_string())
    }
}

/// The replicated store failed (not a refused command: the log or the disk).
impl From<crate::raft::RaftError> for EngineError {
    fn from(e: crate::raft::RaftError) -> EngineError {
        let message = format!("cluster state: {e}");
        if unavailable(&e) {
            EngineError::new(ErrorKind::Unavailable, message)
        } else {
            EngineError::internal(message)
        }
    }
}

/// No leader or no quorum now, or a write not decided in time: the client may try again
/// (Docker's Unavailable). A group's failure is its write's.
fn unavailable(e: &crate::raft::RaftError) -> bool {
    use crate::raft::RaftError as R;
    match e {
        R::Group(inner) => unavailable(inner),
        R::NoLeader { .. }
        | R::NotLeader { .. }
        | R::ReadTimeout { .. }
        | R::ReadIndex(_)
        | R::ReadRefused { .. }
        | R::WriteTimeout { .. }
        | R::ForwardFailed { .. }
        | R::ForwardUncertain { .. }
        | R::Undecided { .. } => true,
        _ => false,
    }
}

/// An agent's failure, by the kind the agent gave it.
impl From<AgentFailure> for EngineError {
    fn from(f: AgentFailure) -> EngineError {
        let kind = match f.kind {
            FailureKind::NotFound => ErrorKind::NotFound,
            FailureKind::InvalidInput => ErrorKind::InvalidParameter,
            FailureKind::Conflict | FailureKind::NotRunning => ErrorKind::Conflict,
            FailureKind::Unavailable => ErrorKind::Unavailable,
            FailureKind::Internal | FailureKind::Unsupported => ErrorKind::System,
        };
        EngineError::new(kind, f.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write still undecided after its retries, and a group's failure, are 503s the
    /// client may retry, as a lost leader is.
    #[test]
    fn an_undecided_write_and_a_failed_group_are_unavailable() {
        use crate::raft::RaftError as R;
        let undecided = R::Undecided {
            tries: 3,
            source: Box::new(R::PeerClosed),
        };
        let e = EngineError::from(undecided);
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message.contains("may or may not have been applied"),
            "{}",
            e.message
        );
        let group = R::Group(std::sync::Arc::new(R::NoLeader {
            node_id: 1,
            secs: 10,
        }));
        assert_eq!(EngineError::from(group).kind, ErrorKind::Unavailable);
        let broken = R::Group(std::sync::Arc::new(R::LogKey { len: 3 }));
        assert_ne!(EngineError::from(broken).kind, ErrorKind::Unavailable);
    }

    #[test]
    fn refused_commands_keep_their_kind_and_text() {
        let e = EngineError::from(StateError::NoSuchVolume("v".into()));
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, StateError::NoSuchVolume("v".into()).to_string());
        let e = EngineError::from(StateError::SubnetOverlap);
        assert_eq!(e.kind, ErrorKind::InvalidParameter);
    }

    #[test]
    fn agent_failures_keep_their_kind_and_text() {
        let cases = [
            (FailureKind::NotFound, ErrorKind::NotFound),
            (FailureKind::InvalidInput, ErrorKind::InvalidParameter),
            (FailureKind::Conflict, ErrorKind::Conflict),
            (FailureKind::NotRunning, ErrorKind::Conflict),
            (FailureKind::Unavailable, ErrorKind::Unavailable),
            (FailureKind::Internal, ErrorKind::System),
            (FailureKind::Unsupported, ErrorKind::System),
        ];
        for (agent, engine) in cases {
            let e = EngineError::from(AgentFailure::new(agent, "why"));
            assert_eq!((e.kind, e.message.as_str()), (engine, "why"), "{agent:?}");
        }
    }
}
