//! The API relay: pods reach the API through their own node. The `kubernetes`
//! Service (`KUBERNETES_SERVICE_HOST`, `kubernetes.default.svc`) is sent by
//! the node's proxy to this listener on the pod bridge address, and each
//! connection is spliced, still encrypted, to an API server the agent can
//! reach (the one that answered last, else the next).
//!
//! **TLS passes through untouched: the pod verifies the server's certificate
//! against the cluster CA and authenticates with its own token; the relay
//! sees neither.** API servers may listen on loopback or sit behind NAT; only
//! the agent needs to reach them.

use tokio::net::TcpListener;

use super::apiservers::Servers;

/// Where the relay listens on the bridge address unless told otherwise.
pub const DEFAULT_PORT: u16 = 6444;

/// Accept pod connections until the listener fails.
pub async fn serve(listener: TcpListener, servers: Servers) -> std::io::Result<()> {
    loop {
        let (mut inbound, peer) = listener.accept().await?;
        let servers = servers.clone();
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match servers.connect().await {
                Ok(mut outbound) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        tracing::debug!(%peer, error = %e, "api relay connection ended");
                    }
                }
                Err(e) => tracing::warn!(%peer, error = %e, "api relay: no api server answers"),
            }
        });
    }
}
