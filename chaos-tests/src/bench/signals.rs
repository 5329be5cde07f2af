//! Ctrl-C and SIGTERM: the harness only notes them, and every wait loop and case checks
//! [`stopped`] and returns an error, so the guards of both daemons run their clean-up.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Route SIGINT and SIGTERM to the stop flag; call once at the start of `main`.
pub fn install() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // previous action is not needed (default termination is what we replace).
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has arrived.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err` once a signal has arrived: call between steps with `?`.
pub fn check() -> anyhow::Result<()> {
    if stopped() {
        anyhow::bail!("interrupted by a signal; cleaning up");
    }
    Ok(())
}
