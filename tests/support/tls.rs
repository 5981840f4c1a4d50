//! TLS for the world outside the proxy: certificates made at test time
//! (rcgen), client configs for talking to the proxy over HTTPS, and
//! [`TlsUpstream`], a model server behind TLS (HTTP/1.1 and h2 via ALPN,
//! optionally requiring client certificates) that records what it saw.
//!
//! ```ignore
//! let dir = harness::TempDir::new("tls");
//! let pki = Pki::generate(&dir.0);
//! let up = TlsUpstream::start(&pki.server_config(&pki.server, None), r#"{"ok":1}"#).await;
//! // backends.stable.url = format!("https://localhost:{}", up.addr().port())
//! // backends.stable.ca = pki.ca_pem
//! ```
//!
//! Like the rest of `support`, it never binds anything but `127.0.0.1` and
//! never uses the proxy's code.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::upstream::Received;

/// Installs ring as rustls' process-wide provider (idempotent), so the
/// plain `ServerConfig::builder()` / `ClientConfig::builder()` work.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed) + (rand::random::<u32>() as u64) * 1_000_000;
    SerialNumber::from_slice(&n.to_be_bytes())
}

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    pub pem: String,
}

/// An issued certificate and its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Ca {
    /// A self-signed CA whose subject is `name` (distinct names matter:
    /// with equal names a verifier would try the wrong CA's key).
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(next_serial());
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid subject alt names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(next_serial());
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self, common_name: &str) -> Leaf {
        self.server_cert_for(common_name, &["localhost", "127.0.0.1"])
    }

    /// A server certificate for the given DNS names / IP addresses only.
    pub fn server_cert_for(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.issue(common_name, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual TLS).
    pub fn client_cert(&self, common_name: &str) -> Leaf {
        self.issue(common_name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("add CA to root store");
        roots
    }

    /// Writes the CA certificate as PEM to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write CA PEM");
        path.to_owned()
    }
}

impl Leaf {
    /// A self-signed certificate for the given DNS names / IP addresses,
    /// marked `CA:TRUE` as `openssl req -x509` marks one: its own CA.
    pub fn self_signed_ca(common_name: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid subject alt names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.serial_number = Some(next_serial());
        let key = KeyPair::generate().expect("generate key");
        let cert = params.self_signed(&key).expect("self-sign");
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate PEM");
        std::fs::write(&key, &self.key_pem).expect("write key PEM");
        (cert, key)
    }
}

/// Everything a TLS test needs, written as PEM files into one directory:
/// a private CA, a server certificate (localhost, 127.0.0.1) and a client
/// certificate signed by it, and a second, unrelated CA with its own server
/// and client certificates.
pub struct Pki {
    pub ca: Ca,
    pub other_ca: Ca,
    pub server: Leaf,
    pub client: Leaf,
    pub other_server: Leaf,
    pub other_client: Leaf,
    pub ca_pem: PathBuf,
    pub other_ca_pem: PathBuf,
    pub server_pem: PathBuf,
    pub server_key: PathBuf,
    pub client_pem: PathBuf,
    pub client_key: PathBuf,
    pub other_server_pem: PathBuf,
    pub other_server_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        install_provider();
        let ca = Ca::new("understudy test CA");
        let other_ca = Ca::new("unrelated test CA");
        let server = ca.server_cert("understudy test server");
        let client = ca.client_cert("understudy test client");
        let other_server = other_ca.server_cert("server of the unrelated CA");
        let other_client = other_ca.client_cert("client of the unrelated CA");
        let ca_pem = ca.write(&dir.join("ca.pem"));
        let other_ca_pem = other_ca.write(&dir.join("other-ca.pem"));
        let (server_pem, server_key) = server.write(dir, "server");
        let (client_pem, client_key) = client.write(dir, "client");
        let (other_server_pem, other_server_key) = other_server.write(dir, "other-server");
        Pki {
            ca,
            other_ca,
            server,
            client,
            other_server,
            other_client,
            ca_pem,
            other_ca_pem,
            server_pem,
            server_key,
            client_pem,
            client_key,
            other_server_pem,
            other_server_key,
        }
    }
}

