//! Upgraded connections (WebSocket and the like): once the backend answered `101 Switching
//! Protocols`, bytes are copied both ways between the client and the backend until either side
//! closes.

use crate::addr::BackendAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::upstreams::Slot;

/// Joins the client's and the backend's upgraded connections once both sides switched. The
/// backend slot stays taken while the tunnel lives: the backend keeps a worker on it.
pub(crate) fn spawn(client: OnUpgrade, backend: OnUpgrade, slot: Slot, addr: BackendAddr) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, backend) = tokio::join!(client, backend);
        let (client, backend) = match (client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) => {
                tracing::debug!(backend = %addr, error = %e, "client upgrade failed");
                return;
            }
            (_, Err(e)) => {
                tracing::debug!(backend = %addr, error = %e, "backend upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => {
                tracing::debug!(backend = %addr, up, down, "tunnel closed");
            }
            Err(e) => {
                tracing::debug!(backend = %addr, error = %e, "tunnel broke off");
            }
        }
    });
}
