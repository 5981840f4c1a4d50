//! The etcd calls fleet mode makes, each bounded by its own timeout, and
//! the [`Store`] seam through which leadership and operator commands write.
//!
//! The client retries nothing and a global client timeout would also cut
//! the watch and keep-alive streams, so every unary
//! call gets a per-call deadline here and every failure reaches the caller,
//! which re-synchronizes the session with backoff.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};

use crate::config::Fleet;

/// A unary call that takes longer is treated as a failed one. etcd's own
/// leader election stalls writes for up to ~3 s; longer than that, the
/// member we talk to is probably gone.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer {0} within {CALL_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("cannot read the fleet TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one etcd call with [`CALL_TIMEOUT`].
pub async fn call<T>(
    what: &'static str,
    future: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(what)),
    }
}

/// A client for one etcd member (`endpoint`, one of the fleet's). Connecting
/// is lazy: an unreachable member shows up as failing calls, not here.
pub async fn connect(fleet: &Fleet, endpoint: &str) -> Result<Client, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // HTTP/2 pings find a dead member's connection within seconds.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum refuses instead of serving stale data.
        .with_require_leader(true);
    if let Some(tls) = &fleet.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| StoreError::TlsFile {
                path: path.display().to_string(),
                source,
            })
        };
        let mut config =
            TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.client_cert {
            config = config.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        options = options.with_tls(config);
    }
    call("connect", Client::connect([endpoint], Some(options))).await
}

/// One key as etcd holds it: what the fleet reads from a full read, a
/// watch event or a refused write.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key: a leader key's is its term.
    pub create_revision: i64,
    /// The revision of the key's last write.
    pub mod_revision: i64,
}

impl From<&KeyValue> for Entry {
    fn from(kv: &KeyValue) -> Self {
        Self {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }
}

/// What a guarded write requires of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The key's create revision is this (0: the key is absent).
    CreatedAt(String, i64),
    /// The key's last modification is this (0: never written).
    ModifiedAt(String, i64),
}

impl From<Condition> for Compare {
    fn from(condition: Condition) -> Self {
        match condition {
            Condition::CreatedAt(key, revision) => {
                Compare::create_revision(key, CompareOp::Equal, revision)
            }
            Condition::ModifiedAt(key, revision) => {
                Compare::mod_revision(key, CompareOp::Equal, revision)
            }
        }
    }
}

/// Holds while `key`'s create revision is `revision` (0: the key is absent).
pub fn created_at(key: &str, revision: i64) -> Condition {
    Condition::CreatedAt(key.to_owned(), revision)
}

/// Holds while `key`'s last modification is `revision` (0: never written).
pub fn modified_at(key: &str, revision: i64) -> Condition {
    Condition::ModifiedAt(key.to_owned(), revision)
}

/// Result of a write that is only valid under a condition.
#[derive(Debug)]
pub enum Guarded {
    /// The condition held and the write happened at this revision.
    Written(i64),
    /// The condition failed; the key's current value, if any, for a
    /// second look (who leads now, what the state is now).
    Refused(Option<Entry>),
}

/// The one write that leadership and operator commands make: a put that
/// happens only if every condition holds. etcd does it as one Txn; the
/// unit tests use an in-memory stand-in.
pub trait Store {
    /// Puts `key = value` (attached to `lease`, if any) if every condition
    /// in `when` holds; otherwise reads `reread`.
    async fn put_if(
        &mut self,
        what: &'static str,
        when: Vec<Condition>,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
        reread: &str,
    ) -> Result<Guarded, StoreError>;
}

impl Store for Client {
    async fn put_if(
        &mut self,
        what: &'static str,
        when: Vec<Condition>,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
        reread: &str,
    ) -> Result<Guarded, StoreError> {
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let txn = Txn::new()
            .when(when.into_iter().map(Compare::from).collect::<Vec<_>>())
            .and_then([TxnOp::put(key, value, options)])
            .or_else([TxnOp::get(reread, None)]);
        let response = call(what, self.txn(txn)).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();
        if response.succeeded() {
            return Ok(Guarded::Written(revision));
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(Entry::from),
            _ => None,
        });
        Ok(Guarded::Refused(current))
    }
}

/// Everything under `prefix`, and the revision it was read at.
pub async fn get_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(Vec<Entry>, i64), StoreError> {
    let response = call(
        "a read of the fleet keys",
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = response.header().map(|h| h.revision()).unwrap_or_default();
    Ok((response.kvs().iter().map(Entry::from).collect(), revision))
}
