//! A backend's TLS files (`ca`, `cert`, `key`) as one rustls client config
//! whose trust, client certificate and session cache can be replaced while
//! it is in use.
//!
//! Every pool to a backend, on every worker, connects through the same
//! [`ClientTls`]. A config reload reads the files again ([`ClientTls::load`],
//! which fails without changing anything) and swaps them in
//! ([`ClientTls::store`]): connections opened after that verify against the
//! new CA and present the new certificate. Open connections keep the
//! handshake they made, so in-flight requests finish undisturbed. The
//! session cache is replaced too, so no new connection resumes a session
//! made with the old certificate.
//!
//! A certificate of the `ca` file that a server presents as its own is
//! trusted as it is (an end-entity pin), after its name and validity
//! period are checked: that is how curl, nginx and Envoy treat a
//! self-signed certificate given as the CA, and webpki alone refuses one
//! made with `CA:TRUE` (as `openssl req -x509` makes them) as a server's
//! certificate. Every other certificate is verified by webpki.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert};
use rustls::client::{Tls12ClientSessionValue, Tls13ClientSessionValue, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore};

use super::cert_problem::{self, Trust};
use crate::box_error::BoxError;
use crate::config::Backend;
use crate::tls::{self, TlsError};

mod fields;

/// Sessions remembered per backend, as rustls's default cache does.
const SESSION_CACHE_SIZE: usize = 256;

/// The files of one backend, read and checked, ready to swap in.
pub struct ClientTlsFiles {
    verifier: Arc<Verifier>,
    key: Option<Arc<CertifiedKey>>,
}

/// A backend's live TLS files, shared by all its pools.
#[derive(Clone)]
pub struct ClientTls {
    live: Arc<Live>,
}

struct Live {
    verifier: ArcSwap<Verifier>,
    key: ArcSwapOption<CertifiedKey>,
    sessions: ArcSwap<ClientSessionMemoryCache>,
}

impl ClientTls {
    /// Reads `backend`'s files (Mozilla's roots when it names no `ca`).
    pub fn new(backend: &Backend) -> Result<Self, TlsError> {
        Ok(Self::with_files(Self::load(backend)?))
    }

    /// Trust as `trust` describes it (its `ca`, else Mozilla's roots) and
    /// no client certificate: for a peer other than a backend.
    pub fn verifying(trust: Trust) -> Result<Self, TlsError> {
        Ok(Self::with_files(load(trust, None)?))
    }

    fn with_files(files: ClientTlsFiles) -> Self {
        Self {
            live: Arc::new(Live {
                verifier: ArcSwap::new(files.verifier),
                key: ArcSwapOption::new(files.key),
                sessions: ArcSwap::from_pointee(ClientSessionMemoryCache::new(SESSION_CACHE_SIZE)),
            }),
        }
    }

    /// Reads and checks `backend`'s files without using them yet: only
    /// `ca` when given, else Mozilla's roots (compiled in, so the image
    /// needs no CA bundle); a client certificate when `cert` and `key` are
    /// given. ALPN is set by the connector.
    pub fn load(backend: &Backend) -> Result<ClientTlsFiles, TlsError> {
        let trust = Trust {
            peer: "backend",
            ca_key: format!("backends.{}.ca", backend.name),
            url_key: format!("backends.{}.url", backend.name),
            ca: backend.ca.clone(),
        };
        load(trust, backend.client_cert.as_ref())
    }

    /// `source` with what a refused certificate in it means said in front,
    /// naming the CA file in use now.
    pub fn explain(&self, source: BoxError) -> BoxError {
        cert_problem::explain(source, &self.live.verifier.load().trust)
    }

    /// New connections use `files` from now on.
    pub fn store(&self, files: ClientTlsFiles) {
        self.live.verifier.store(files.verifier);
        self.live.key.store(files.key);
        self.live
            .sessions
            .store(Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE_SIZE)));
    }

    /// A rustls config that reads the live files at each handshake.
    pub fn client_config(&self) -> ClientConfig {
        let live = Shared(self.live.clone());
        let mut config = ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(live.clone()))
            .with_client_cert_resolver(Arc::new(live.clone()));
        config.resumption = rustls::client::Resumption::store(Arc::new(live));
        config
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    Ok(CertifiedKey::from_der(
        tls::load_certs(cert)?,
        tls::load_key(key)?,
        &provider,
    )?)
}

fn load(
    trust: Trust,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<ClientTlsFiles, TlsError> {
    tls::install_crypto_provider();
    let (roots, pins) = match &trust.ca {
        Some(ca) => tls::load_roots_and_certs(ca)?,
        None => (
            RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Vec::new(),
        ),
    };
    let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let key = match client_cert {
        Some((cert, key)) => Some(Arc::new(certified_key(cert, key)?)),
        None => None,
    };
    Ok(ClientTlsFiles {
        verifier: Arc::new(Verifier {
            webpki,
            pins,
            trust,
        }),
        key,
    })
}

/// One peer's trust: webpki over the `ca` file (or Mozilla's roots), that
/// file's certificates as pins, and the words for what it refuses.
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// Every certificate of the `ca` file.
    pins: Vec<CertificateDer<'static>>,
    trust: Trust,
}

impl Verifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pins
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            return verify_pinned(end_entity, server_name, now);
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| self_signed_is_unknown(error, end_entity))
    }
}

/// A certificate the `ca` file holds, presented as the server's own: its
/// identity is the trust, so no chain is built. It must still be valid now
/// and name the server (as webpki checks either); the handshake's
/// signature is verified with its key as for any certificate.
fn verify_pinned(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let parsed = ParsedCertificate::try_from(end_entity)?;
    let fields = fields::read(end_entity).ok_or(CertificateError::BadEncoding)?;
    if now.as_secs() < fields.not_before.as_secs() {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: fields.not_before,
        }
        .into());
    }
    if now.as_secs() > fields.not_after.as_secs() {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: fields.not_after,
        }
        .into());
    }
    rustls::client::verify_server_name(&parsed, server_name)?;
    Ok(ServerCertVerified::assertion())
}

/// webpki refuses a `CA:TRUE` certificate as a server's own before it
/// looks for an issuer. A self-issued one that is not pinned has no
/// trusted issuer: it is told as such, as webpki tells a self-signed
/// certificate without `CA:TRUE` that is not in the roots.
fn self_signed_is_unknown(error: rustls::Error, end_entity: &CertificateDer<'_>) -> rustls::Error {
    let ca_as_end_entity = matches!(
        &error,
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if cert_problem::ca_used_as_end_entity(other)
    );
    if ca_as_end_entity && fields::read(end_entity).is_some_and(|f| f.self_issued()) {
        CertificateError::UnknownIssuer.into()
    } else {
        error
    }
}

/// The live files, as each rustls hook needs them.
#[derive(Clone)]
struct Shared(Arc<Live>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ServerCertVerifier for Shared {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verifier
            .load()
            .verify(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verifier
            .load()
            .webpki
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verifier
            .load()
            .webpki
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.verifier.load().webpki.supported_verify_schemes()
    }
}

impl ResolvesClientCert for Shared {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.key.load_full()
    }

    fn has_certs(&self) -> bool {
        self.0.key.load().is_some()
    }
}

impl ClientSessionStore for Shared {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.sessions.load().set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.sessions.load().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.sessions.load().set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.sessions.load().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.0.sessions.load().remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.0
            .sessions
            .load()
            .insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.sessions.load().take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests;
