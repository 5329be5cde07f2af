"""Attach, exec, kill and wait as programs written for Docker drive them with docker-py 7.1
(issue 15), over the instance's unix socket.

Run by controller/tests/sdk_streams.rs with WHARF_SOCKET (the API's unix socket),
WHARF_BUSYBOX_TAR (a `docker save` of busybox:latest) and DOCKER_CONFIG (a client config
whose `detachKeys` is ctrl-a). Every client has a socket timeout, so a call that would hang
fails instead, and so does a row that takes longer than ROW_LIMIT (docker-py polls the
socket of a stream without a timeout). Over a unix socket docker-py loses stream bytes that arrive together with
the 101 headers (it reads the headers through a buffer, the stream from the socket under
it): the rows that read a stream repeat, so such a loss shows.
"""

import os
import signal
import socket
import sys
import threading
import time
import unittest
import uuid

import docker
import docker.errors
from docker.utils.socket import next_frame_header, read_exactly

UNIQUE = uuid.uuid4().hex[:8]
# A call that takes longer than this is taken as hung.
TIMEOUT = 20
# A row that takes longer than this is taken as hung.
ROW_LIMIT = 90
REPEAT = 10


def api(timeout=TIMEOUT):
    return docker.APIClient(base_url="unix://" + os.environ["WHARF_SOCKET"], version="auto",
                            timeout=timeout)


def raw_socket(sock):
    """The socket under what `exec_start(socket=True)` returns (a SocketIO over unix)."""
    return getattr(sock, "_sock", sock)


def read_to_eof(sock):
    out = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return out
        out += chunk


class Hung(Exception):
    """A row ran past ROW_LIMIT (not an OSError, which docker-py's streams swallow)."""


def hung(signum, frame):
    raise Hung(f"row still running after {ROW_LIMIT} s")


