//! The control protocol between an agent and a container's shim (owned by the runtime).
//!
//! One shim process runs per container and serves a unix socket. Every message travels as
//! one frame: a `u32` big-endian length, then the bytes of [`crate::codec::encode`].
//!
//! ```text
//!  agent                                   shim
//!    | -- Request::Hello{version} -------->  |   first frame on every connection
//!    | <------- Response::Hello{version} --  |
//!    | -- Request::Start ----------------->  |   one request, one response ...
//!    | <-------- Response::Started{pid} ---  |
//!    | -- Request::Attach{stdin} --------->  |   ... except Attach, after which the
//!    | <---------------- Response::Ok -----  |   connection carries a stream:
//!    | <-- AttachOutput::Output{stream,..} - |     shim -> agent: output, then Exit
//!    | -- AttachInput::Stdin{data} ------->  |     agent -> shim: stdin, CloseStdin
//!    | <------------ AttachOutput::Exit ---  |
//! ```
//!
//! A newer agent adopts the shims of an older one: it reads the version from the shim's
//! `Hello` and speaks no newer than that. bincode does not describe itself, so new enum
//! variants go at the end and the golden-byte tests below pin the format.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Version 2 added [`Request::Exec`],
/// [`Request::ResizeExec`], [`Request::Pause`], [`Request::Resume`] and
/// [`AttachInput::Detach`].
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame either side accepts, so a corrupt length cannot allocate without bound.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Stream number of the container's stdout in [`AttachOutput::Output`], as Docker's frames.
pub const STDOUT: u8 = 1;
/// Stream number of the container's stderr in [`AttachOutput::Output`], as Docker's frames.
pub const STDERR: u8 = 2;

/// How a container's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code as Docker reports it: the process' code, or 128 + signal if it was killed.
    pub code: i32,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the process was started, nanoseconds since the Unix epoch (0 if never started).
    pub started_at_ns: u64,
    /// When the shim saw the process end, nanoseconds since the Unix epoch.
    pub finished_at_ns: u64,
}

/// Lifecycle of the container a shim runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Created: namespaces and rootfs ready, the process waits for Start.
    Created,
    /// The process runs.
    Running,
    /// The process ended; the shim waits for Delete.
    Exited,
}

/// What [`Request::State`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// Where the container is in its lifecycle.
    pub status: Status,
    /// Host PID of the container's main process (0 once it has been reaped).
    pub pid: u32,
    /// Set once the process has ended.
    pub exit: Option<Exit>,
}

/// Why a request failed, so the agent can map it to Docker's status codes and texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The command was not found (Docker: exit 127, "executable file not found in $PATH").
    CommandNotFound,
    /// The command is not executable (Docker: exit 126, "permission denied").
    PermissionDenied,
    /// The request does not fit the container's state (start twice, kill after exit, ...).
    InvalidState,
    /// The peer speaks a protocol version the shim does not know.
    UnsupportedVersion,
    /// Anything else.
    Other,
    /// The container's working directory cannot be made or entered, e.g. it is a file
    /// (Docker: exit 126, "not a directory").
    WorkingDirectory,
}

/// A process to run inside a running container (`docker exec`), resolved by the agent
/// except for the user, which the shim resolves against the container's `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The exec instance's ID (for [`Request::ResizeExec`]).
    pub exec_id: String,
    /// argv, never empty.
    pub args: Vec<String>,
    /// `KEY=value` strings that override the container's environment.
    pub env: Vec<String>,
    /// Absolute working directory; empty for the container's.
    pub working_dir: String,
    /// `user[:group]`; empty for the container's user.
    pub user: String,
    /// Allocate a pseudo-terminal for the process.
    pub tty: bool,
    /// The agent will send stdin; otherwise the process reads `/dev/null`.
    pub stdin: bool,
}

/// A request from an agent; one per frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First frame of every connection: the newest version the agent speaks.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start the created container's process. Answer: [`Response::Started`].
    Start,
    /// Answer: [`Response::State`].
    State,
    /// Send `signal` to the container's main process. Answer: [`Response::Ok`].
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Turn this connection into an attach stream. Answer: [`Response::Ok`], then
    /// [`AttachOutput`] frames from the shim and [`AttachInput`] frames from the agent.
    Attach {
        /// The agent will send stdin (honoured only if the container keeps stdin open).
        stdin: bool,
    },
    /// Answer [`Response::Exited`] once the process has ended (at once if it has).
    Wait,
    /// Remove the container: kill it if still running, delete its runtime state and
    /// cgroup, unmount its rootfs; the shim exits after answering [`Response::Ok`].
    Delete,
    /// Resize the container's terminal (TTY containers only). Answer: [`Response::Ok`].
    Resize {
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Run a process in the container's namespaces and cgroup and turn this connection
    /// into its stream: [`Response::ExecStarted`] (or an error), then [`AttachOutput`]
    /// frames ending with its Exit from the shim, [`AttachInput`] frames from the agent.
    Exec {
        /// What to run.
        spec: ExecSpec,
    },
    /// Resize the terminal of a running exec process. Answer: [`Response::Ok`].
    ResizeExec {
        /// The exec instance's ID.
        exec_id: String,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Freeze every process of the container. Answer: [`Response::Ok`].
    Pause,
    /// Thaw a paused container. Answer: [`Response::Ok`].
    Resume,
}

/// A shim's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to Hello: the version the shim speaks and its own PID.
    Hello {
        /// The shim's [`PROTOCOL_VERSION`].
        version: u32,
        /// PID of the shim process.
        shim_pid: u32,
    },
    /// The request succeeded and has nothing to say.
    Ok,
    /// The process started.
    Started {
        /// Host PID of the container's main process.
        pid: u32,
    },
    /// The container's state.
    State(ShimState),
    /// The process has ended.
    Exited(Exit),
    /// The request failed.
    Error {
        /// What kind of failure, for status codes.
        kind: ErrorKind,
        /// Human-readable reason.
        message: String,
    },
    /// The exec process started; its stream follows on this connection.
    ExecStarted {
        /// Host PID of the exec process.
        pid: u32,
    },
}

