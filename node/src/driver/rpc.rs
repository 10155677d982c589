//! RPC between nodes over TCP on the cluster port (docs/ARCHITECTURE.md §8).
//!
//! One connection carries one call at a time: the client writes a [`Request`] message, the
//! server answers with one [`Reply`] message, both framed by [`crate::wire`]. Clients keep
//! idle connections per peer for the next call; servers serve each connection in its own
//! task and hand each request to a [`Replica`]: the node core, which serves it from the
//! store through a store job the driver runs on the blocking pool.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metrics::{DropLabels, Metrics};
use crate::core::replication::{Refusal, Reply, Request, RpcError};
use crate::wire::{self, MessageDecoder, WireError};

/// Longest wait for a TCP connection to a peer. A host that is down drops SYNs silently, and
/// "cannot connect" is a better answer than a timeout: the request was certainly not applied.
/// Two seconds leave room for one SYN retransmission (after 1 s on Linux).
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// How long a client keeps an unused connection. Servers close connections idle for twice
/// this long, so a client seldom picks a connection its server is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Inbound connections served at once at most. A client opens at most
/// `in_flight_per_peer_max` connections to one node, so this serves a few dozen peers at
/// full concurrency and bounds the memory hostile peers can hold
/// (about `2 × MESSAGE_BYTES_MAX` per connection while a large message is decoded).
pub const CONNECTIONS_MAX: usize = 1024;

/// Bytes the reader makes room for when it knows nothing about what comes next.
const READ_BYTES_MIN: usize = 16 * 1024;

/// Limits of the RPC layer.
#[derive(Clone, Copy, Debug)]
pub struct RpcLimits {
    /// No answer in this time: the call is a [`RpcError::Timeout`] (or
    /// [`RpcError::Unreachable`] if nothing was sent yet). A server gives a peer as long to
    /// send one request, and to take one reply.
    pub request_timeout: Duration,
    /// Calls in flight to one peer at most (one connection each).
    pub in_flight_per_peer_max: usize,
    /// No connection in this time: the call is [`RpcError::Unreachable`].
    pub connect_timeout: Duration,
    /// A client closes a pooled connection unused this long; a server closes a connection
    /// that sends nothing for twice this long.
    pub idle_timeout: Duration,
    /// Inbound connections served at once at most; more are closed as soon as accepted.
    pub connections_max: usize,
}

/// The client side: pooled connections to peers. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct RpcClient {
    shared: Arc<ClientShared>,
}

struct ClientShared {
    limits: RpcLimits,
    metrics: Arc<Metrics>,
    peers: Mutex<Peers>,
}

/// Every peer called lately. Entries without idle connections or calls are removed by the
/// periodic sweep, so departed peers do not accumulate.
struct Peers {
    by_addr: HashMap<SocketAddr, Arc<Peer>>,
    swept_at: Instant,
}

/// One peer's share of the client.
struct Peer {
    /// One permit per call in flight to this peer.
    in_flight: Semaphore,
    /// Connections between calls, the most recently used last.
    idle: Mutex<Vec<IdleConnection>>,
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

impl Peer {
    /// A pooled connection that still looks alive, if any. Stale and dead ones are dropped.
    fn take_idle(&self, now: Instant, idle_timeout: Duration) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        while let Some(IdleConnection { connection, since }) = idle.pop() {
            if now.duration_since(since) < idle_timeout && connection.looks_alive() {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Connection, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        idle.push(IdleConnection { connection, since: now });
    }

    /// Drops connections idle for `idle_timeout`; whether the peer is left with none.
    fn expire(&self, now: Instant, idle_timeout: Duration) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        idle.retain(|entry| now.duration_since(entry.since) < idle_timeout);
        idle.is_empty()
    }
}

impl RpcClient {
    /// A client with no connections yet.
    pub fn new(limits: RpcLimits, metrics: Arc<Metrics>) -> RpcClient {
        let peers = Peers { by_addr: HashMap::new(), swept_at: Instant::now() };
        RpcClient { shared: Arc::new(ClientShared { limits, metrics, peers: Mutex::new(peers) }) }
    }

