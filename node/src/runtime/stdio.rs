//! The container's stdio inside the shim: output pumps (pipe or pty to the json-file log
//! and every attacher), attach connections and stdin.
//!
//! ```text
//!  stdout/stderr pipe ─► pump ─► json-file log
//!                          └───► each attacher's bounded queue ─► attach connection
//!  attach connection ─► Stdin frames ─► container stdin (closed on CloseStdin / EOF)
//! ```
//!
//! The pump waits for room in every queue, so no attacher loses output; as in Docker, an
//! attacher that stops reading stalls the container's output.

use crate::runtime::framing::{read_frame, write_frame, FramingError};
use crate::runtime::server::Shim;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use wharf_protocol::shim::{AttachInput, AttachOutput};

/// Frames queued per attacher before the output pump waits for it.
const ATTACH_QUEUE: usize = 256;

pub(super) fn nonblocking(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    register(fd)
}

pub(crate) fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its fd open and the same until it is dropped, and the
    // AsyncFd owns it for its whole life.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

pub(super) async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| Ok(rustix::io::read(inner.get_ref(), &mut *buf)?)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

pub(super) async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| Ok(rustix::io::write(inner.get_ref(), data)?)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Copy one output stream to the log and to every attacher until EOF.
pub(super) async fn pump(shim: Rc<Shim>, stream: u8, fd: OwnedFd) {
    let fd = match nonblocking(fd) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::error!(stream, error = %e, "output pipe");
            None
        }
    };
    let mut buf = vec![0u8; 32 * 1024];
    while let Some(fd) = fd.as_ref() {
        let n = match read_fd(fd, &mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // A pty master reads EIO once the last slave fd is closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::warn!(stream, error = %e, "read container output");
                break;
            }
        };
        let data = &buf[..n];
        if let Some(log) = shim.log.borrow_mut().as_mut() {
            if let Err(e) = log.write(stream, data, chrono::Utc::now()) {
                tracing::warn!(error = %e, "write container log");
            }
        }
        let targets = shim.state.borrow().attachers.clone();
        let mut lost = false;
        for tx in targets {
            let frame = AttachOutput::Output {
                stream,
                data: data.to_vec(),
            };
            lost |= tx.send(frame).await.is_err();
        }
        if lost {
            shim.state.borrow_mut().attachers.retain(|t| !t.is_closed());
        }
    }
    if let Some(log) = shim.log.borrow_mut().as_mut() {
        if let Err(e) = log.finish(stream, chrono::Utc::now()) {
            tracing::warn!(error = %e, "write container log");
        }
    }
    shim.pumps_left.send_modify(|n| *n = n.saturating_sub(1));
}

/// Stream output to an attached client and its stdin to the container.
pub(super) async fn attach(
    shim: Rc<Shim>,
    stream: UnixStream,
    want_stdin: bool,
) -> Result<(), FramingError> {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(ATTACH_QUEUE);
    let done = {
        let mut st = shim.state.borrow_mut();
        match st.exit {
            Some(exit) => Some(exit),
            None => {
                st.attachers.push(tx);
                None
            }
        }
    };
    if let Some(exit) = done {
        return write_frame(&mut wr, &AttachOutput::Exit(exit)).await;
    }
    let stdin = if want_stdin {
        shim.state.borrow().stdin.clone()
    } else {
        None
    };
    if let Some(fd) = stdin {
        tokio::task::spawn_local(feed_stdin(shim.clone(), rd, fd));
    }
    while let Some(msg) = rx.recv().await {
        let last = matches!(msg, AttachOutput::Exit(_));
        write_frame(&mut wr, &msg).await?;
        if last {
            break;
        }
    }
    finish_write(wr).await;
    Ok(())
}

async fn finish_write(mut wr: OwnedWriteHalf) {
    use tokio::io::AsyncWriteExt;
    let _ = wr.shutdown().await;
}

/// Copy an attacher's stdin frames to the container; close the container's stdin when
/// the attacher ends its input (Docker's StdinOnce).
async fn feed_stdin(shim: Rc<Shim>, mut rd: OwnedReadHalf, fd: Rc<AsyncFd<OwnedFd>>) {
    // CloseStdin, a broken frame or the end of the connection all end the input; Detach
    // leaves it open for the next attacher.
    loop {
        match read_frame::<_, AttachInput>(&mut rd).await {
            Ok(AttachInput::Stdin { data }) => {
                if let Err(e) = write_all_fd(&fd, &data).await {
                    tracing::debug!(error = %e, "container stdin closed");
                    break;
                }
            }
            Ok(AttachInput::Detach) => return,
            _ => break,
        }
    }
    drop(fd);
    shim.state.borrow_mut().stdin = None;
}
