//! TLS of the cluster port, of agents dialing controllers, and of a join.
//!
//! ```text
//!  DATA_DIR/certs/ca.pem          the cluster CA (controllers also hold ca-key.pem)
//!  DATA_DIR/certs/node.pem         this host's node certificate (URI SAN names it)
//!  DATA_DIR/certs/node-key.pem     its key, made on this host, never sent
//! ```

use super::ClusterError;
use crate::certs::{read_certs, read_key};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

fn tls(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(certs_dir: &Path) -> Result<rustls::RootCertStore, ClusterError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&certs_dir.join("ca.pem"))? {
        roots.add(ca).map_err(tls)?;
    }
    Ok(roots)
}

/// The node certificate with the CA after it (a joining host finds the CA it pinned
/// in the chain), and its key.
fn node_chain(
    certs_dir: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    ClusterError,
> {
    let mut chain = read_certs(&certs_dir.join("node.pem"))?;
    chain.extend(read_certs(&certs_dir.join("ca.pem"))?);
    Ok((chain, read_key(&certs_dir.join("node-key.pem"))?))
}

/// The controller's cluster port: its node certificate; a client certificate of the
/// cluster CA verified when one is sent (a join has none yet: the token admits it);
/// the three protocols by ALPN.
pub fn cluster_server_config(certs_dir: &Path) -> Result<Arc<rustls::ServerConfig>, ClusterError> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(certs_dir)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(tls)?;
    let (chain, key) = node_chain(certs_dir)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![
        super::RAFT_ALPN.to_vec(),
        super::AGENT_ALPN.to_vec(),
        super::JOIN_ALPN.to_vec(),
        super::events::EVENTS_ALPN.to_vec(),
    ];
    Ok(Arc::new(cfg))
}

/// A host dialing a controller with its node certificate, trusting the cluster CA only.
pub fn node_client_config(
    certs_dir: &Path,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let (chain, key) = node_chain(certs_dir)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots(certs_dir)?)
        .with_client_auth_cert(chain, key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// A joining host: it trusts the server whose chain holds the CA of `ca_digest` (from
/// the join token) and whose certificate that CA signed for the address dialed.
pub fn join_client_config(ca_digest: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCa {
        digest: ca_digest,
        provider: provider.clone(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![super::JOIN_ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// Dial the controller at `addr` with `cfg` (the TLS server name is the address): the
/// stream once the handshake is done.
pub async fn connect(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClusterError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(ClusterError::io(format!("connect to {addr}")))?;
    super::tune_tcp(&tcp);
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| ClusterError::Tls(format!("{addr}: {e}")))
}

/// Trust the CA the join token names, found in the server's chain.
#[derive(Debug)]
struct PinnedCa {
    digest: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(c.as_ref())) == self.digest)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the controller's CA is not the one the join token names (wrong cluster or token)"
                        .into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
