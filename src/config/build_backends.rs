//! Checks of `[backends.*]` and `[listen.tls]`: URLs, timeouts, and the
//! certificate files (read now, so `understudy check` names a bad one).

use std::path::PathBuf;

use http::Uri;

use super::build::Checker;
use super::raw::RawBackend;
use super::*;

impl Checker<'_> {
    pub(super) fn backend(&mut self, name: &'static str, raw: RawBackend) -> Option<Backend> {
        let key = |field: &str| format!("backends.{name}.{field}");
        let url = match raw.url {
            None => {
                self.problem(&key("url"), "is required, e.g. \"http://127.0.0.1:8001\"");
                None
            }
            Some(text) => self.backend_url(&key("url"), &text),
        };
        // Check every field before giving up on a bad URL, so one run
        // reports all problems.
        let timeout = self.duration(&key("timeout"), raw.timeout, DEFAULT_BACKEND_TIMEOUT);
        let connect_timeout = self.duration(
            &key("connect_timeout"),
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        );
        let pool_max_idle = self.count(&key("pool_max_idle"), raw.pool_max_idle, 256, 0);
        let max_connections = self.count(
            &key("max_connections"),
            raw.max_connections,
            DEFAULT_BACKEND_MAX_CONNECTIONS,
            1,
        );
        let ca = raw.ca.map(PathBuf::from);
        let client_cert = match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    &key("key"),
                    "is required with cert (client certificate for upstream mutual TLS)",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    &key("cert"),
                    "is required with key (client certificate for upstream mutual TLS)",
                );
                None
            }
        };
        let url = url?;
        let https = url.scheme_str() == Some("https");
        if !https && (ca.is_some() || client_cert.is_some()) {
            let field = if ca.is_some() { "ca" } else { "cert" };
            self.problem(
                &key(field),
                "applies to https:// backends only; the url is http://",
            );
        }
        if https {
            // Read the files now so `understudy check` names the bad one.
            if let Some(ca) = &ca
                && let Err(e) = crate::tls::load_roots(ca)
            {
                self.problem(&key("ca"), e.to_string());
            }
            if let Some((cert, private_key)) = &client_cert {
                if let Err(e) = crate::tls::load_certs(cert) {
                    self.problem(&key("cert"), e.to_string());
                }
                if let Err(e) = crate::tls::load_key(private_key) {
                    self.problem(&key("key"), e.to_string());
                }
            }
        }
        Some(Backend {
            name,
            url,
            timeout,
            connect_timeout,
            http2: raw.http2.unwrap_or(false),
            pool_max_idle,
            max_connections,
            ca,
            client_cert,
        })
    }

    pub(super) fn backend_url(&mut self, key: &str, text: &str) -> Option<Uri> {
        let uri: Uri = match text.parse() {
            Ok(uri) => uri,
            Err(e) => {
                self.problem(
                    key,
                    format!("expected a URL like \"http://HOST:PORT\", got {text:?} ({e})"),
                );
                return None;
            }
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            self.problem(
                key,
                format!("expected an http:// or https:// URL, got {text:?}"),
            );
            return None;
        }
        if uri.authority().is_none() {
            self.problem(key, format!("expected a host and port, got {text:?}"));
            return None;
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            self.problem(
                key,
                format!("expected scheme://HOST:PORT without a path (the client's path is kept), got {text:?}"),
            );
            return None;
        }
        Some(uri)
    }

    pub(super) fn listen_tls(&mut self, raw: super::raw::RawListenTls) -> Option<ListenTls> {
        let handshake_timeout = self.duration(
            "listen.tls.handshake_timeout",
            raw.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
        );
        let (Some(cert), Some(key)) = (raw.cert, raw.key) else {
            self.problem("listen.tls", "needs both cert and key (PEM files)");
            return None;
        };
        let tls = ListenTls {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            client_ca: raw.client_ca.map(PathBuf::from),
            handshake_timeout,
        };
        // Load now so `understudy check` reports unreadable or mismatched files.
        if let Err(e) = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref()) {
            let field = match &e {
                crate::tls::TlsError::Read {
                    what: "a private key",
                    ..
                } => "listen.tls.key",
                crate::tls::TlsError::ClientCa { .. } => "listen.tls.client_ca",
                _ => "listen.tls.cert",
            };
            self.problem(field, e.to_string());
            return None;
        }
        Some(tls)
    }
}