    /// Sends `request` to the node listening at `peer` and waits for its reply, for at most
    /// `request_timeout` in all (queueing for a connection included).
    ///
    /// Errors: [`RpcError::Unreachable`] when nothing was sent (no connection, no free slot
    /// to the peer in time, a request too large to send); [`RpcError::Timeout`] when the
    /// request was being sent or had been sent and no reply came in time;
    /// [`RpcError::Lost`] when the connection broke or the reply was malformed after the
    /// request was (maybe) sent.
    pub async fn call(&self, peer: SocketAddr, request: Request) -> Result<Reply, RpcError> {
        let message = wire::encode_message(&request)
            .map_err(|err| RpcError::Unreachable(format!("{peer}: request not sent: {err}")))?;
        // The encoding is all that is sent: don't hold a large block twice.
        drop(request);
        let limits = self.shared.limits;
        let deadline = Instant::now() + limits.request_timeout;
        let pool = self.peer(peer);
        let mut sent = false;
        let result = tokio::time::timeout_at(deadline, self.exchange(peer, &pool, &message, &mut sent)).await;
        // A timed-out exchange was dropped with its connection: it never returns to the pool.
        match result {
            Ok(result) => result,
            Err(_) if sent => Err(RpcError::Timeout),
            Err(_) => Err(RpcError::Unreachable(format!(
                "{peer}: request not sent within {:?} ({} calls in flight at most)",
                limits.request_timeout, limits.in_flight_per_peer_max
            ))),
        }
    }

    /// One call on one connection. Sets `sent` before the first byte of the request goes
    /// out; from then on a failure may leave the request applied.
    async fn exchange(
        &self,
        peer: SocketAddr,
        pool: &Peer,
        message: &[u8],
        sent: &mut bool,
    ) -> Result<Reply, RpcError> {
        let limits = self.shared.limits;
        let _permit =
            pool.in_flight.acquire().await.map_err(|_| RpcError::Unreachable(format!("{peer}: client closed")))?;
        let mut connection = match pool.take_idle(Instant::now(), limits.idle_timeout) {
            Some(connection) => connection,
            None => connect(peer, limits.connect_timeout).await?,
        };
        *sent = true;
        let lost = |what: &str, err: &dyn std::fmt::Display| RpcError::Lost(format!("{peer}: {what}: {err}"));
        connection.write_message(message).await.map_err(|err| lost("sending", &err))?;
        let reply = match connection.read_message().await {
            Ok(reply) => reply,
            Err(ReadError::Wire(err)) => {
                self.reject(peer, &err);
                return Err(lost("reply", &err));
            }
            Err(err) => return Err(lost("reply", &err)),
        };
        let reply = wire::decode_message::<Reply>(&reply).map_err(|err| {
            self.reject(peer, &err);
            lost("reply", &err)
        })?;
        pool.put_idle(connection, Instant::now());
        Ok(reply)
    }

    /// The pool of `peer`, created on first use. Sweeps idle connections out of every pool
    /// once per `idle_timeout`, so no connection outlives it by more than that.
    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        let limits = self.shared.limits;
        let now = Instant::now();
        let mut peers = self.shared.peers.lock().unwrap_or_else(|poison| poison.into_inner());
        if now.duration_since(peers.swept_at) >= limits.idle_timeout {
            peers.swept_at = now;
            // Under the map's lock no call can pick up an entry that has no other holder.
            peers.by_addr.retain(|_, peer| !(peer.expire(now, limits.idle_timeout) && Arc::strong_count(peer) == 1));
        }
        let peer = peers.by_addr.entry(addr).or_insert_with(|| {
            Arc::new(Peer { in_flight: Semaphore::new(limits.in_flight_per_peer_max), idle: Mutex::new(Vec::new()) })
        });
        peer.clone()
    }

