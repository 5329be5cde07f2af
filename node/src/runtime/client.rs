//! The agent's side of the shim socket: [`ShimClient`] for requests, [`attach`] for a
//! container's output and stdin, [`read_exit`] for an exit recorded by a shim that is gone.
//!
//! Every connection starts with a Hello; the shim's answer tells which protocol version
//! it speaks, so an agent can adopt shims started by an older agent.

use crate::runtime::config::{socket_path, StatePaths};
use crate::runtime::exit::read_exit_file;
use crate::runtime::framing::{read_frame, write_frame, FramingError};
use crate::runtime::RuntimeError;
use bytes::Bytes;
use std::path::Path;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
pub use wharf_protocol::runtime::AttachEvent;
use wharf_protocol::shim::{
    AttachInput, AttachOutput, ErrorKind, ExecSpec, Exit, Request, Response, ShimState,
    PROTOCOL_VERSION,
};

/// The exit recorded in `<state_dir>/exit.json`, if the container has exited.
pub fn read_exit(state_dir: &Path) -> Option<Exit> {
    read_exit_file(&StatePaths::new(state_dir).exit())
}

/// Connect to the shim of `state_dir` and exchange Hellos; returns the stream, the shim's
/// protocol version and its PID.
async fn open(state_dir: &Path) -> Result<(UnixStream, u32, u32), RuntimeError> {
    let paths = StatePaths::new(state_dir);
    let connect_err = |source| RuntimeError::Connect {
        path: paths.socket(),
        source,
    };
    // Kept open while connecting, for socket paths longer than sun_path.
    let dir = std::fs::File::open(state_dir).map_err(connect_err)?;
    let mut stream = UnixStream::connect(socket_path(state_dir, Some(&dir), "shim.sock"))
        .await
        .map_err(connect_err)?;
    drop(dir);
    write_frame(
        &mut stream,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await?;
    match read_frame::<_, Response>(&mut stream).await? {
        Response::Hello { version, shim_pid } => Ok((stream, version, shim_pid)),
        Response::Error { kind, message } => Err(RuntimeError::Shim { kind, message }),
        other => Err(RuntimeError::Unexpected(format!("{other:?}"))),
    }
}

/// A request connection to one container's shim.
pub struct ShimClient {
    stream: UnixStream,
    version: u32,
    shim_pid: u32,
}

impl ShimClient {
    /// Connect to the shim serving `<state_dir>/shim.sock`.
    pub async fn connect(state_dir: &Path) -> Result<ShimClient, RuntimeError> {
        let (stream, version, shim_pid) = open(state_dir).await?;
        Ok(ShimClient {
            stream,
            version,
            shim_pid,
        })
    }

    /// The protocol version the shim speaks.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// PID of the shim process.
    pub fn shim_pid(&self) -> u32 {
        self.shim_pid
    }

    async fn call(&mut self, request: &Request) -> Result<Response, RuntimeError> {
        write_frame(&mut self.stream, request).await?;
        match read_frame::<_, Response>(&mut self.stream).await? {
            Response::Error { kind, message } => Err(RuntimeError::Shim { kind, message }),
            other => Ok(other),
        }
    }

    /// Start the created container; returns its main process' host PID. Attach first
    /// to see all of its output.
    pub async fn start(&mut self) -> Result<u32, RuntimeError> {
        match self.call(&Request::Start).await? {
            Response::Started { pid } => Ok(pid),
            other => Err(RuntimeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The container's status, PID and exit.
    pub async fn state(&mut self) -> Result<ShimState, RuntimeError> {
        match self.call(&Request::State).await? {
            Response::State(state) => Ok(state),
            other => Err(RuntimeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Send `signal` to the container's main process.
    pub async fn kill(&mut self, signal: i32) -> Result<(), RuntimeError> {
        self.expect_ok(&Request::Kill { signal }).await
    }

    /// Resize a TTY container's terminal.
    pub async fn resize(&mut self, height: u16, width: u16) -> Result<(), RuntimeError> {
        self.expect_ok(&Request::Resize { height, width }).await
    }

    /// Resize the terminal of a running TTY exec process.
    pub async fn resize_exec(
        &mut self,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<(), RuntimeError> {
        self.require_version(2, "exec")?;
        let request = Request::ResizeExec {
            exec_id: exec_id.to_string(),
            height,
            width,
        };
        self.expect_ok(&request).await
    }

    /// Freeze every process of the container (`docker pause`).
    pub async fn pause(&mut self) -> Result<(), RuntimeError> {
        self.require_version(2, "pause")?;
        self.expect_ok(&Request::Pause).await
    }

    /// Thaw a paused container (`docker unpause`).
    pub async fn resume(&mut self) -> Result<(), RuntimeError> {
        self.require_version(2, "unpause")?;
        self.expect_ok(&Request::Resume).await
    }

    fn require_version(&self, version: u32, what: &str) -> Result<(), RuntimeError> {
        if self.version >= version {
            return Ok(());
        }
        Err(RuntimeError::Shim {
            kind: ErrorKind::UnsupportedVersion,
            message: format!(
                "{what} needs shim protocol {version}; this container's shim speaks {}",
                self.version
            ),
        })
    }

    /// Block until the container has exited; returns how.
    pub async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        match self.call(&Request::Wait).await? {
            Response::Exited(exit) => Ok(exit),
            other => Err(RuntimeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Remove the container (SIGKILL first if it runs), its cgroup and rootfs mount; the
    /// shim exits afterwards. `exit.json` and the log stay in the state directory.
    pub async fn delete(&mut self) -> Result<(), RuntimeError> {
        self.expect_ok(&Request::Delete).await
    }

    async fn expect_ok(&mut self, request: &Request) -> Result<(), RuntimeError> {
        match self.call(request).await? {
            Response::Ok => Ok(()),
            other => Err(RuntimeError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Attach to the container of `state_dir`: its output from now on, its exit, and (if
/// `stdin` and the container keeps stdin open) its stdin.
pub async fn attach(state_dir: &Path, stdin: bool) -> Result<AttachStream, RuntimeError> {
    let (mut stream, _, _) = open(state_dir).await?;
    write_frame(&mut stream, &Request::Attach { stdin }).await?;
    match read_frame::<_, Response>(&mut stream).await? {
        Response::Ok => {}
        Response::Error { kind, message } => return Err(RuntimeError::Shim { kind, message }),
        other => return Err(RuntimeError::Unexpected(format!("{other:?}"))),
    }
    let (reader, writer) = stream.into_split();
    Ok(AttachStream {
        output: AttachOutputStream {
            reader,
            done: false,
        },
        input: AttachInputSink { writer },
    })
}

/// Run `spec` in the running container of `state_dir`; returns the exec process' host
/// PID and its stream (output, then its [`AttachEvent::Exit`]; stdin if `spec.stdin`).
pub async fn exec(state_dir: &Path, spec: ExecSpec) -> Result<(u32, AttachStream), RuntimeError> {
    let (mut stream, version, _) = open(state_dir).await?;
    if version < 2 {
        return Err(RuntimeError::Shim {
            kind: ErrorKind::UnsupportedVersion,
            message: format!("exec needs shim protocol 2; this container's shim speaks {version}"),
        });
    }
    write_frame(&mut stream, &Request::Exec { spec }).await?;
    let pid = match read_frame::<_, Response>(&mut stream).await? {
        Response::ExecStarted { pid } => pid,
        Response::Error { kind, message } => return Err(RuntimeError::Shim { kind, message }),
        other => return Err(RuntimeError::Unexpected(format!("{other:?}"))),
    };
    let (reader, writer) = stream.into_split();
    Ok((
        pid,
        AttachStream {
            output: AttachOutputStream {
                reader,
                done: false,
            },
            input: AttachInputSink { writer },
        },
    ))
}

/// An attach connection; split it to read output and write stdin concurrently.
pub struct AttachStream {
    output: AttachOutputStream,
    input: AttachInputSink,
}

impl AttachStream {
    /// The next output or the exit; `None` after the exit or if the shim went away.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, RuntimeError> {
        self.output.next().await
    }

    /// Send bytes to the container's stdin.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<(), RuntimeError> {
        self.input.send_stdin(data).await
    }

    /// Close the container's stdin.
    pub async fn close_stdin(&mut self) -> Result<(), RuntimeError> {
        self.input.close_stdin().await
    }

    /// Separate the output and stdin halves.
    pub fn into_split(self) -> (AttachOutputStream, AttachInputSink) {
        (self.output, self.input)
    }
}

/// The output half of an [`AttachStream`].
pub struct AttachOutputStream {
    reader: OwnedReadHalf,
    done: bool,
}

impl AttachOutputStream {
    /// The next output or the exit; `None` after the exit or if the shim went away.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, RuntimeError> {
        if self.done {
            return Ok(None);
        }
        match read_frame::<_, AttachOutput>(&mut self.reader).await {
            Ok(AttachOutput::Output { stream, data }) => Ok(Some(AttachEvent::Output {
                stream,
                data: Bytes::from(data),
            })),
            Ok(AttachOutput::Exit(exit)) => {
                self.done = true;
                Ok(Some(AttachEvent::Exit(exit)))
            }
            Err(FramingError::Closed) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The stdin half of an [`AttachStream`].
pub struct AttachInputSink {
    writer: OwnedWriteHalf,
}

impl AttachInputSink {
    /// Send bytes to the container's stdin.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<(), RuntimeError> {
        let frame = AttachInput::Stdin {
            data: data.to_vec(),
        };
        Ok(write_frame(&mut self.writer, &frame).await?)
    }

    /// Close the container's stdin (once every stdin attacher has).
    pub async fn close_stdin(&mut self) -> Result<(), RuntimeError> {
        Ok(write_frame(&mut self.writer, &AttachInput::CloseStdin).await?)
    }

    /// Stop sending stdin but leave the container's stdin open (Docker's detach keys).
    /// Shims older than protocol 2 close it instead.
    pub async fn detach(&mut self) -> Result<(), RuntimeError> {
        Ok(write_frame(&mut self.writer, &AttachInput::Detach).await?)
    }
}
