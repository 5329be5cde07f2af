//! Volume requests: the `local` driver's directories on this host.

use crate::agent::Agent;
use crate::volumes::{VolumeError, VolumeStore};
use wharf_link::ServerCall;
use wharf_protocol::agent::volume::{VolumeRequest, VolumeResponse};
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};

/// What crosses the boundary of a volume failure.
pub fn volume_failure(e: &VolumeError) -> AgentFailure {
    let kind = match e {
        VolumeError::InvalidName(_) => FailureKind::InvalidInput,
        VolumeError::Io { .. } => FailureKind::Internal,
    };
    AgentFailure::new(kind, e.to_string())
}

async fn blocking<T: Send + 'static>(
    store: VolumeStore,
    f: impl FnOnce(&VolumeStore) -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, AgentFailure> {
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| AgentFailure::new(FailureKind::Internal, format!("volume task failed: {e}")))?
        .map_err(|e| volume_failure(&e))
}

/// Carry out one volume request.
pub(super) async fn handle(agent: &Agent, request: VolumeRequest, mut call: ServerCall) {
    use VolumeRequest as R;
    let store = agent.volumes();
    let result = match request {
        R::Root => Ok(AgentResponse::Volume(VolumeResponse::Root(
            store.root().display().to_string(),
        ))),
        R::Create { name } => blocking(store, move |s| s.create(&name).map(|_| ()))
            .await
            .map(|()| AgentResponse::Done),
        R::Remove { name } => blocking(store, move |s| s.remove(&name))
            .await
            .map(|()| AgentResponse::Done),
        R::Sizes { names } => blocking(store, move |s| {
            Ok(names.iter().map(|n| s.size(n)).collect())
        })
        .await
        .map(|sizes| AgentResponse::Volume(VolumeResponse::Sizes(sizes))),
    };
    call.respond_with(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_could_escape_is_invalid_input() {
        let f = volume_failure(&VolumeError::InvalidName("../x".into()));
        assert_eq!(f.kind, FailureKind::InvalidInput);
        assert_eq!(f.message, "invalid volume name \"../x\"");
    }
}
