//! Binding the data-plane and admin sockets, and making sure the data
//! plane's address belongs to this process alone.
//!
//! It must never let a second process share `listen.addr`: `SO_REUSEPORT`
//! is for this process' own workers. Everything here runs once, at
//! startup; nothing touches the accept path.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `count` listening sockets on one address with `SO_REUSEPORT`, so
/// each data-plane worker accepts on its own queue and the kernel spreads
/// connections between them (nginx's `reuseport`). With port 0 the first
/// socket picks the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = reuseport_listener(addr)?;
    let actual = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(reuseport_listener(actual)?);
    }
    Ok(listeners)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    socket.set_reuse_address(true).map_err(named)?;
    socket.set_reuse_port(true).map_err(named)?;
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&addr.into()).map_err(named)?;
    socket.listen(LISTEN_BACKLOG).map_err(named)?;
    Ok(socket.into())
}

/// This process' hold on a data-plane address, kept while it serves.
///
/// `SO_REUSEPORT` lets our workers share the port, but it would also let a
/// second process with the same `listen.addr` join them, and the kernel
/// would split clients between the two. [`claim`] refuses that at startup,
/// in two ways:
/// * a lock named after the address: an abstract Unix socket, which lives
///   in the same network namespace as the port, is atomic to take, and is
///   released by the kernel however the process ends (even `kill -9`); it
///   closes the race between two proxies starting at once;
/// * a probe bind without `SO_REUSEPORT`, which fails while anything else
///   listens on the port or overlaps it (`0.0.0.0` versus `127.0.0.1`).
///
/// Neither touches the accept path: both happen once, before binding.
#[derive(Debug)]
pub struct PortClaim {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    _lock: Option<std::os::unix::net::UnixListener>,
}

/// Claims `addr` for this process, before binding it; see [`PortClaim`].
/// Port 0 needs no probe (the kernel picks a free port); its lock is taken
/// by [`PortClaim::bound`] once the port is known.
pub fn claim(addr: SocketAddr) -> std::io::Result<PortClaim> {
    if addr.port() == 0 {
        return Ok(PortClaim {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            _lock: None,
        });
    }
    let claim = PortClaim {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        _lock: Some(lock(addr)?),
    };
    probe(addr)?;
    Ok(claim)
}

impl PortClaim {
    /// After binding: takes the lock for the address actually bound when
    /// the config asked for port 0, so a later process given that port
    /// explicitly is told that an understudy holds it.
    pub fn bound(self, actual: SocketAddr) -> std::io::Result<PortClaim> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self._lock.is_none() {
            return Ok(PortClaim {
                _lock: Some(lock(actual)?),
            });
        }
        let _ = actual;
        Ok(self)
    }
}

/// The lock: an abstract Unix socket named after the address.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn lock(addr: SocketAddr) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("understudy-listen-{addr}");
    let lock_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    std::os::unix::net::UnixListener::bind_addr(&lock_addr).map_err(|e| {
        if e.kind() != std::io::ErrorKind::AddrInUse {
            return e;
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {addr}: another understudy process already serves this \
                 listen.addr (two would split its clients between them); stop it or choose \
                 another address"
            ),
        )
    })
}

/// Binds (and at once closes) a socket without `SO_REUSEPORT` on `addr`:
/// it fails while any other socket listens there.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Connections of an earlier run in TIME_WAIT must not count as in use.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot listen on {addr}: another process already listens on this address \
                 (with SO_REUSEPORT the kernel would split clients between it and us): {e}"
            )
        } else {
            format!("cannot listen on {addr}: {e}")
        };
        std::io::Error::new(e.kind(), message)
    })
}

/// Pending connections per worker socket, as nginx's default `backlog` on
/// Linux (511) rounded up.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port that was free a moment ago.
    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn a_claimed_address_cannot_be_claimed_twice_until_released() {
        let addr = free_addr();
        let first = claim(addr).unwrap();
        let error = claim(addr).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            error.to_string().contains("another understudy process"),
            "{error}"
        );
        drop(first);
        claim(addr).unwrap();
    }

    #[test]
    fn an_address_another_process_listens_on_is_refused() {
        // Listens with SO_REUSEPORT, as a second understudy would join it.
        let taken = bind_shared(free_addr(), 1).unwrap();
        let addr = taken[0].local_addr().unwrap();
        let error = claim(addr).unwrap_err();
        assert!(error.to_string().contains("already listens"), "{error}");
        // Port 0 is always free to claim.
        claim("127.0.0.1:0".parse().unwrap()).unwrap();
    }
}
