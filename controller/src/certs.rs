//! The cluster's own certificate authority, and the TLS configuration built from it.
//!
//! ```text
//!  DATA_DIR/certs/ca.pem, ca-key.pem        the cluster CA (created once)
//!  DATA_DIR/certs/server.pem, server-key.pem  API server cert; SANs: listen IP, localhost, host name
//!  DATA_DIR/certs/server.sans                  the SANs it was issued for (re-issued when they change)
//!  CLIENT_DIR/ca.pem, cert.pem, key.pem       a client cert (EKU clientAuth), DOCKER_CERT_PATH
//! ```
//!
//! Every TCP listener requires a client certificate chained to the cluster CA.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why certificates could not be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// rcgen refused to make a certificate or key.
    #[error("generate {what}: {source}")]
    Generate {
        /// Which certificate.
        what: &'static str,
        /// Why.
        source: rcgen::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("no {what} in {path}")]
    Missing {
        /// What was looked for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Tls(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CertError + 'a {
    move |source| CertError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn gen(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

/// Write `contents` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(contents).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

/// The cluster CA: its key and the parameters it signs with.
pub struct Authority {
    key: KeyPair,
    cert: rcgen::Certificate,
    pem: String,
}

/// Parameters of the CA; deterministic so that the issuer can be rebuilt from the key.
fn ca_params() -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen("ca params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Wharf cluster CA");
    dn.push(DnType::OrganizationName, "Wharf");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

fn leaf_params(
    cn: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, CertError> {
    leaf_params_for(cn, sans, vec![eku])
}

fn leaf_params_for(
    cn: &str,
    sans: Vec<SanType>,
    eku: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen("leaf params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = eku;
    p.use_authority_key_identifier_extension = true;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(p)
}

impl Authority {
    /// Load the CA of `certs_dir`, creating it on first start.
    pub fn open_or_create(certs_dir: &Path) -> Result<Authority, CertError> {
        std::fs::create_dir_all(certs_dir).map_err(io("create", certs_dir))?;
        let key_path = certs_dir.join("ca-key.pem");
        let cert_path = certs_dir.join("ca.pem");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(gen("ca key"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(gen("ca key"))?;
                write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                key
            }
            Err(e) => return Err(io("read", &key_path)(e)),
        };
        let cert = ca_params()?.self_signed(&key).map_err(gen("ca cert"))?;
        let pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
                cert.pem()
            }
            Err(e) => return Err(io("read", &cert_path)(e)),
        };
        Ok(Authority { key, cert, pem })
    }

    /// The CA certificate as PEM (what clients trust).
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// The CA's key as PEM (handed to a joining controller only).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// sha256 of the CA certificate's DER, as join tokens carry it.
    pub fn digest(&self) -> Result<[u8; 32], CertError> {
        let der = rustls_pemfile::certs(&mut self.pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| CertError::Tls("the CA certificate is not PEM".into()))?;
        Ok(<sha2::Sha256 as sha2::Digest>::digest(&der).into())
    }

    /// Write a CA received from the cluster (a joining controller's) into `certs_dir`,
    /// where [`Authority::open_or_create`] then finds it.
    pub fn install(certs_dir: &Path, ca_pem: &str, key_pem: Option<&str>) -> Result<(), CertError> {
        std::fs::create_dir_all(certs_dir).map_err(io("create", certs_dir))?;
        if let Some(key) = key_pem {
            write_atomic(&certs_dir.join("ca-key.pem"), key.as_bytes(), 0o600)?;
        }
        write_atomic(&certs_dir.join("ca.pem"), ca_pem.as_bytes(), 0o644)
    }

    /// A node certificate (EKU serverAuth and clientAuth) for the holder of the public
    /// key `public_key` (SubjectPublicKeyInfo bits, ECDSA P-256), named by `uri` (see
    /// `cluster::identity`) and valid for `ip`; its PEM.
    pub fn issue_node(
        &self,
        uri: &str,
        ip: Option<IpAddr>,
        public_key: &[u8],
    ) -> Result<String, CertError> {
        let uri = rcgen::Ia5String::try_from(uri.to_string()).map_err(gen("node name"))?;
        let mut sans = vec![SanType::URI(uri)];
        sans.extend(ip.map(SanType::IpAddress));
        let params = leaf_params_for(
            "wharf-node",
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let key = RawPublicKey(public_key.to_vec());
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(gen("node cert"))?;
        Ok(cert.pem())
    }

    /// Issue a certificate for `cn`; returns (cert PEM, key PEM).
    fn issue(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String), CertError> {
        let key = KeyPair::generate().map_err(gen("leaf key"))?;
        let cert = leaf_params(cn, sans, eku)?
            .signed_by(&key, &self.cert, &self.key)
            .map_err(gen("leaf cert"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issue a client certificate (EKU clientAuth) into `dir` as ca.pem, cert.pem, key.pem.
    pub fn issue_client(&self, cn: &str, dir: &Path) -> Result<(), CertError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let (cert, key) = self.issue(cn, vec![], ExtendedKeyUsagePurpose::ClientAuth)?;
        write_atomic(&dir.join("ca.pem"), self.pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join("cert.pem"), cert.as_bytes(), 0o644)?;
        write_atomic(&dir.join("key.pem"), key.as_bytes(), 0o600)
    }

    /// Make sure `certs_dir` holds a server certificate for exactly `sans`; re-issue otherwise.
    /// Returns true when it issued a new one.
    pub fn ensure_server(&self, certs_dir: &Path, sans: &[String]) -> Result<bool, CertError> {
        let sans_path = certs_dir.join("server.sans");
        let want = sans.join("\n");
        let have = std::fs::read_to_string(&sans_path).unwrap_or_default();
        if have == want
            && certs_dir.join("server.pem").exists()
            && certs_dir.join("server-key.pem").exists()
        {
            return Ok(false);
        }
        let san_types = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(gen("server name")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (cert, key) =
            self.issue("wharf-api", san_types, ExtendedKeyUsagePurpose::ServerAuth)?;
        write_atomic(&certs_dir.join("server-key.pem"), key.as_bytes(), 0o600)?;
        write_atomic(&certs_dir.join("server.pem"), cert.as_bytes(), 0o644)?;
        write_atomic(&sans_path, want.as_bytes(), 0o644)?;
        Ok(true)
    }
}

/// A public key as a joining host sends it: ECDSA P-256 (rcgen's default).
struct RawPublicKey(Vec<u8>);

impl rcgen::PublicKeyData for RawPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The names the API certificate must carry for a listener on `ip`.
pub fn server_sans(ip: IpAddr, hostname: &str) -> Vec<String> {
    let mut sans = vec![];
    if ip.is_unspecified() {
        sans.push(Ipv4Addr::LOCALHOST.to_string());
    } else {
        sans.push(ip.to_string());
    }
    if ip != IpAddr::from(Ipv4Addr::LOCALHOST) {
        sans.push(Ipv4Addr::LOCALHOST.to_string());
    }
    sans.push("localhost".to_string());
    if !hostname.is_empty() && hostname != "localhost" && hostname.parse::<IpAddr>().is_err() {
        sans.push(hostname.to_string());
    }
    sans.dedup();
    sans
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(io("read", path))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("parse", path))?;
    if certs.is_empty() {
        return Err(CertError::Missing {
            what: "certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = std::fs::read(path).map_err(io("read", path))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(io("parse", path))?
        .ok_or_else(|| CertError::Missing {
            what: "private key",
            path: path.to_path_buf(),
        })
}

/// The API's TLS configuration: server cert from `certs_dir`, client certs required and
/// verified against the cluster CA only; HTTP/1.1 only.
pub fn server_config(certs_dir: &Path) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&certs_dir.join("ca.pem"))? {
        roots.add(ca).map_err(|e| CertError::Tls(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| CertError::Tls(e.to_string()))?;
    let chain = read_certs(&certs_dir.join("server.pem"))?;
    let key = read_key(&certs_dir.join("server-key.pem"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| CertError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_listen_address_localhost_and_hostname() {
        let s = server_sans("127.0.0.1".parse().unwrap(), "box1");
        assert_eq!(s, vec!["127.0.0.1", "localhost", "box1"]);
        let s = server_sans("10.0.0.5".parse().unwrap(), "box1");
        assert_eq!(s, vec!["10.0.0.5", "127.0.0.1", "localhost", "box1"]);
    }

    #[test]
    fn ca_survives_restart_and_server_cert_is_reissued_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open_or_create(dir.path()).unwrap();
        let sans = server_sans("127.0.0.1".parse().unwrap(), "h");
        assert!(ca.ensure_server(dir.path(), &sans).unwrap());
        let first = std::fs::read(dir.path().join("server.pem")).unwrap();
        drop(ca);
        let ca = Authority::open_or_create(dir.path()).unwrap();
        assert!(
            !ca.ensure_server(dir.path(), &sans).unwrap(),
            "same names: reused"
        );
        assert_eq!(std::fs::read(dir.path().join("server.pem")).unwrap(), first);
        let other = server_sans("127.0.0.2".parse().unwrap(), "h");
        assert!(
            ca.ensure_server(dir.path(), &other).unwrap(),
            "new address: re-issued"
        );
        ca.issue_client("me", &dir.path().join("client")).unwrap();
        server_config(dir.path()).unwrap();
    }
}
