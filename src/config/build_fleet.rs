//! Checks of `[fleet]`: etcd endpoints, the rollout's key prefix, this
//! replica's name, the lease and TLS to etcd.

use std::path::PathBuf;
use std::time::Duration;

use super::build::Checker;
use super::raw::{RawFleet, RawFleetTls};
use super::*;

/// Shorter leases expire on an ordinary hiccup (etcd's own leader election
/// stalls writes for up to ~3 s); longer ones make failover slow.
const LEASE_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

impl Checker<'_> {
    pub(super) fn fleet(
        &mut self,
        raw: RawFleet,
        listen_port: u16,
        has_rollout: bool,
    ) -> Option<Fleet> {
        if !cfg!(feature = "fleet") {
            self.problem(
                "fleet",
                "this build has no fleet mode: build with `cargo build --release --features fleet` \
                 (needs protoc), or use the release binary or Docker image, which include it",
            );
        }
        if !has_rollout {
            self.problem(
                "fleet",
                "a fleet runs one rollout together: add a [rollout] section",
            );
        }
        let endpoints = self.fleet_endpoints(raw.endpoints);
        let prefix = match raw.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
            None => {
                self.problem(
                    "fleet.prefix",
                    "is required: the etcd key prefix of this rollout, e.g. \"/understudy/iris\"",
                );
                String::new()
            }
            Some(p) if !p.starts_with('/') || p.len() < 2 => {
                self.problem(
                    "fleet.prefix",
                    format!("expected a key prefix starting with '/', like \"/understudy/iris\", got {p:?}"),
                );
                String::new()
            }
            Some(p) => p.to_owned(),
        };
        let replica_id = match raw.replica_id {
            None => default_replica_id(listen_port),
            Some(id)
                if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) =>
            {
                self.problem(
                    "fleet.replica_id",
                    format!("expected a non-empty name without '/' or spaces, got {id:?}"),
                );
                String::new()
            }
            Some(id) => id,
        };
        let lease_ttl = self.duration("fleet.lease_ttl", raw.lease_ttl, DEFAULT_LEASE_TTL);
        let (min, max) = LEASE_TTL_RANGE;
        if lease_ttl < min || lease_ttl > max || lease_ttl.subsec_nanos() != 0 {
            self.problem(
                "fleet.lease_ttl",
                format!(
                    "expected whole seconds between {}s and {}s, got {:?}",
                    min.as_secs(),
                    max.as_secs(),
                    lease_ttl
                ),
            );
        }
        let https = endpoints.first().is_some_and(|e| e.starts_with("https://"));
        let tls = match (raw.tls, https) {
            (Some(tls), true) => self.fleet_tls(tls),
            (None, true) => {
                self.problem(
                    "fleet.tls.ca",
                    "is required with https:// endpoints: the CA file etcd's certificates chain to",
                );
                None
            }
            (Some(_), false) => {
                self.problem(
                    "fleet.tls",
                    "applies to https:// endpoints only; the endpoints are http://",
                );
                None
            }
            (None, false) => None,
        };
        Some(Fleet {
            endpoints,
            prefix,
            replica_id,
            lease_ttl,
            tls,
        })
    }

    fn fleet_endpoints(&mut self, raw: Option<Vec<String>>) -> Vec<String> {
        let Some(list) = raw.filter(|l| !l.is_empty()) else {
            self.problem(
                "fleet.endpoints",
                "is required: etcd client URLs, e.g. [\"http://etcd-1:2379\", \"http://etcd-2:2379\"]",
            );
            return Vec::new();
        };
        let mut schemes = Vec::new();
        for (i, endpoint) in list.iter().enumerate() {
            let key = format!("fleet.endpoints[{i}]");
            match endpoint.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.port_u16().is_some()
                        && uri.path() == "/" =>
                {
                    schemes.push(uri.scheme_str().unwrap_or_default().to_owned());
                }
                _ => self.problem(
                    &key,
                    format!(
                        "expected an etcd client URL like \"http://HOST:2379\", got {endpoint:?}"
                    ),
                ),
            }
        }
        schemes.dedup();
        if schemes.len() > 1 {
            self.problem(
                "fleet.endpoints",
                "mixes http:// and https://: use one scheme for all members",
            );
        }
        list
    }

    fn fleet_tls(&mut self, raw: RawFleetTls) -> Option<FleetTls> {
        let ca = match raw.ca {
            Some(ca) => PathBuf::from(ca),
            None => {
                self.problem(
                    "fleet.tls.ca",
                    "is required: the CA file etcd's certificates chain to",
                );
                return None;
            }
        };
        if let Err(e) = std::fs::read(&ca) {
            self.problem("fleet.tls.ca", format!("cannot read {}: {e}", ca.display()));
        }
        let client_cert = match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "fleet.tls.key",
                    "is required with cert (client certificate for etcd)",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "fleet.tls.cert",
                    "is required with key (client certificate for etcd)",
                );
                None
            }
        };
        for (field, path) in client_cert
            .iter()
            .flat_map(|(c, k)| [("cert", c), ("key", k)])
        {
            if let Err(e) = std::fs::read(path) {
                self.problem(
                    &format!("fleet.tls.{field}"),
                    format!("cannot read {}: {e}", path.display()),
                );
            }
        }
        Some(FleetTls {
            ca,
            client_cert,
            domain: raw.domain,
        })
    }
}

/// `HOSTNAME:PORT`: unique per pod (the hostname) and per process on one
/// host (the port), and readable in `/status`.
fn default_replica_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}
