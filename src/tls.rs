//! TLS with rustls on the ring provider: the listener's server config
//! (optionally requiring client certificates), and the PEM loading that the
//! backends' client configs use too (those live in
//! `upstream::client_tls`, where a reload can swap their files).
//!
//! Certificates are read from PEM files here and nowhere else; every error
//! names the file. There is deliberately no option to skip verification of
//! a backend's certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// ALPN protocols the listener offers, preferred first.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// Installs ring as the process-wide rustls provider. Idempotent; call it
/// before building any config (two providers in one build would make
/// `ServerConfig::builder()` panic).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what: "certificates",
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "PEM certificate",
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "a private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a PEM bundle of CA certificates into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    Ok(load_roots_and_certs(path)?.0)
}

/// Reads a PEM bundle of CA certificates into a root store, and returns
/// the certificates too (a backend's `ca` file pins them).
pub fn load_roots_and_certs(
    path: &Path,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let certs = load_certs(path)?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok((roots, certs))
}

/// The listener's TLS config: certificate chain and key, ALPN h2 and
/// http/1.1, and — with `client_ca` — mandatory client certificates
/// signed by that CA.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let roots = load_roots(ca).map_err(|e| TlsError::ClientCa {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.to_owned(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