/// A server config offering h2 and http/1.1, presenting `leaf`, and
/// requiring a client certificate signed by `client_ca` when given.
pub fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    install_provider();
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(ca.roots()))
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(vec![leaf.cert.clone()], leaf.key())
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client config trusting only `ca`, offering `alpn` (e.g. `[b"h2"]`),
/// presenting `client` when given.
pub fn client_config(ca: &Ca, client: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    install_provider();
    let builder = ClientConfig::builder().with_root_certificates(ca.roots());
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.clone()], leaf.key())
            .expect("client auth config"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Client type returned by [`https_client`].
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTPS client over `config`; its ALPN list decides the HTTP
/// version (h2 when the server selects it, else HTTP/1.1). Built with
/// `From<(HttpConnector, config)>`, because hyper-rustls' builder refuses a
/// config whose ALPN list is already set.
pub fn https_client(config: &Arc<ClientConfig>) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = HttpsConnector::from((http, config.clone()));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// What a [`TlsUpstream`] saw of one request, and of the connection that
/// carried it.
#[derive(Clone, Debug)]
pub struct TlsReceived {
    pub request: Received,
    /// SNI the client sent.
    pub sni: Option<String>,
    /// The ALPN protocol negotiated (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

struct TlsShared {
    /// The config new connections are accepted with.
    config: Mutex<Arc<ServerConfig>>,
    /// Bumped by [`TlsUpstream::rotate`]: open connections are closed.
    rotations: watch::Sender<u64>,
    received: Mutex<Vec<TlsReceived>>,
    count: watch::Sender<usize>,
    handshake_failures: AtomicU64,
}

/// An HTTPS model server on `127.0.0.1` answering every request with a
/// fixed JSON body. Dropping it stops it.
pub struct TlsUpstream {
    addr: SocketAddr,
    shared: Arc<TlsShared>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(config: &Arc<ServerConfig>, body: &'static str) -> TlsUpstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind TLS upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(TlsShared {
            config: Mutex::new(config.clone()),
            rotations: watch::channel(0).0,
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            handshake_failures: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone(), body));
        TlsUpstream { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT`: the name its certificate is for.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Accepts new connections with `config` from now on and closes the
    /// open ones, as a backend restarted with new certificates would.
    pub fn rotate(&self, config: &Arc<ServerConfig>) {
        *self.shared.config.lock().unwrap() = config.clone();
        self.shared.rotations.send_modify(|n| *n += 1);
    }

    pub fn received(&self) -> Vec<TlsReceived> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn handshake_failures(&self) -> u64 {
        self.shared.handshake_failures.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests were recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut count = self.shared.count.subscribe();
        tokio::time::timeout(timeout, count.wait_for(|&c| c >= n))
            .await
            .is_ok()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, ending every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<TlsShared>, body: &'static str) {
    let mut connections = JoinSet::new();
    let mut rotations = shared.rotations.subscribe();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Ok(()) = rotations.changed() => connections.abort_all(),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = TlsAcceptor::from(shared.config.lock().unwrap().clone());
                let shared = shared.clone();
                connections.spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => stream,
                        Err(_) => {
                            shared.handshake_failures.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let (_, conn) = stream.get_ref();
                    let sni = conn.server_name().map(str::to_owned);
                    let alpn = conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = service_fn(move |request: Request<Incoming>| {
                        let shared = shared.clone();
                        let (sni, alpn) = (sni.clone(), alpn.clone());
                        async move {
                            let (parts, mut incoming) = request.into_parts();
                            let mut buf = BytesMut::new();
                            while let Some(Ok(frame)) = incoming.frame().await {
                                if let Some(data) = frame.data_ref() {
                                    buf.extend_from_slice(data);
                                }
                            }
                            let request = Received {
                                method: parts.method,
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_owned(),
                                version: parts.version,
                                headers: parts.headers,
                                body: buf.freeze(),
                            };
                            {
                                let mut received = shared.received.lock().unwrap();
                                received.push(TlsReceived {
                                    request,
                                    sni,
                                    alpn,
                                    client_cert,
                                });
                                shared.count.send_replace(received.len());
                            }
                            let response = Response::builder()
                                .header("content-type", "application/json")
                                .header("x-upstream", "tls")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}
