//! The HTTP API (docs/ARCHITECTURE.md §9) on axum: HTTP in, the node core's client
//! operations behind. Bodies stream both ways: the core takes an upload's content only while
//! few enough of its blocks are in flight (`upload_blocks_in_flight_max`) and fetches a
//! download's blocks a bounded distance ahead (`download_blocks_ahead_max`), whatever the
//! file size.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::StreamExt;
use headers::HeaderMapExt;
use shoal_storage::{BlockHash, EntryKind, FjallStore, NodeId, Store, StoreError};

use super::cluster::Cluster;
use super::gossip::Gossip;
use super::metrics::{Metrics, RequestLabels};
use super::{blocking, now_ms};
use crate::api::{self, DeleteResult, DirListing, DirListingEntry, ErrorBody, FileInfo, MkdirResult};
use crate::config::Config;
use crate::core::files::{FileError, FileStat, ReadPlan};
use crate::core::node::{Listing, Made, Removed};
use crate::core::replication::Quorum;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    cluster: Cluster,
    store: Arc<FjallStore>,
    quorum: Quorum,
    gossip: Gossip,
    metrics: Arc<Metrics>,
    node_id: NodeId,
    started_ms: u64,
    /// One permit per upload being served.
    uploads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        cluster: Cluster,
        store: Arc<FjallStore>,
        gossip: Gossip,
        metrics: Arc<Metrics>,
        config: &Config,
        node_id: NodeId,
        started_ms: u64,
    ) -> Self {
        Self {
            cluster,
            store,
            quorum: config.quorum(),
            gossip,
            metrics,
            node_id,
            started_ms,
            uploads: Arc::new(tokio::sync::Semaphore::new(config.uploads_in_flight_max)),
        }
    }
}

/// The routes of docs/ARCHITECTURE.md §9.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/files/{*path}", get(get_file).head(head_file).put(put_file).delete(delete_file))
        .route("/v1/dirs", get(list_root))
        .route("/v1/dirs/", get(list_root))
        .route("/v1/dirs/{*path}", get(list_dir).put(make_dir).delete(remove_dir))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such route; see /v1/files, /v1/dirs, /v1/status")
        })
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        // Uploads stream; the size limit is the disk, checked by the store.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// An error response: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<FileError> for ApiError {
    fn from(err: FileError) -> Self {
        let status = match &err {
            FileError::InvalidPath(_) | FileError::HashMismatch { .. } => StatusCode::BAD_REQUEST,
            FileError::NotFound(_) => StatusCode::NOT_FOUND,
            FileError::Conflict { .. } | FileError::NotEmpty(_) => StatusCode::CONFLICT,
            FileError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            FileError::Store(StoreError::Full { .. }) | FileError::NoRoom(_) => StatusCode::INSUFFICIENT_STORAGE,
            FileError::Store(StoreError::Poisoned) => StatusCode::SERVICE_UNAVAILABLE,
            FileError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FileError::InDoubt(_) => StatusCode::GATEWAY_TIMEOUT,
            FileError::BlockUnavailable(_) | FileError::ClockExhausted(_) | FileError::Store(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status.is_server_error() {
            tracing::error!(%err, "request failed");
        }
        Self::new(status, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The route's wildcard as an absolute path.
fn absolute(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(path) = path?;
    Ok(format!("/{path}"))
}

fn version_string(stat: &FileStat) -> String {
    format!("{}-{}", stat.version.hlc, stat.version.node)
}

fn file_info(stat: &FileStat) -> FileInfo {
    FileInfo {
        path: stat.path.to_string(),
        size: stat.meta.size,
        blake3: stat.meta.content_hash.to_hex(),
        version: version_string(stat),
        modified_ms: stat.version.unix_ms(),
    }
}

/// Headers that describe a file, for GET and HEAD.
fn file_headers(stat: &FileStat) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(api::HEADER_BLAKE3, stat.meta.content_hash.to_hex());
    set(api::HEADER_VERSION, version_string(stat));
    set(header::ETAG.as_str(), format!("\"{}\"", stat.meta.content_hash.to_hex()));
    set(header::ACCEPT_RANGES.as_str(), "bytes".into());
    set(header::CONTENT_TYPE.as_str(), "application/octet-stream".into());
    // HTTP dates end at year 9999 (and the formatter panics past it): a version from a wild
    // clock simply gets no Last-Modified.
    const HTTP_DATE_MS_MAX: u64 = 253_402_300_799_000;
    if stat.version.unix_ms() <= HTTP_DATE_MS_MAX {
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(stat.version.unix_ms());
        headers.typed_insert(headers::LastModified::from(modified));
    }
    headers
}

async fn put_file(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let path = absolute(path)?;
    let _permit = state
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many uploads in flight; retry later"))?;
    let declared = match headers.get(api::HEADER_BLAKE3) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|s| s.parse::<BlockHash>().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{} must be 64 hex digits", api::HEADER_BLAKE3)))?,
        ),
    };
    let mut upload = state.cluster.start_put(&path, declared)?;
    // The core cuts the body into blocks and writes them to their owners while the next
    // ones arrive, taking more only while few enough are in flight: memory stays bounded.
    let mut body = body.into_data_stream();
    while let Some(data) = body.next().await {
        match data {
            Ok(data) => {
                state.metrics.bytes_received.inc_by(data.len() as u64);
                upload.push(&data).await?;
            }
            Err(err) => {
                state.metrics.uploads_aborted.inc();
                tracing::info!(%path, %err, "upload aborted; nothing stored");
                return Err(ApiError::bad_request(format!("upload body ended early: {err}")));
            }
        }
    }
    let stat = upload.finish().await?;
    tracing::debug!(path = %stat.path, size = stat.meta.size, version = %version_string(&stat), "file stored");
    Ok((StatusCode::CREATED, Json(file_info(&stat))).into_response())
}

/// The live file at `path`, read from a read quorum of its owners.
async fn stat_file(state: &AppState, path: &str) -> ApiResult<FileStat> {
    Ok(state.cluster.stat(path).await?)
}

/// The byte range a GET asks for: `None` for the whole file (no `Range`, or several ranges,
/// which a server may answer with the whole file).
fn requested_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(range) = headers.typed_get::<headers::Range>() else { return Ok(None) };
    let mut ranges = range.satisfiable_ranges(size);
    let (Some((start, end)), None) = (ranges.next(), ranges.next()) else {
        return Ok(None);
    };
    use std::ops::Bound;
    let start = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match end {
        Bound::Included(e) => e.saturating_add(1).min(size),
        Bound::Excluded(e) => e.min(size),
        Bound::Unbounded => size,
    };
    if start >= end {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("range not satisfiable for {size} bytes"),
        ));
    }
    Ok(Some((start, end)))
}

