//! The shim's own log, `<state>/shim.log`: a minimal `tracing` subscriber that appends one
//! line per event (time, level, target, fields); spans are not recorded. The node crate has no
//! `tracing-subscriber`; this is all a detached shim needs.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct FileSubscriber {
    file: Mutex<File>,
    max: Level,
    next_id: AtomicU64,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for FileSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.max
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Fields(format!(
            "{} {:5} {}:",
            crate::runtime::jsonlog::rfc3339_nano(chrono::Utc::now()),
            meta.level(),
            meta.target()
        ));
        event.record(&mut line);
        line.0.push('\n');
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.0.as_bytes());
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Send this process' `tracing` events to `file`; the level comes from `WHARF_SHIM_LOG`
/// (`error`..`trace`, default `info`). Call once, before anything logs.
pub(crate) fn install(file: File) {
    let max = std::env::var("WHARF_SHIM_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::INFO);
    let subscriber = FileSubscriber {
        file: Mutex::new(file),
        max,
        next_id: AtomicU64::new(1),
    };
    // Fails only if a subscriber is already installed, in which case that one is used.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