    fn reject(&self, peer: SocketAddr, err: &WireError) {
        tracing::warn!(%peer, %err, "closing an RPC connection: bad reply");
        self.shared.metrics.rpc_rejected.get_or_create(&DropLabels { reason: err.reason() }).inc();
    }
}

async fn connect(peer: SocketAddr, connect_timeout: Duration) -> Result<Connection, RpcError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(RpcError::Unreachable(format!("{peer}: {err}"))),
        Err(_) => return Err(RpcError::Unreachable(format!("{peer}: no connection within {connect_timeout:?}"))),
    };
    // Requests and replies are written whole; waiting to coalesce them only adds latency.
    stream.set_nodelay(true).map_err(|err| RpcError::Unreachable(format!("{peer}: {err}")))?;
    Ok(Connection::new(stream))
}

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The peer sent something invalid.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer closed the connection (in the middle of a message or not).
    #[error("connection closed by the peer")]
    Closed,
}

/// A TCP stream with its read buffer and message decoder.
struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    decoder: MessageDecoder,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        Connection { stream, buf: BytesMut::new(), decoder: MessageDecoder::default() }
    }

    /// Writes `message` frame by frame, each header and payload in one vectored write, so a
    /// large block is sent from where it lies, not copied into a buffer first.
    async fn write_message(&mut self, message: &[u8]) -> io::Result<()> {
        for (header, chunk) in wire::frames(message) {
            let header = header.to_bytes();
            self.stream.write_all_buf(&mut Buf::chain(&header[..], chunk)).await?;
        }
        Ok(())
    }

    /// Reads once more from the socket; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        // The decoder reserves the rest of a frame it has seen the header of; otherwise
        // make room for a header and then some, so small messages take one read.
        self.buf.reserve(READ_BYTES_MIN);
        self.stream.read_buf(&mut self.buf).await
    }

    /// The next whole message.
    async fn read_message(&mut self) -> Result<Bytes, ReadError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buf)? {
                return Ok(message);
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Whether this idle connection can carry another call: nothing half-read, and the peer
    /// has neither closed it nor sent anything unasked (checked without waiting). Catches
    /// connections a server closed while they sat in the pool, which would otherwise turn
    /// the next call into a [`RpcError::Lost`].
    fn looks_alive(&self) -> bool {
        if !self.buf.is_empty() || !self.decoder.is_idle() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

/// What serves the requests that arrive: the node's core (which runs them against its
/// store); `None` if it failed to answer (a bug), and the peer's call is lost.
pub trait Replica: Clone + Send + Sync + 'static {
    /// The reply to `request`.
    fn serve(&self, request: Request) -> impl Future<Output = Option<Reply>> + Send;
}

/// Serves replica requests on `listener` until `shutdown` turns true (or its sender is
/// dropped). Then it stops accepting, lets every connection finish the request it is
/// serving, closes the idle ones, and returns once all have ended.
pub async fn serve<R: Replica>(
    listener: TcpListener,
    replica: R,
    limits: RpcLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let mut connections = JoinSet::new();
    let stop_connections = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        metrics.rpc_connections_refused.inc();
                        tracing::warn!(%peer, limit = limits.connections_max, "too many RPC connections; closing a new one");
                        continue;
                    };
                    metrics.rpc_connections_accepted.inc();
                    let served = serve_connection(stream, peer, replica.clone(), limits, metrics.clone(), stop_connections.clone());
                    connections.spawn(async move {
                        served.await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    // Out of file descriptors, most likely: wait for some to be released
                    // rather than spin.
                    tracing::warn!(%err, "cannot accept an RPC connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => log_panic(ended),
        }
    }
    drop(listener);
    while let Some(ended) = connections.join_next().await {
        log_panic(ended);
    }
}

/// Resolves once `shutdown` is true or its sender is gone. Returns nothing, so no watch guard
/// (which is not `Send`) lives on in a `select!`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(err) = ended {
        tracing::error!(%err, "an RPC connection task failed");
    }
}

