"""A raw HTTP/1.1 client over mutual TLS (or a unix socket) for Wharf's API tests.

Used by controller/tests/api.rs to check what the `docker` CLI cannot show: when headers
arrive, what a dropped or slow connection does, and how malformed requests are answered.
Usage: raw_http.py CERT_DIR HOST PORT SCENARIO [ARGS...]; prints one JSON object per check
and exits non-zero on the first failed expectation.
"""

import json
import socket
import ssl
import sys
import time


def connect(cert_dir, host, port, timeout=10.0):
    ctx = ssl.create_default_context(cafile=f"{cert_dir}/ca.pem")
    ctx.load_cert_chain(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=host)


def read_head(sock, timeout):
    """Read up to the end of the header block; returns (status, headers, leftover bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"connection closed before the headers ended: {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def request(sock, method, path, body=b"", headers=None):
    h = {"Host": "wharf"}
    if not (headers or {}).get("Transfer-Encoding"):
        h["Content-Length"] = str(len(body))
    if body:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    sock.sendall(head.encode() + b"\r\n" + body)


def read_body(sock, headers, rest, timeout=10.0):
    """The whole body of a response (Content-Length or chunked)."""
    sock.settimeout(timeout)
    data = rest
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while True:
            while b"\r\n" not in data:
                data += sock.recv(4096)
            size_line, data = data.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(data) < size + 2:
                data += sock.recv(4096)
            out += data[:size]
            data = data[size + 2:]
            if size == 0:
                return out
    n = int(headers.get("content-length", "0"))
    while len(data) < n:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data[:n]


def call(cert_dir, host, port, method, path, body=b"", headers=None):
    s = connect(cert_dir, host, port)
    request(s, method, path, body, headers)
    status, h, rest = read_head(s, 10)
    b = read_body(s, h, rest)
    s.close()
    return status, h, b


def check(cond, what):
    print(json.dumps({"check": what, "ok": bool(cond)}), flush=True)
    if not cond:
        sys.exit(1)


def scenario_bad_input(cert_dir, host, port):
    def expect(method, path, body, status, message_part):
        st, h, b = call(cert_dir, host, port, method, path, body)
        msg = json.loads(b or b"{}").get("message", "")
        ok = st == status and message_part in msg and h.get("content-type") == "application/json"
        check(ok, f"{method} {path} -> {st} {msg!r} (want {status} ~{message_part!r})")

    # Every response carries the version headers; the ping carries the CLI's extras.
    for method, path in [("HEAD", "/_ping"), ("GET", "/v1.44/_ping"), ("GET", "/nope")]:
        s = connect(cert_dir, host, port)
        request(s, method, path)
        st, h, _ = read_head(s, 10)
        s.close()
        want = ["api-version", "ostype", "server"]
        if path.endswith("_ping"):
            want += ["docker-experimental", "builder-version", "swarm"]
        check(all(k in h for k in want) and h["api-version"] == "1.50",
              f"{method} {path} -> {st} headers {sorted(h)}")
    expect("GET", "/nope", b"", 404, "page not found")
    expect("GET", "/v1.44/containers/x/y/z", b"", 404, "page not found")
    expect("GET", "/v1.99/info", b"", 400, "too new")
    expect("GET", "/v1.12/info", b"", 400, "too old")
    expect("POST", "/containers/create", b"{not json", 400, "invalid JSON")
    expect("POST", "/containers/create", b"[1,2]", 400, "")
    expect("POST", "/containers/create", b'{"Image": 5}', 400, "invalid container config")
    expect("POST", "/containers/create", b'{"Image":"busybox","Cmd":{"a":1}}', 400, "")
    expect("POST", "/containers/create", b'{"Image":"busybox","Tty":"yes"}', 400, "")
    # Just under the limit: read whole and parsed (the image is not loaded here).
    near = b'{"Image":"nope","Labels":{"x":"' + b"a" * (4 * 1024 * 1024 - 100) + b'"}}'
    expect("POST", "/containers/create", near, 404, "No such image: nope:latest")
    # Over it, announced: 413 before the body is sent.
    s = connect(cert_dir, host, port)
    request(s, "POST", "/containers/create", headers={
        "Content-Length": str(5 * 1024 * 1024), "Content-Type": "application/json",
        "Expect": "100-continue"})
    st, h, rest = read_head(s, 10)
    msg = json.loads(read_body(s, h, rest)).get("message", "")
    check(st == 413 and "larger than" in msg, f"announced big body -> {st} {msg!r}")
    s.close()
    # Over it, sent anyway (with a length, then chunked): a 413 or a closed connection,
    # never a truncated body taken as valid.
    big = b'{"Image":"busybox","Labels":{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}}'
    for extra in [{}, {"Transfer-Encoding": "chunked"}]:
        s = connect(cert_dir, host, port)
        try:
            if extra:
                head = ("POST /containers/create HTTP/1.1\r\nHost: x\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n")
                s.sendall(head.encode())
                for i in range(0, len(big), 65536):
                    part = big[i:i + 65536]
                    s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            else:
                request(s, "POST", "/containers/create", big)
            st, h, rest = read_head(s, 10)
        except (ConnectionError, ssl.SSLError, EOFError):
            st = None
        check(st in (None, 413), f"big body {extra} -> {st}")
        s.close()
    expect("GET", "/containers/json?filters=%7Bbad", b"", 400, "invalid filter")
    expect("GET", "/containers/json?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D", b"", 400,
           "invalid filter 'colour'")
    expect("GET", "/containers/json?limit=many", b"", 400, "limit")
    expect("GET", "/events?since=yesterday", b"", 400, "since")
    expect("GET", "/events?since=10&until=5", b"", 400, "cannot be after")
    expect("POST", "/containers/prune?filters=%7B%22until%22%3A%5B%22soon%22%5D%7D", b"", 400,
           "invalid filter")
    # The legacy list form of filters is accepted.
    st, _, b = call(cert_dir, host, port, "GET",
                    "/containers/json?all=1&filters=%7B%22status%22%3A%5B%22exited%22%5D%7D")
    check(st == 200 and isinstance(json.loads(b), list), f"legacy filters form -> {st}")
    # Garbage that is not HTTP at all: the connection is answered or closed, not hung.
    for junk in [b"\x00\xff\x13garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"POST /containers/create HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"GET /_ping HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n"]:
        s = connect(cert_dir, host, port)
        s.sendall(junk)
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except (ConnectionError, ssl.SSLError):
            data = b""
        refused = data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 5")
        check(data == b"" or refused, f"junk {junk[:20]!r} -> {data[:40]!r}")
        s.close()
    st, _, b = call(cert_dir, host, port, "GET", "/_ping")
    check(st == 200 and b == b"OK", "still serving after junk")


def scenario_headers_first(cert_dir, host, port, cid):
    """attach's 101 and wait's headers arrive before the container starts."""
    a = connect(cert_dir, host, port)
    request(a, "POST", f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1",
            headers={"Connection": "Upgrade", "Upgrade": "tcp"})
    status, h, rest = read_head(a, 5)
    check(status == 101 and h.get("upgrade") == "tcp" and h.get("connection") == "Upgrade"
          and h.get("api-version") == "1.50", f"attach answered {status} {h}")
    w = connect(cert_dir, host, port)
    request(w, "POST", f"/containers/{cid}/wait?condition=next-exit")
    wstatus, wh, wrest = read_head(w, 5)
    check(wstatus == 200 and wrest == b"", f"wait headers before start: {wstatus} {wrest!r}")
    st, _, _ = call(cert_dir, host, port, "POST", f"/containers/{cid}/start")
    check(st == 204, f"start -> {st}")
    a.settimeout(20)
    out = rest
    while True:
        chunk = a.recv(4096)
        if not chunk:
            break
        out += chunk
    check(out[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x06" and out[8:14] == b"hello\n",
          f"framed stdout after the 101: {out!r}")
    body = read_body(w, wh, wrest, 20)
    check(json.loads(body)["StatusCode"] == 7, f"wait body {body!r}")


def scenario_drop(cert_dir, host, port, cid):
    """Clients that vanish mid-attach and mid-wait."""
    for _ in range(5):
        a = connect(cert_dir, host, port)
        request(a, "POST", f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1&stdin=1",
                headers={"Connection": "Upgrade", "Upgrade": "tcp"})
        status, _, _ = read_head(a, 5)
        check(status == 101, f"attach {status}")
        a.recv(64)  # some output arrived
        a.shutdown(socket.SHUT_RDWR)  # no close_notify: the TCP connection just goes away
        a.close()
        w = connect(cert_dir, host, port)
        request(w, "POST", f"/containers/{cid}/wait")
        status, _, _ = read_head(w, 5)
        check(status == 200, f"wait {status}")
        w.shutdown(socket.SHUT_RDWR)
        w.close()
    st, _, b = call(cert_dir, host, port, "GET", f"/containers/{cid}/json")
    check(st == 200 and json.loads(b)["State"]["Running"], "container still running")


def scenario_slow(cert_dir, host, port, header_timeout):
    """A slowloris client and an idle keep-alive one are closed; others are served meanwhile."""
    slow = connect(cert_dir, host, port)
    slow.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")
    idle = connect(cert_dir, host, port)
    request(idle, "GET", "/_ping")
    st, h, rest = read_head(idle, 5)
    read_body(idle, h, rest)
    check(st == 200, "idle connection served its first request")
    start = time.time()
    for i in range(3):
        st, _, b = call(cert_dir, host, port, "GET", "/_ping")
        check(st == 200 and b == b"OK", f"other client served while one is slow ({i})")
        slow.sendall(b"X-Slow: 1\r\n")
        time.sleep(1)
    for name, s in [("slowloris", slow), ("idle", idle)]:
        s.settimeout(header_timeout + 30)
        try:
            data = s.recv(4096)
        except (ConnectionError, ssl.SSLError):
            data = b""
        waited = time.time() - start
        check(not data.startswith(b"HTTP/1.1 200"), f"{name} not answered: {data[:40]!r}")
        check(waited < header_timeout + 25, f"{name} closed after {waited:.0f}s")


def main():
    cert_dir, host, port, scenario = sys.argv[1:5]
    args = sys.argv[5:]
    {
        "bad_input": scenario_bad_input,
        "headers_first": scenario_headers_first,
        "drop": scenario_drop,
        "slow": lambda c, h, p: scenario_slow(c, h, p, 30),
    }[scenario](cert_dir, host, port, *args)


if __name__ == "__main__":
    main()