/// What the shim sends on an attach stream after answering [`Request::Attach`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachOutput {
    /// Output of the container: `stream` is [`STDOUT`] or [`STDERR`] (TTY output is stdout).
    Output {
        /// [`STDOUT`] or [`STDERR`].
        stream: u8,
        /// The bytes as the process wrote them.
        data: Vec<u8>,
    },
    /// The process ended and all its output has been sent; the last frame of the stream.
    Exit(Exit),
}

/// What an agent sends on an attach stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachInput {
    /// Bytes for the container's stdin.
    Stdin {
        /// The bytes.
        data: Vec<u8>,
    },
    /// End of stdin: the shim closes the container's stdin (once every stdin attacher has).
    CloseStdin,
    /// The client detached (Docker's detach keys): stop reading this connection but keep
    /// the container's stdin open for the next attacher.
    Detach,
}

/// Why a frame header is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced length exceeds [`MAX_FRAME`].
    #[error("shim frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// A frame must carry at least the codec's format byte.
    #[error("empty shim frame")]
    Empty,
}

/// Put `payload` (the output of [`crate::codec::encode`]) into a frame.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or(FrameError::TooLarge(u32::MAX))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Check a frame's 4-byte header and return the payload length that follows.
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    // u32 always fits usize on the 32- and 64-bit targets Wharf supports.
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn golden_bytes_of_requests() {
        assert_eq!(
            encode(&Request::Hello { version: 1 }).unwrap(),
            [1, 0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(encode(&Request::Start).unwrap(), [1, 1, 0, 0, 0]);
        assert_eq!(
            encode(&Request::Kill { signal: 9 }).unwrap(),
            [1, 3, 0, 0, 0, 9, 0, 0, 0]
        );
        assert_eq!(
            encode(&Request::Attach { stdin: true }).unwrap(),
            [1, 4, 0, 0, 0, 1]
        );
        assert_eq!(encode(&Request::Delete).unwrap(), [1, 6, 0, 0, 0]);
        assert_eq!(
            encode(&Request::Resize {
                height: 2,
                width: 3
            })
            .unwrap(),
            [1, 7, 0, 0, 0, 2, 0, 3, 0]
        );
        assert_eq!(encode(&Request::Pause).unwrap(), [1, 10, 0, 0, 0]);
        assert_eq!(encode(&Request::Resume).unwrap(), [1, 11, 0, 0, 0]);
        assert_eq!(
            encode(&Request::ResizeExec {
                exec_id: "e".into(),
                height: 2,
                width: 3
            })
            .unwrap(),
            [1, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'e', 2, 0, 3, 0]
        );
        let exec = Request::Exec {
            spec: ExecSpec {
                exec_id: "x".into(),
                args: vec!["sh".into()],
                env: vec![],
                working_dir: String::new(),
                user: String::new(),
                tty: true,
                stdin: false,
            },
        };
        let bytes = encode(&exec).unwrap();
        assert_eq!(&bytes[..5], [1, 8, 0, 0, 0]);
        assert_eq!(decode::<Request>(&bytes).unwrap(), exec);
        assert_eq!(encode(&AttachInput::Detach).unwrap(), [1, 2, 0, 0, 0]);
        assert_eq!(
            encode(&Response::ExecStarted { pid: 5 }).unwrap(),
            [1, 6, 0, 0, 0, 5, 0, 0, 0]
        );
    }

    #[test]
    fn golden_bytes_of_an_exit() {
        let exit = Exit {
            code: 137,
            oom_killed: true,
            started_at_ns: 1,
            finished_at_ns: 2,
        };
        let bytes = encode(&AttachOutput::Exit(exit)).unwrap();
        let want = [
            1u8, 1, 0, 0, 0, // format, variant Exit
            137, 0, 0, 0, // code
            1, // oom_killed
            1, 0, 0, 0, 0, 0, 0, 0, // started_at_ns
            2, 0, 0, 0, 0, 0, 0, 0, // finished_at_ns
        ];
        assert_eq!(bytes, want);
        assert_eq!(
            decode::<AttachOutput>(&bytes).unwrap(),
            AttachOutput::Exit(exit)
        );
    }

    #[test]
    fn golden_bytes_of_output_and_state() {
        let out = AttachOutput::Output {
            stream: STDERR,
            data: b"hi".to_vec(),
        };
        assert_eq!(
            encode(&out).unwrap(),
            [1, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']
        );
        let state = Response::State(ShimState {
            status: Status::Running,
            pid: 7,
            exit: None,
        });
        assert_eq!(
            encode(&state).unwrap(),
            [1, 3, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]
        );
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        assert_eq!(frame(&[1, 2, 3]).unwrap(), [0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(frame_len([0, 0, 1, 0]), Ok(256));
        assert_eq!(frame_len([0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(
            frame_len([0xff, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff00_0000))
        );
    }
}