/// Serves one connection: read a request, serve it on the blocking pool, write the reply,
/// repeat, until the peer closes, sends something invalid, idles too long, or `shutdown`
/// comes while it is idle.
async fn serve_connection<R: Replica>(
    stream: TcpStream,
    peer: SocketAddr,
    replica: R,
    limits: RpcLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
    }
    let mut connection = Connection::new(stream);
    let idle_timeout = limits.idle_timeout.saturating_mul(2);
    loop {
        // Between requests: wait for the next one's first bytes, but not past shutdown.
        if connection.buf.is_empty() {
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => return,
                filled = tokio::time::timeout(idle_timeout, connection.fill()) => match filled {
                    Ok(Ok(0)) => return,
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "RPC connection failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "closing an idle RPC connection");
                        return;
                    }
                },
            }
        }
        // A request has begun: it gets `request_timeout` to arrive whole.
        let message = match tokio::time::timeout(limits.request_timeout, connection.read_message()).await {
            Ok(Ok(message)) => message,
            Ok(Err(ReadError::Wire(err))) => return reject(&metrics, peer, &err),
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "RPC connection ended inside a request");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "a request took too long to arrive; closing its connection");
                return;
            }
        };
        let request = match wire::decode_message::<Request>(&message) {
            Ok(request) => request,
            Err(err) => return reject(&metrics, peer, &err),
        };
        drop(message);
        let Some(reply) = replica.serve(request).await else {
            // A bug in the replica or the store; the peer gets a lost call.
            tracing::error!(%peer, "the replica handler failed");
            return;
        };
        let Some(reply) = encode_reply(peer, &reply) else {
            return;
        };
        match tokio::time::timeout(limits.request_timeout, connection.write_message(&reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "cannot send an RPC reply");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "a peer took too long to take its reply; closing its connection");
                return;
            }
        }
    }
}

/// The reply's message, or a refusal if it is too large to send (a directory listing past
/// the message limit): the peer learns that nothing came of it rather than losing the call.
fn encode_reply(peer: SocketAddr, reply: &Reply) -> Option<Vec<u8>> {
    match wire::encode_message(reply) {
        Ok(message) => Some(message),
        Err(err) => {
            tracing::warn!(%peer, %err, "an RPC reply cannot be sent; refusing instead");
            let refusal = Reply::Refused(Refusal::Other(format!("the reply cannot be sent: {err}")));
            wire::encode_message(&refusal).ok()
        }
    }
}

