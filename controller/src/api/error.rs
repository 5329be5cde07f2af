//! API errors as Docker sends them: a status code and `{"message": "..."}`.

use http::StatusCode;

/// An error answered to a client; the message matches Docker's where clients parse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Text for `{"message": ...}`.
    pub message: String,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// 409: the object's state forbids it.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    /// 500: Wharf failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// 304: nothing to do (already started / stopped).
    pub fn not_modified() -> ApiError {
        ApiError::new(StatusCode::NOT_MODIFIED, "")
    }
    /// 404 for a container reference.
    pub fn no_such_container(name: &str) -> ApiError {
        ApiError::not_found(format!("No such container: {name}"))
    }
    /// 404 for an image reference.
    pub fn no_such_image(name: &str) -> ApiError {
        ApiError::not_found(format!("No such image: {name}"))
    }
}

impl From<wharf_protocol::state::StateError> for ApiError {
    fn from(e: wharf_protocol::state::StateError) -> ApiError {
        use wharf_protocol::state::StateError as S;
        let status = match &e {
            S::NameInUse { .. } | S::ImageInUse { .. } => StatusCode::CONFLICT,
            S::NoSuchContainer(_) | S::NoSuchImage(_) => StatusCode::NOT_FOUND,
            S::NoSuchVolume(_) => StatusCode::NOT_FOUND,
            S::VolumeInUse { .. } => StatusCode::CONFLICT,
            S::NoSuchNetwork(_) => StatusCode::NOT_FOUND,
            S::NetworkNameInUse(_) | S::NetworkInUse { .. } | S::AlreadyConnected { .. } => {
                StatusCode::CONFLICT
            }
            S::SubnetOverlap => StatusCode::BAD_REQUEST,
            S::NotConnected { .. } | S::AddressInUse(_) | S::PortInUse(_) | S::NoFreeAddress(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::raft::RaftError> for ApiError {
    fn from(e: crate::raft::RaftError) -> ApiError {
        ApiError::internal(format!("cluster state: {e}"))
    }
}

/// An agent's failure as Docker shows it: by its kind, with the agent's text.
impl From<wharf_protocol::agent::AgentFailure> for ApiError {
    fn from(e: wharf_protocol::agent::AgentFailure) -> ApiError {
        use wharf_protocol::agent::FailureKind as K;
        let status = match e.kind {
            K::NotFound => StatusCode::NOT_FOUND,
            K::InvalidInput => StatusCode::BAD_REQUEST,
            K::Conflict | K::NotRunning => StatusCode::CONFLICT,
            K::Internal | K::Unavailable | K::Unsupported => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.message)
    }
}
