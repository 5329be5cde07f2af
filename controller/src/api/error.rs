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

/// A refused command, classified by the engine.
impl From<wharf_protocol::state::StateError> for ApiError {
    fn from(e: wharf_protocol::state::StateError) -> ApiError {
        crate::engine::EngineError::from(e).into()
    }
}

/// The store failed.
impl From<crate::raft::RaftError> for ApiError {
    fn from(e: crate::raft::RaftError) -> ApiError {
        crate::engine::EngineError::from(e).into()
    }
}

/// An agent's failure, classified by the engine from its kind.
impl From<wharf_protocol::agent::AgentFailure> for ApiError {
    fn from(e: wharf_protocol::agent::AgentFailure) -> ApiError {
        crate::engine::EngineError::from(e).into()
    }
}

/// An engine failure as Docker answers it: the status of its kind (moby
/// `httpstatus.FromError`), its text as the message.
impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> ApiError {
        use crate::engine::ErrorKind as K;
        let status = match e.kind {
            K::InvalidParameter => StatusCode::BAD_REQUEST,
            K::NotFound => StatusCode::NOT_FOUND,
            K::Conflict => StatusCode::CONFLICT,
            K::Forbidden => StatusCode::FORBIDDEN,
            K::NotModified => StatusCode::NOT_MODIFIED,
            K::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            K::System => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineError, ErrorKind};

    #[test]
    fn engine_kinds_get_dockers_status_codes() {
        let cases = [
            (ErrorKind::InvalidParameter, StatusCode::BAD_REQUEST),
            (ErrorKind::NotFound, StatusCode::NOT_FOUND),
            (ErrorKind::Conflict, StatusCode::CONFLICT),
            (ErrorKind::Forbidden, StatusCode::FORBIDDEN),
            (ErrorKind::NotModified, StatusCode::NOT_MODIFIED),
            (ErrorKind::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (ErrorKind::System, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (kind, status) in cases {
            let e = ApiError::from(EngineError::new(kind, "why"));
            assert_eq!((e.status, e.message.as_str()), (status, "why"), "{kind:?}");
        }
        let e = ApiError::from(EngineError::no_such_container("web"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such container: web");
    }
}