fn reject(metrics: &Metrics, peer: SocketAddr, err: &WireError) {
    tracing::warn!(%peer, %err, "closing an RPC connection: bad request");
    metrics.rpc_rejected.get_or_create(&DropLabels { reason: err.reason() }).inc();
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::join_all;
    use shoal_storage::{BlockHash, FileRecord, MemStore, NodeId, RecordUpdate, Version};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::core::replication::{BlockRpc, RecordKey, RecordRpc, RecordValue, replica};

    /// The tests' replica: the store itself, as the core would serve it.
    impl Replica for Arc<MemStore> {
        async fn serve(&self, request: Request) -> Option<Reply> {
            let store = self.clone();
            tokio::task::spawn_blocking(move || replica::serve(&*store, request)).await.ok()
        }
    }
    use crate::wire::{FRAME_PAYLOAD_BYTES_MAX, FrameHeader, MESSAGE_BYTES_MAX};

    /// Longest any test may run: a hang fails the test instead of stalling the suite.
    const TEST_TIME_MAX: Duration = Duration::from_secs(5);

    async fn bounded<F: Future>(body: F) -> F::Output {
        tokio::time::timeout(TEST_TIME_MAX, body).await.expect("the test took too long")
    }

    fn limits() -> RpcLimits {
        RpcLimits {
            request_timeout: Duration::from_secs(2),
            in_flight_per_peer_max: 4,
            connect_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(10),
            connections_max: 16,
        }
    }

    fn client(limits: RpcLimits) -> RpcClient {
        RpcClient::new(limits, Arc::new(Metrics::new()))
    }

    fn get(hash: BlockHash) -> Request {
        Request::Block(BlockRpc::Get(hash))
    }

    /// A real server over a [`MemStore`] on a loopback port.
    struct TestServer {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    impl TestServer {
        /// A new client's call is still served (the server survived what came before).
        async fn assert_serves_a_fresh_client(&self) {
            let absent = get(BlockHash::of(b"absent"));
            assert_eq!(client(limits()).call(self.addr, absent).await, Ok(Reply::Block(None)));
        }

        async fn start(limits: RpcLimits) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = Arc::new(Metrics::new());
            let store = Arc::new(MemStore::new(1 << 30));
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(serve(listener, store, limits, metrics.clone(), stopped));
            TestServer { addr, metrics, stop, task }
        }

        fn rejected(&self, reason: &'static str) -> u64 {
            self.metrics.rpc_rejected.get_or_create(&DropLabels { reason }).get()
        }

        async fn accepted(&self, count: u64) {
            while self.metrics.rpc_connections_accepted.get() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            tokio::time::timeout(Duration::from_secs(1), self.task)
                .await
                .expect("serve returns promptly after shutdown")
                .expect("serve does not panic");
        }
    }

    /// Whether the peer closes `stream` within a second (whatever it sent before).
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    fn block(len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(3)).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_block_larger_than_one_frame_is_put_and_read_back() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let client = client(limits());
            let bytes = block(FRAME_PAYLOAD_BYTES_MAX + 12_345);
            let hash = BlockHash::of(&bytes);
            let put = Request::Block(BlockRpc::Put { hash, bytes: bytes.clone() });
            assert_eq!(client.call(server.addr, put).await, Ok(Reply::Durable));
            assert_eq!(client.call(server.addr, get(hash)).await, Ok(Reply::Block(Some(bytes))));
            assert_eq!(client.call(server.addr, get(BlockHash::of(b"absent"))).await, Ok(Reply::Block(None)));
            let wrong = Request::Block(BlockRpc::Put { hash, bytes: block(10) });
            assert_eq!(client.call(server.addr, wrong).await, Ok(Reply::Refused(Refusal::HashMismatch)));
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn merged_records_are_read_back() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let client = client(limits());
            let record = FileRecord { version: Version { hlc: 1_700_000_000_000_000, node: NodeId(7) }, meta: None };
            let merge = Request::Record(RecordRpc::Merge(vec![RecordUpdate::File("/a".into(), record.clone())]));
            assert_eq!(client.call(server.addr, merge).await, Ok(Reply::Durable));
            let read = Request::Record(RecordRpc::Read(RecordKey::File("/a".into())));
            assert_eq!(client.call(server.addr, read).await, Ok(Reply::Value(RecordValue::File(Some(record)))));
            let other = Request::Record(RecordRpc::Read(RecordKey::File("/b".into())));
            assert_eq!(client.call(server.addr, other).await, Ok(Reply::Value(RecordValue::File(None))));
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn a_garbage_frame_closes_the_connection_and_the_server_keeps_serving() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            // Flags that mean nothing.
            let mut raw = TcpStream::connect(server.addr).await.unwrap();
            raw.write_all(&[0, 0, 0, 2, 0x7f, 1, 2]).await.unwrap();
            assert!(closed_by_peer(&mut raw).await);
            // Well-formed frames around a payload that is no request.
            let mut raw = TcpStream::connect(server.addr).await.unwrap();
            let mut frames = BytesMut::new();
            wire::encode_frames(&[0xff; 8], &mut frames);
            raw.write_all(&frames).await.unwrap();
            assert!(closed_by_peer(&mut raw).await);
            assert_eq!(server.rejected("malformed"), 2);
            server.assert_serves_a_fresh_client().await;
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_closes_the_connection_and_the_server_keeps_serving() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let mut raw = TcpStream::connect(server.addr).await.unwrap();
            raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0]).await.unwrap();
            assert!(closed_by_peer(&mut raw).await);
            assert_eq!(server.rejected("oversized"), 1);
            server.assert_serves_a_fresh_client().await;
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn a_message_over_the_limit_closes_the_connection_at_the_frame_that_crosses_it() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let mut raw = TcpStream::connect(server.addr).await.unwrap();
            let mut frame = BytesMut::new();
            frame.extend_from_slice(&FrameHeader { payload_bytes: FRAME_PAYLOAD_BYTES_MAX, last: false }.to_bytes());
            frame.resize(frame.len() + FRAME_PAYLOAD_BYTES_MAX, 0);
            let (mut reader, mut writer) = raw.split();
            let send = async {
                // The server may close before it has read it all: write errors are expected.
                for _ in 0..MESSAGE_BYTES_MAX / FRAME_PAYLOAD_BYTES_MAX + 1 {
                    if writer.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            };
            let closed = async {
                let mut buf = [0u8; 64];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            tokio::join!(send, closed);
            assert_eq!(server.rejected("oversized"), 1);
            server.assert_serves_a_fresh_client().await;
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn a_call_to_a_port_nobody_listens_on_is_unreachable() {
        bounded(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let result = client(limits()).call(addr, get(BlockHash::of(b"x"))).await;
            assert!(matches!(result, Err(RpcError::Unreachable(_))), "{result:?}");
        })
        .await
    }

    #[tokio::test]
    async fn a_server_that_never_answers_gives_a_timeout_within_the_limit() {
        bounded(async {
            // Accepts and holds connections, never reads nor writes.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let holder = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                }
            });
            let limits = RpcLimits { request_timeout: Duration::from_millis(300), ..limits() };
            let started = Instant::now();
            let result = client(limits).call(addr, get(BlockHash::of(b"x"))).await;
            let elapsed = started.elapsed();
            assert_eq!(result, Err(RpcError::Timeout));
            assert!(elapsed >= limits.request_timeout && elapsed < Duration::from_secs(1), "{elapsed:?}");
            holder.abort();
        })
        .await
    }

    #[tokio::test]
    async fn sequential_calls_reuse_one_connection() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let client = client(limits());
            for _ in 0..5 {
                let absent = get(BlockHash::of(b"absent"));
                assert_eq!(client.clone().call(server.addr, absent).await, Ok(Reply::Block(None)));
            }
            assert_eq!(server.metrics.rpc_connections_accepted.get(), 1);
            server.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_not_used_again() {
        bounded(async {
            // The server closes connections idle for 2 × 50 ms; the client would keep them.
            let server = TestServer::start(RpcLimits { idle_timeout: Duration::from_millis(50), ..limits() }).await;
            let client = client(limits());
            let absent = || get(BlockHash::of(b"absent"));
            assert_eq!(client.call(server.addr, absent()).await, Ok(Reply::Block(None)));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(client.call(server.addr, absent()).await, Ok(Reply::Block(None)));
            assert_eq!(server.metrics.rpc_connections_accepted.get(), 2);
            server.stop().await;
        })
        .await
    }

    /// A replica that holds every request for a while and counts how many it holds at once.
    async fn slow_server(hold: Duration) -> (SocketAddr, Arc<(AtomicUsize, AtomicUsize, AtomicUsize)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // (held now, held at most, connections accepted)
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)));
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.2.fetch_add(1, Ordering::SeqCst);
                let counts = shared.clone();
                tokio::spawn(async move {
                    let mut connection = Connection::new(stream);
                    while let Ok(message) = connection.read_message().await {
                        assert!(wire::decode_message::<Request>(&message).is_ok());
                        let now = counts.0.fetch_add(1, Ordering::SeqCst) + 1;
                        counts.1.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(hold).await;
                        counts.0.fetch_sub(1, Ordering::SeqCst);
                        let reply = wire::encode_message(&Reply::Durable).unwrap();
                        if connection.write_message(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, counts)
    }

    #[tokio::test]
    async fn concurrent_calls_to_one_peer_never_exceed_the_in_flight_bound() {
        bounded(async {
            let (addr, counts) = slow_server(Duration::from_millis(20)).await;
            let client = client(limits());
            let calls = (0..24).map(|_| {
                let client = client.clone();
                async move { client.call(addr, get(BlockHash::of(b"x"))).await }
            });
            let replies = join_all(calls).await;
            assert!(replies.iter().all(|reply| *reply == Ok(Reply::Durable)), "{replies:?}");
            assert_eq!(counts.1.load(Ordering::SeqCst), limits().in_flight_per_peer_max);
            assert!(counts.2.load(Ordering::SeqCst) <= limits().in_flight_per_peer_max);
        })
        .await
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_or_answers_garbage_leaves_the_call_lost() {
        bounded(async {
            // Reads one request, then: hang up on the first connection, answer garbage on the
            // second.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                for answer in [None, Some(vec![0xff; 4])] {
                    let Ok((stream, _)) = listener.accept().await else { return };
                    let mut connection = Connection::new(stream);
                    if connection.read_message().await.is_err() {
                        return;
                    }
                    if let Some(garbage) = answer {
                        let _ = connection.write_message(&garbage).await;
                        // Held open: the client must close it, not wait for more.
                        let _ = connection.read_message().await;
                    }
                }
            });
            let client = client(limits());
            let hung_up = client.call(addr, get(BlockHash::of(b"x"))).await;
            assert!(matches!(hung_up, Err(RpcError::Lost(_))), "{hung_up:?}");
            let garbage = client.call(addr, get(BlockHash::of(b"x"))).await;
            assert!(matches!(garbage, Err(RpcError::Lost(_))), "{garbage:?}");
            let rejected = client.shared.metrics.rpc_rejected.get_or_create(&DropLabels { reason: "malformed" }).get();
            assert_eq!(rejected, 1);
            tokio::time::timeout(Duration::from_secs(1), server).await.unwrap().unwrap();
        })
        .await
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_later_calls_are_unreachable() {
        bounded(async {
            let server = TestServer::start(limits()).await;
            let client = client(limits());
            let absent = || get(BlockHash::of(b"absent"));
            assert_eq!(client.call(server.addr, absent()).await, Ok(Reply::Block(None)));
            let mut idle = TcpStream::connect(server.addr).await.unwrap();
            server.accepted(2).await;
            let addr = server.addr;
            server.stop().await;
            assert!(closed_by_peer(&mut idle).await);
            // The pooled connection is found closed: nothing is sent, and nothing is in doubt.
            let after = client.call(addr, absent()).await;
            assert!(matches!(after, Err(RpcError::Unreachable(_))), "{after:?}");
        })
        .await
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_on_accept() {
        bounded(async {
            let server = TestServer::start(RpcLimits { connections_max: 2, ..limits() }).await;
            let first = TcpStream::connect(server.addr).await.unwrap();
            let second = TcpStream::connect(server.addr).await.unwrap();
            server.accepted(2).await;
            let mut third = TcpStream::connect(server.addr).await.unwrap();
            assert!(closed_by_peer(&mut third).await);
            assert_eq!(server.metrics.rpc_connections_refused.get(), 1);
            drop((first, second));
            // Their slots come back once the server has seen them close.
            let absent = get(BlockHash::of(b"absent"));
            let client = client(limits());
            let mut reply = client.call(server.addr, absent.clone()).await;
            while reply != Ok(Reply::Block(None)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                reply = client.call(server.addr, absent.clone()).await;
            }
            server.stop().await;
        })
        .await
    }
}
