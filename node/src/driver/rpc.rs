//! RPC between nodes over TCP on the cluster port (ARCHITECTURE §8). PLACEHOLDER: being
//! written; every call is unreachable until then.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::core::replication::{Reply, Request, RpcError};

/// Limits of the RPC layer.
#[derive(Clone, Copy, Debug)]
pub struct RpcLimits {
    /// No answer in this time: the call is a [`RpcError::Timeout`].
    pub request_timeout: Duration,
    /// Calls in flight to one peer at most (one connection each).
    pub in_flight_per_peer_max: usize,
}

/// The client side: pooled connections to peers.
#[derive(Clone)]
pub struct RpcClient {
    #[allow(dead_code)]
    limits: RpcLimits,
    #[allow(dead_code)]
    metrics: Arc<Metrics>,
}

impl RpcClient {
    /// A client with no connections yet.
    pub fn new(limits: RpcLimits, metrics: Arc<Metrics>) -> RpcClient {
        RpcClient { limits, metrics }
    }

    /// Sends `request` to the node listening at `peer` and waits for its reply.
    pub async fn call(&self, peer: SocketAddr, request: Request) -> Result<Reply, RpcError> {
        let _ = request;
        Err(RpcError::Unreachable(format!("{peer}: RPC not implemented yet")))
    }
}

/// Serves replica requests on `listener` until `shutdown` turns true.
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: Arc<S>,
    limits: RpcLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = (listener, store, limits, metrics);
    let _ = shutdown.wait_for(|stop| *stop).await;
}
