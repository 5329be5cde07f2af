//! `GET /wharf/settings` and `POST /wharf/settings`: the cluster's settings (`wharf
//! cluster update`): the scheduler's strategy and overcommit, and agents' fencing and
//! lease. A POST names the settings to change; the others keep their values.

use super::error::ApiError;
use super::http::{json, read_body, Resp};
use crate::engine::{Engine, EngineError};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use wharf_protocol::settings::{ClusterSettings, Strategy};
use wharf_protocol::state::Command;

/// The settings as the API shows them (pure).
pub fn settings_json(s: &ClusterSettings) -> Value {
    json!({
        "Strategy": s.strategy.as_str(),
        "Overcommit": f64::from(s.overcommit_milli) / 1000.0,
        "Fencing": s.fencing,
        "LeaseSeconds": s.lease_ms as f64 / 1000.0,
    })
}

/// `current` with the changes of a POST body applied, checked against the heartbeat
/// grace (pure): 400 naming the field for a wrong type or value, or an unknown field.
pub fn updated(
    current: ClusterSettings,
    body: &Value,
    grace_ms: u64,
) -> Result<ClusterSettings, String> {
    let Some(fields) = body.as_object() else {
        return Err("the body must be a JSON object of settings".into());
    };
    let mut s = current;
    for (k, v) in fields {
        let bad = || format!("invalid value for {k}: {v}");
        match k.as_str() {
            "Strategy" => {
                let name = v.as_str().ok_or_else(bad)?;
                s.strategy = Strategy::parse(name)
                    .ok_or_else(|| format!("invalid strategy {name:?}: use spread or binpack"))?;
            }
            "Overcommit" => {
                let r = v
                    .as_f64()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(bad)?;
                s.overcommit_milli = (r * 1000.0).round().min(f64::from(u32::MAX)) as u32;
            }
            "Fencing" => s.fencing = v.as_bool().ok_or_else(bad)?,
            "LeaseSeconds" => {
                let secs = v
                    .as_f64()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(bad)?;
                s.lease_ms = (secs * 1000.0).round().min(u64::MAX as f64) as u64;
            }
            _ => return Err(format!("unknown setting {k:?}")),
        }
    }
    s.check(grace_ms)?;
    Ok(s)
}

/// `GET /wharf/settings`.
pub fn get(engine: &Engine) -> Resp {
    let s = engine.store().read(|s| s.settings);
    json(StatusCode::OK, &settings_json(&s))
}

/// `POST /wharf/settings`: record the changed settings through Raft; the new ones.
pub async fn update(engine: &Engine, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = read_body(req.into_body()).await?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| EngineError::invalid(format!("the body is not JSON: {e}")))?;
    let current = engine.store().read(|s| s.settings);
    let new = updated(current, &body, engine.heartbeat_grace_ms()).map_err(EngineError::invalid)?;
    engine
        .store()
        .propose(Command::UpdateSettings { settings: new })
        .await
        .map_err(EngineError::from)?
        .map_err(EngineError::from)?;
    tracing::info!(
        strategy = new.strategy.as_str(),
        overcommit_milli = new.overcommit_milli,
        fencing = new.fencing,
        lease_ms = new.lease_ms,
        "cluster settings updated"
    );
    Ok(json(StatusCode::OK, &settings_json(&new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_changes_what_it_names_and_is_checked() {
        let d = ClusterSettings::default();
        let s = updated(d, &json!({"Strategy": "binpack", "Overcommit": 1.5}), 4000).unwrap();
        assert_eq!(s.strategy, Strategy::Binpack);
        assert_eq!(s.overcommit_milli, 1500);
        assert_eq!((s.fencing, s.lease_ms), (d.fencing, d.lease_ms));
        let s = updated(s, &json!({"Fencing": true, "LeaseSeconds": 2.5}), 4000).unwrap();
        assert_eq!((s.fencing, s.lease_ms), (true, 2500));
        assert_eq!(s.strategy, Strategy::Binpack, "kept");
        for (body, says) in [
            (json!({"Strategy": "random"}), "invalid strategy \"random\""),
            (json!({"Overcommit": "x"}), "invalid value for Overcommit"),
            (json!({"Overcommit": 0.5}), "between 1 and 10"),
            (
                json!({"LeaseSeconds": 4}),
                "shorter than the heartbeat grace",
            ),
            (json!({"Fencing": "on"}), "invalid value for Fencing"),
            (json!({"Colour": 1}), "unknown setting \"Colour\""),
            (json!([1]), "JSON object"),
        ] {
            let e = updated(d, &body, 4000).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
        assert_eq!(
            settings_json(&d),
            json!({"Strategy": "spread", "Overcommit": 1.0, "Fencing": false, "LeaseSeconds": 3.0})
        );
    }
}