class SdkStreams(unittest.TestCase):
    def setUp(self):
        signal.signal(signal.SIGALRM, hung)
        signal.alarm(ROW_LIMIT)

    def tearDown(self):
        signal.alarm(0)

    @classmethod
    def setUpClass(cls):
        cls.api = api()
        with open(os.environ["WHARF_BUSYBOX_TAR"], "rb") as f:
            cls.api.load_image(f.read())
        cls.made = []

    @classmethod
    def tearDownClass(cls):
        for c in cls.made:
            try:
                cls.api.remove_container(c, force=True)
            except docker.errors.APIError:
                pass

    def create(self, cmd, **kw):
        c = self.api.create_container("busybox", cmd, **kw)["Id"]
        self.made.append(c)
        return c

    def run_to_end(self, cmd):
        c = self.create(cmd)
        self.api.start(c)
        self.assertEqual(self.api.wait(c)["StatusCode"], 0)
        return c

    def running(self, cmd, ready=b"ready\n"):
        """A started container, once its log shows `ready`."""
        c = self.create(cmd)
        self.api.start(c)
        for _ in range(200):
            if self.api.logs(c) == ready:
                return c
            time.sleep(0.05)
        self.fail(f"container never logged {ready!r}: {self.api.logs(c)!r}")

    # 1. attach and its logs, on exited and running containers.

    def test_10_attach_exited_logs_without_stream_returns_the_log(self):
        c = self.run_to_end(["sh", "-c", "echo out1; echo err1 >&2; echo out2"])
        for _ in range(REPEAT):
            self.assertEqual(self.api.attach(c, stream=False, logs=True, demux=True),
                             (b"out1\nout2\n", b"err1\n"))
            self.assertEqual(self.api.attach(c, stream=False, logs=True, stderr=False),
                             b"out1\nout2\n")
            self.assertEqual(self.api.attach(c, stream=False, logs=True, stdout=False),
                             b"err1\n")
            self.assertEqual(self.api.attach(c, stream=False, logs=False), b"")

    def test_11_attach_exited_tty_logs_are_raw(self):
        c = self.create(["sh", "-c", "echo tty-out"], tty=True)
        self.api.start(c)
        self.api.wait(c)
        self.assertEqual(self.api.attach(c, stream=False, logs=True), b"tty-out\r\n")

    def test_12_attach_running_without_stream_returns(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        self.assertEqual(self.api.attach(c, stream=False, logs=True), b"ready\n")
        self.assertEqual(self.api.attach(c, stream=False, logs=False), b"")
        self.assertEqual(self.api.inspect_container(c)["State"]["Status"], "running")

    def test_13_attach_running_stream_with_logs_gets_all_and_ends_at_exit(self):
        c = self.running(["sh", "-c",
                          "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two"])
        out = self.api.attach(c, stream=True, logs=True)
        e = self.api.exec_create(c, ["touch", "/tmp/go"])
        self.api.exec_start(e["Id"], detach=True)
        self.assertEqual(b"".join(out), b"ready\ntwo\n")

    def test_14_attach_exited_stream_gets_the_log_then_the_next_run(self):
        c = self.run_to_end(["echo", "again"])
        out = self.api.attach(c, stream=True, logs=True)
        self.api.start(c)
        self.assertEqual(b"".join(out), b"again\nagain\n")

    def test_15_attach_created_stream_gets_the_whole_run(self):
        for _ in range(3):
            c = self.create(["sh", "-c", "echo first; echo second >&2"])
            out = self.api.attach(c, stream=True, logs=False, demux=True)
            self.api.start(c)
            got = list(out)
            self.assertEqual(b"".join(o for o, _ in got if o), b"first\n")
            self.assertEqual(b"".join(e for _, e in got if e), b"second\n")

    def test_16_attach_paused_is_refused(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        self.api.pause(c)
        try:
            with self.assertRaises(docker.errors.APIError) as cm:
                self.api.attach(c, stream=False, logs=True)
            self.assertEqual(cm.exception.status_code, 409)
        finally:
            self.api.unpause(c)

    # 2. exec with a terminal: complete output, raw or framed as the start asks.

    def test_20_tty_exec_output_is_complete_framed_or_raw(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        line = b"hello out\r\n"

        def started(**kw):
            e = self.api.exec_create(c, ["echo", "hello out"], tty=True)["Id"]
            return e, self.api.exec_start(e, **kw)

        for _ in range(REPEAT):
            self.assertEqual(started()[1], line)
            self.assertEqual(started(demux=True)[1], (line, None))
            self.assertEqual(b"".join(started(stream=True)[1]), line)
            self.assertEqual(started(tty=True)[1], line)
            self.assertEqual(started(tty=True, demux=True)[1], (line, None))
            self.assertEqual(b"".join(started(tty=True, stream=True)[1]), line)
            e, out = started()
            self.assertEqual(self.api.exec_inspect(e)["ExitCode"], 0)

    def test_21_exec_socket_is_the_raw_stream(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        # docker-py's own test_exec_start_socket: framed unless the start asks for a TTY.
        e = self.api.exec_create(c, ["printf", "yay, interactive exec!"], tty=True)["Id"]
        sock = self.api.exec_start(e, socket=True)
        try:
            stream, size = next_frame_header(sock)
            self.assertEqual((stream, size), (1, len("yay, interactive exec!")))
            self.assertEqual(read_exactly(sock, size), b"yay, interactive exec!")
        finally:
            sock.close()
        e = self.api.exec_create(c, ["printf", "raw"], tty=True)["Id"]
        sock = self.api.exec_start(e, socket=True, tty=True)
        try:
            self.assertEqual(read_to_eof(raw_socket(sock)), b"raw")
        finally:
            sock.close()

    def test_22_non_tty_exec_demuxes(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        for _ in range(REPEAT):
            e = self.api.exec_create(c, ["sh", "-c", "echo o; echo e >&2; exit 3"])["Id"]
            self.assertEqual(self.api.exec_start(e, demux=True), (b"o\n", b"e\n"))
            self.assertEqual(self.api.exec_inspect(e)["ExitCode"], 3)

    def test_23_detach_keys_of_the_client_config_end_the_attach_not_the_exec(self):
        self.assertEqual(self.api._general_configs.get("detachKeys"), "ctrl-a")
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        e = self.api.exec_create(c, ["cat"], stdin=True, tty=True)["Id"]
        sock = self.api.exec_start(e, socket=True, tty=True)
        s = raw_socket(sock)
        try:
            s.sendall(b"typed\n")
            seen = b""
            while b"typed" not in seen:
                chunk = s.recv(4096)
                self.assertTrue(chunk, f"stream ended before the echo: {seen!r}")
                seen += chunk
            s.sendall(b"\x01")
            read_to_eof(s)
        finally:
            sock.close()
        info = self.api.exec_inspect(e)
        self.assertTrue(info["Running"], info)
        self.assertIsNone(info["ExitCode"])

    # 3. kill.

    def test_30_sigkill_returns_once_the_exit_is_recorded(self):
        for _ in range(3):
            c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
            self.api.kill(c)
            state = self.api.inspect_container(c)["State"]
            self.assertEqual((state["Running"], state["Status"], state["ExitCode"]),
                             (False, "exited", 137))
            self.api.remove_container(c)
            self.made.remove(c)

    def test_31_other_signals_return_once_delivered(self):
        c = self.running(["sh", "-c",
                          "trap 'echo got-usr1; exit 3' USR1; echo ready; "
                          "while true; do sleep 0.05; done"])
        self.api.kill(c, signal="SIGUSR1")
        self.assertEqual(self.api.wait(c)["StatusCode"], 3)
        self.assertEqual(self.api.logs(c), b"ready\ngot-usr1\n")

    # 4. nothing waits for an event that already happened.

    def test_40_attach_racing_a_start_always_ends(self):
        quick = api(timeout=10)
        for i in range(12):
            # Runs for a second: an attach that arrives after the exit would rightly wait
            # for the next start (as Docker's does), which is not the race under test and
            # happens on a loaded machine; within that second the attach meets the
            # start's hand-over of the streams at every offset.
            c = self.create(["sh", "-c", "sleep 1; echo raced"])
            t = threading.Thread(target=self.api.start, args=(c,))
            t.start()
            time.sleep(i * 0.005)
            try:
                out = quick.attach(c, stream=True, logs=False)
                got = b"".join(out)
            finally:
                t.join()
            self.assertIn(got, (b"", b"raced\n"))
            self.assertEqual(self.api.wait(c)["StatusCode"], 0)

    def test_41_attach_ends_when_the_container_is_killed(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        out = self.api.attach(c, stream=True, logs=False)
        self.api.kill(c)
        self.assertEqual(b"".join(out), b"")

    def test_42_exec_of_a_process_that_ended_at_once(self):
        c = self.running(["sh", "-c", "echo ready; exec sleep 300"])
        for _ in range(REPEAT):
            e = self.api.exec_create(c, ["true"], tty=True)["Id"]
            self.assertEqual(self.api.exec_start(e), b"")
            self.assertEqual(self.api.exec_inspect(e)["ExitCode"], 0)

    def test_43_logs_follow_and_wait_of_an_exited_container_return(self):
        c = self.run_to_end(["echo", "done"])
        self.assertEqual(b"".join(self.api.logs(c, stream=True, follow=True)), b"done\n")
        self.assertEqual(self.api.wait(c)["StatusCode"], 0)

    def test_44_client_gone_mid_attach_leaves_stdin_open(self):
        # Not StdinOnce (created detached): a client that drops its attach socket ends
        # its input, not the container's stdin.
        c = self.create(["cat"], stdin_open=True, detach=True)
        self.api.start(c)
        first = self.api.attach_socket(c, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw_socket(first).sendall(b"first\n")
        stream, size = next_frame_header(raw_socket(first))
        self.assertEqual(read_exactly(raw_socket(first), size), b"first\n")
        raw_socket(first).shutdown(socket.SHUT_RDWR)
        first.close()
        sock = self.api.attach_socket(c, params={"stdin": 1, "stdout": 1, "stream": 1})
        s = raw_socket(sock)
        try:
            s.sendall(b"still open\n")
            stream, size = next_frame_header(s)
            self.assertEqual(stream, 1)
            self.assertEqual(read_exactly(s, size), b"still open\n")
        finally:
            sock.close()


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[1:], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
