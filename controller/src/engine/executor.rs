//! The executor: carries out a [`Plan`] step by step, and on a failed step undoes the
//! steps done, newest first. It decides nothing; the planners in `plan.rs` did.

use super::error::EngineError;
use super::plan::{Effect, Plan};
use super::Engine;
use tracing::{debug, warn};

/// A plan that failed at one of its steps, after its undos ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// The index of the step that failed.
    pub step: usize,
    /// Why.
    pub error: EngineError,
}

impl From<Failed> for EngineError {
    fn from(f: Failed) -> EngineError {
        f.error
    }
}

impl Engine {
    /// Carry out `plan`: each step in order; on a required step's failure, the undos of
    /// the steps done (and the failed step's own, if it may be half done) run newest
    /// first (their own failures are logged), then the step's error is returned. A failed step that is not required is logged and passed.
    pub(super) async fn execute(&self, plan: Plan) -> Result<(), Failed> {
        let mut undo: Vec<Effect> = vec![];
        for (index, step) in plan.steps.into_iter().enumerate() {
            match self.perform(&step.effect).await {
                Ok(()) => undo.extend(step.undo),
                Err(error) if !step.required => {
                    warn!(step = index, %error, "a clean-up step failed; going on");
                }
                Err(error) => {
                    if step.partial {
                        undo.extend(step.undo);
                    }
                    // The caller reports the error; a user's mistake (a name in use) is
                    // no warning of the daemon's.
                    debug!(step = index, %error, "step failed, undoing {} step(s)", undo.len());
                    for effect in undo.into_iter().rev() {
                        if let Err(e) = self.perform(&effect).await {
                            warn!(step = index, error = %e, "undo failed");
                        }
                    }
                    return Err(Failed { step: index, error });
                }
            }
        }
        Ok(())
    }

    /// Carry out one effect.
    async fn perform(&self, effect: &Effect) -> Result<(), EngineError> {
        match effect {
            Effect::Propose(cmd) => self.propose(cmd.clone()).await,
            Effect::Agent { node, request } => self
                .agents
                .done(node, (**request).clone())
                .await
                .map_err(EngineError::from),
            Effect::SyncRules { node } => self.sync_network_rules(*node).await,
            Effect::SyncDns { node } => {
                self.sync_dns(*node).await;
                Ok(())
            }
        }
    }
}