async fn head_file(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    let path = absolute(path)?;
    let stat = stat_file(&state, &path).await?;
    let mut headers = file_headers(&stat);
    headers.typed_insert(headers::ContentLength(stat.meta.size));
    Ok((StatusCode::OK, headers).into_response())
}

async fn get_file(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request_headers: HeaderMap,
) -> ApiResult<Response> {
    let path = absolute(path)?;
    let stat = stat_file(&state, &path).await?;
    let range = match requested_range(&request_headers, stat.meta.size) {
        Ok(range) => range,
        Err(err) => {
            let mut response = err.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", stat.meta.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    // Planned from the record already read: one lookup, and the range was resolved against
    // the very size the plan serves.
    let plan = ReadPlan::new(stat, range)?;
    let mut headers = file_headers(&plan.stat);
    headers.typed_insert(headers::ContentLength(plan.end - plan.start));
    let status = if range.is_some() {
        if let Ok(content_range) = headers::ContentRange::bytes(plan.start..plan.end, plan.stat.meta.size) {
            headers.typed_insert(content_range);
        }
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    Ok((status, headers, stream_plan(&state, plan).await?).into_response())
}

/// Streams the plan's pieces, reading ahead. The first piece is read before the response
/// starts, so a missing first block is a clean error; a later failure aborts the body, which
/// the client sees as a truncated transfer, never as wrong bytes.
async fn stream_plan(state: &AppState, plan: ReadPlan) -> ApiResult<Body> {
    let metrics = state.metrics.clone();
    let mut download = state.cluster.start_read(plan)?;
    let first = match download.next().await {
        None => return Ok(Body::empty()),
        Some(Ok(first)) => first,
        Some(Err(err)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    };
    metrics.bytes_sent.inc_by(first.len() as u64);
    let rest = futures_util::stream::unfold(download, move |mut download| {
        let metrics = metrics.clone();
        async move {
            match download.next().await? {
                Ok(bytes) => {
                    metrics.bytes_sent.inc_by(bytes.len() as u64);
                    Some((Ok(bytes), download))
                }
                Err(err) => {
                    tracing::error!(%err, "read failed mid-stream; aborting the response");
                    Some((Err(std::io::Error::other(err.to_string())), download))
                }
            }
        }
    });
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    Ok(Body::from_stream(stream))
}

async fn delete_file(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DeleteResult>> {
    let path = absolute(path)?;
    state.cluster.run(|core, now| core.start_delete(now, &path)).await?;
    Ok(Json(DeleteResult { path, files_deleted: 1 }))
}

async fn list_root(State(state): State<AppState>) -> ApiResult<Json<DirListing>> {
    list(state, "/".to_string()).await
}

async fn list_dir(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DirListing>> {
    list(state, absolute(path)?).await
}

async fn list(state: AppState, path: String) -> ApiResult<Json<DirListing>> {
    let Listing(listed) = state.cluster.run(|core, now| core.start_list(now, &path)).await?;
    let entries = listed
        .into_iter()
        .map(|listed| DirListingEntry {
            name: listed.name,
            kind: match listed.entry.kind {
                EntryKind::File => "file".into(),
                EntryKind::Dir => "dir".into(),
            },
            size: listed.entry.size,
            modified_ms: listed.entry.version.unix_ms(),
        })
        .collect();
    Ok(Json(DirListing { path, entries }))
}

async fn make_dir(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    let path = absolute(path)?;
    let Made(created) = state.cluster.run(|core, now| core.start_mkdir(now, &path)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(MkdirResult { path, created })).into_response())
}

#[derive(serde::Deserialize)]
struct RemoveDirQuery {
    #[serde(default)]
    recursive: bool,
}

async fn remove_dir(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RemoveDirQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DeleteResult>> {
    let path = absolute(path)?;
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let Removed(files_deleted) = state.cluster.run(|core, now| core.start_rmdir(now, &path, query.recursive)).await?;
    Ok(Json(DeleteResult { path, files_deleted }))
}

async fn status(State(state): State<AppState>) -> ApiResult<Json<api::Status>> {
    let (views, _) = state
        .gossip
        .members()
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "membership is shutting down"))?;
    let placement = state.cluster.placement();
    let shares: std::collections::HashMap<u128, f64> = placement.ring().primary_shares().into_iter().collect();
    let now = now_ms();
    let members = views
        .into_iter()
        .map(|view| {
            let record = view.record.as_ref();
            api::Member {
                node_id: format!("{:032x}", view.identity.node_id),
                http_addr: record.map(|r| r.http_addr.to_string()).unwrap_or_default(),
                cluster_addr: view.identity.addr.to_string(),
                zone: record.map(|r| r.zone.clone()).unwrap_or_default(),
                state: view.state.as_str().into(),
                ring_share_percent: shares.get(&view.identity.node_id).map_or(0.0, |share| share * 100.0),
                generation: view.identity.generation,
                capacity_bytes: record.map_or(0, |r| r.capacity_bytes),
                disk_used_bytes: record.map_or(0, |r| r.disk_used_bytes),
                // Before anything changed, a member's state dates from this node's start.
                state_age_ms: now.saturating_sub(view.state_since_ms.max(state.started_ms)),
            }
        })
        .collect();
    let quorum = state.quorum;
    Ok(Json(api::Status {
        node_id: state.node_id.to_string(),
        shoal_version: env!("CARGO_PKG_VERSION").into(),
        replication: api::Replication { n: quorum.n as u32, w: quorum.w as u32, r: quorum.r as u32 },
        members,
        settling_partitions: placement.settling().len() as u64,
        not_coordinating: state.cluster.not_coordinating(),
        durability: Some(durability_of(&state.cluster.durability())),
        cluster_durability: None,
    }))
}

fn durability_of(account: &shoal_core::node::Durability) -> api::Durability {
    api::Durability {
        partitions: account.partitions,
        full: account.full,
        fewer: account.fewer,
        extra: account.extra,
        backlog_entries: account.backlog_entries,
        backlog_bytes: account.backlog_bytes,
        repaired_entries: account.repaired_entries,
        repaired_bytes: account.repaired_bytes,
        rate_entries_per_sec: account.rate_entries_per_sec,
        rate_bytes_per_sec: account.rate_bytes_per_sec,
        eta_secs: account.eta_secs(),
        refilling: account.refilling,
    }
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let store = state.store.clone();
    if let Ok(usage) = blocking(move || Ok(store.usage()?)).await {
        state.metrics.disk_used_bytes.set(usage.used_bytes as i64);
        state.metrics.disk_available_bytes.set(usage.available_bytes as i64);
    }
    if let Some((views, stats)) = state.gossip.members().await {
        state.metrics.observe_gossip(stats, &views);
    }
    state.metrics.observe_durability(&state.cluster.durability());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok((headers, state.metrics.encode()).into_response())
}
