//! The HTTP client of the Shoal API, used by the CLI, the end-to-end tests and the benchmarks.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, RANGE};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::api::{self, DeleteResult, DirListing, ErrorBody, FileInfo, MkdirResult, Status};
use crate::core::path::ShoalPath;

/// Characters escaped inside one path component of a URL.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The status code.
        status: u16,
        /// The node's `error` message.
        message: String,
    },
    /// The node could not be reached or the transfer broke off.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Downloaded bytes do not hash to what the node said the file holds.
    #[error("downloaded content does not match the file's hash (expected {expected}, received {received})")]
    Integrity {
        /// The node's `x-shoal-blake3`.
        expected: String,
        /// What arrived.
        received: String,
    },
    /// The remote path is malformed; nothing was sent. Checked here because URL handling
    /// would otherwise resolve `..` and send a different, valid path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// Why it is refused.
        reason: crate::core::path::PathError,
    },
    /// The node sent something that is not a Shoal answer.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// A client of one node's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// `/a/b` or `a/b` as the absolute path `/a/b`.
pub fn remote_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

impl Client {
    /// A client of the node at `base` (`http://127.0.0.1:7700`).
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, kind: &str, path: &str) -> Result<String> {
        let path = remote_path(path);
        if let Err(reason) = ShoalPath::parse(&path) {
            return Err(ClientError::InvalidPath { path, reason });
        }
        let encoded: Vec<String> = path.split('/').map(|c| utf8_percent_encode(c, COMPONENT).to_string()).collect();
        Ok(format!("{}/v1/{kind}{}", self.base, encoded.join("/")))
    }

    /// Uploads a stream of `size` bytes (if known) with an optional BLAKE3 for the node to check.
    pub async fn put_stream<S>(
        &self,
        remote: &str,
        body: S,
        size: Option<u64>,
        blake3: Option<&str>,
    ) -> Result<FileInfo>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut request = self.http.put(self.url("files", remote)?).body(reqwest::Body::wrap_stream(body));
        if let Some(size) = size {
            request = request.header(CONTENT_LENGTH, size);
        }
        if let Some(hash) = blake3 {
            request = request.header(api::HEADER_BLAKE3, hash);
        }
        json(request.send().await?).await
    }

    /// Uploads bytes held in memory, declaring their hash.
    pub async fn put_bytes(&self, remote: &str, bytes: impl Into<Bytes>) -> Result<FileInfo> {
        let bytes: Bytes = bytes.into();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let response =
            self.http.put(self.url("files", remote)?).header(api::HEADER_BLAKE3, hash).body(bytes).send().await?;
        json(response).await
    }

    /// Uploads a local file: hashes it first, so the node refuses anything that arrives
    /// changed, then streams it, advancing `progress` as bytes go out.
    pub async fn put_file(&self, local: &Path, remote: &str, progress: Option<ProgressBar>) -> Result<FileInfo> {
        self.url("files", remote)?; // refuse a bad remote path before reading a large local file
        let owned = local.to_path_buf();
        let (size, hash) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(&owned)?)?;
            Ok((std::fs::metadata(&owned)?.len(), hasher.finalize().to_hex().to_string()))
        })
        .await
        .map_err(|join| ClientError::Io(std::io::Error::other(join)))??;
        if let Some(progress) = &progress {
            progress.set_length(size);
        }
        let file = tokio::fs::File::open(local).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect_ok(move |chunk| {
            if let Some(progress) = &progress {
                progress.inc(chunk.len() as u64);
            }
        });
        self.put_stream(remote, stream, Some(size), Some(&hash)).await
    }

    /// Downloads a file into `out`, verifying its hash; returns what HEAD would.
    pub async fn get_to<W: AsyncWrite + Unpin>(
        &self,
        remote: &str,
        out: &mut W,
        progress: Option<&ProgressBar>,
    ) -> Result<FileInfo> {
        let response = check(self.http.get(self.url("files", remote)?).send().await?).await?;
        let info = info_from_headers(remote, response.headers(), response.content_length())?;
        if let Some(progress) = progress {
            progress.set_length(info.size);
        }
        let mut hasher = blake3::Hasher::new();
        let mut stream = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
            received += chunk.len() as u64;
            if let Some(progress) = progress {
                progress.inc(chunk.len() as u64);
            }
        }
        out.flush().await?;
        let received_hash = hasher.finalize().to_hex().to_string();
        if received != info.size || received_hash != info.blake3 {
            return Err(ClientError::Integrity { expected: info.blake3, received: received_hash });
        }
        Ok(info)
    }

    /// Downloads a whole file into memory, verified.
    pub async fn get_bytes(&self, remote: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_to(remote, &mut out, None).await?;
        Ok(out)
    }

    /// Downloads bytes `start..=end_inclusive` (a `206` answer).
    pub async fn get_range(&self, remote: &str, start: u64, end_inclusive: u64) -> Result<Vec<u8>> {
        let response = self
            .http
            .get(self.url("files", remote)?)
            .header(RANGE, format!("bytes={start}-{end_inclusive}"))
            .send()
            .await?;
        let response = check(response).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Protocol(format!("expected 206 for a range, got {}", response.status())));
        }
        Ok(response.bytes().await?.to_vec())
    }

    /// A file's header (HEAD).
    pub async fn stat(&self, remote: &str) -> Result<FileInfo> {
        let response = self.http.head(self.url("files", remote)?).send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            // HEAD answers carry no body, so no message: say it here.
            let message = format!("{}: no such file or directory", remote_path(remote));
            return Err(ClientError::Api { status: 404, message });
        }
        let response = check(response).await?;
        let length = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        info_from_headers(remote, response.headers(), length)
    }

    /// Deletes a file.
    pub async fn delete_file(&self, remote: &str) -> Result<DeleteResult> {
        json(self.http.delete(self.url("files", remote)?).send().await?).await
    }

    /// Lists a directory.
    pub async fn list(&self, remote: &str) -> Result<DirListing> {
        json(self.http.get(self.url("dirs", remote)?).send().await?).await
    }

    /// Makes a directory (and its parents).
    pub async fn mkdir(&self, remote: &str) -> Result<MkdirResult> {
        json(self.http.put(self.url("dirs", remote)?).send().await?).await
    }

    /// Removes a directory; `recursive` removes everything below it too.
    pub async fn remove_dir(&self, remote: &str, recursive: bool) -> Result<DeleteResult> {
        let url = format!("{}?recursive={recursive}", self.url("dirs", remote)?);
        json(self.http.delete(url).send().await?).await
    }

    /// The cluster as the node sees it.
    pub async fn status(&self) -> Result<Status> {
        json(self.http.get(format!("{}/v1/status", self.base)).send().await?).await
    }
}

