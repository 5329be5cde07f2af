//! A small blocking client of the Docker API over mutual TLS (rustls on a `TcpStream`,
//! HTTP/1.1 with keep-alive), for benches that issue many requests from many threads
//! without paying for a `docker` CLI process each: one [`Conn`] per thread, opened before
//! the clock starts.

use anyhow::{bail, Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The client identity and trust of one cluster: `ca.pem`, `cert.pem`, `key.pem` of a
/// `DOCKER_CERT_PATH`.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Read the certificates of `cert_path` (a `DOCKER_CERT_PATH`).
    pub fn from_cert_path(cert_path: &Path) -> Result<Tls> {
        let read = |name: &str| {
            std::fs::read(cert_path.join(name))
                .with_context(|| format!("read {}", cert_path.join(name).display()))
        };
        let certs = |pem: Vec<u8>| -> Result<Vec<CertificateDer<'static>>> {
            Ok(rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>()?)
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs(read("ca.pem")?)? {
            roots.add(ca)?;
        }
        let chain = certs(read("cert.pem")?)?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read("key.pem")?[..])?
            .context("no private key in key.pem")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// Open a connection to `addr` (the server's certificate must name its IP address, as
    /// the docker CLI checks too) and finish the handshake.
    pub fn connect(&self, addr: SocketAddr) -> Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(self.config.clone(), name)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .with_context(|| format!("TLS handshake with {addr}"))?;
        }
        Ok(Conn {
            io: BufReader::new(stream),
            addr,
        })
    }
}

/// One kept-alive HTTP/1.1 connection to a Docker API.
pub struct Conn {
    io: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    addr: SocketAddr,
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The whole body (chunked bodies joined).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    /// The address it is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `METHOD PATH` with an optional JSON body; the whole response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wharf-bench\r\n",
            self.addr
        );
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let s = self.io.get_mut();
        s.write_all(head.as_bytes())?;
        if let Some(b) = body {
            s.write_all(b)?;
        }
        s.flush()?;
        read_response(&mut self.io).with_context(|| format!("{method} {path} on {}", self.addr))
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("connection closed");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Read one HTTP/1.1 response (Content-Length, chunked, or up to the end) from `r`.
pub fn read_response(r: &mut impl BufRead) -> Result<Response> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>()?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            read_line(r)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, body })
}

/// A connection's controller and the latencies of its creates, in seconds.
pub type ConnLatencies = (SocketAddr, Vec<f64>);

/// `n` creates of `image` (`true`, no network) from `clients` connections opened
/// round-robin over `addrs` before the clock starts: the wall seconds, and each
/// connection's controller with its creates' latencies. Every create must answer 201;
/// the first that does not stops the burst and is the error (as is a stop signal).
pub fn create_burst(
    tls: &Tls,
    addrs: &[SocketAddr],
    clients: usize,
    n: usize,
    image: &str,
) -> Result<(f64, Vec<ConnLatencies>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if addrs.is_empty() {
        bail!("no controller to create on");
    }
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(tls.connect(addrs[i % addrs.len()])?);
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "Image": image,
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": "none"},
    }))?;
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let fail = |e: String| {
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    let t = std::time::Instant::now();
    let results: Vec<(SocketAddr, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let (next, failed, body, fail) = (&next, &failed, &body, &fail);
                s.spawn(move || {
                    let mut lat = Vec::new();
                    while !super::signals::stopped()
                        && failed.lock().unwrap_or_else(|p| p.into_inner()).is_none()
                        && next.fetch_add(1, Ordering::SeqCst) < n
                    {
                        let t = std::time::Instant::now();
                        match conn.request("POST", "/containers/create", Some(body)) {
                            Ok(r) if r.status == 201 => lat.push(t.elapsed().as_secs_f64()),
                            Ok(r) => fail(format!(
                                "POST /containers/create on {}: {} {}",
                                conn.addr(),
                                r.status,
                                r.text().trim()
                            )),
                            Err(e) => fail(format!("{e:#}")),
                        }
                    }
                    (conn.addr(), lat)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let wall = t.elapsed().as_secs_f64();
    super::signals::check()?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        bail!("a create failed: {e}");
    }
    let answered: usize = results.iter().map(|(_, l)| l.len()).sum();
    if answered != n {
        bail!("{answered} creates answered 201, expected {n}");
    }
    Ok((wall, results))
}

#[cfg(test)]
mod tests {
    use super::read_response;

    #[test]
    fn reads_content_length_then_the_next_response() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"Id\":\"a\"}HTTP/1.1 204 No Content\r\n\r\n";
        let mut r = &raw[..];
        let first = read_response(&mut r).unwrap();
        assert_eq!(first.status, 201);
        assert_eq!(first.json().unwrap()["Id"], "a");
        let second = read_response(&mut r).unwrap();
        assert_eq!(second.status, 204);
        assert!(second.body.is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn reads_chunked_with_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\nX-T: 1\r\n\r\nrest";
        let mut r = &raw[..];
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "[1,2]");
        assert_eq!(r, b"rest");
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let mut r = &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"[..];
        assert!(read_response(&mut r).is_err());
        assert!(read_response(&mut &b""[..]).is_err());
    }
}