/// Passes a success through; turns an error status into [`ClientError::Api`] with the node's
/// message.
async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|body| body.error)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_lowercase());
    Err(ClientError::Api { status: status.as_u16(), message })
}

async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let response = check(response).await?;
    let text = response.text().await?;
    serde_json::from_str(&text).map_err(|err| ClientError::Protocol(format!("{err}: {text}")))
}

fn info_from_headers(remote: &str, headers: &reqwest::header::HeaderMap, length: Option<u64>) -> Result<FileInfo> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol(format!("missing header {name}")))
    };
    let version = header(api::HEADER_VERSION)?;
    let hlc: u64 = version
        .split('-')
        .next()
        .and_then(|hlc| hlc.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad version {version}")))?;
    Ok(FileInfo {
        path: remote_path(remote),
        size: length.ok_or_else(|| ClientError::Protocol("missing content-length".into()))?,
        blake3: header(api::HEADER_BLAKE3)?,
        version,
        modified_ms: hlc / 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_are_escaped_but_slashes_are_kept() {
        let client = Client::new("http://127.0.0.1:1/").expect("client");
        assert_eq!(
            client.url("files", "a b/c?d#e%f").expect("valid"),
            "http://127.0.0.1:1/v1/files/a%20b/c%3Fd%23e%25f"
        );
        assert_eq!(client.url("dirs", "/x").expect("valid"), "http://127.0.0.1:1/v1/dirs/x");
        assert_eq!(client.url("dirs", "/").expect("valid"), "http://127.0.0.1:1/v1/dirs/");
    }

    #[test]
    fn malformed_paths_are_refused_before_anything_is_sent() {
        let client = Client::new("http://127.0.0.1:1").expect("client");
        for bad in ["/a/../b", "/a//b", "/./x"] {
            assert!(matches!(client.url("files", bad), Err(ClientError::InvalidPath { .. })), "{bad}");
        }
    }
}
