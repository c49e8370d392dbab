//! S3 through the AWS SDK, behind the synchronous store traits. The SDK is async; these adapters
//! are used from blocking threads (`spawn_blocking` in a Lambda, a plain thread in the CLI) and
//! drive each call with the runtime handle they were built with.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tokio::runtime::Handle;

use crate::store::{LakeStore, ObjectBody, ObjectRef, ObjectSource, StoreError, TransientIo};

/// Loads the SDK configuration and builds an S3 client from it, for callers that need S3 alone
/// (the CLI): [`crate::aws::load`] then [`crate::aws::s3`]. `endpoint_url` points it at another
/// server (a local S3-compatible one); path-style addressing is then forced.
pub async fn client(endpoint_url: Option<&str>) -> aws_sdk_s3::Client {
    crate::aws::s3(&crate::aws::load(endpoint_url).await, None)
}

/// A failed S3 call as a [`StoreError`], retryable by [`crate::aws::store_error_retryable`].
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    uri: String,
    e: SdkError<E, HttpResponse>,
) -> StoreError {
    let retryable = crate::aws::store_error_retryable(&e);
    let message = match &e {
        SdkError::ServiceError(se) => {
            format!("{}: {}", se.err().code().unwrap_or(""), se.err().message().unwrap_or(""))
        }
        _ => DisplayErrorContext(&e).to_string(),
    };
    StoreError { op, uri, message, retryable }
}

/// S3 as an [`ObjectSource`].
#[derive(Clone)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    handle: Handle,
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client, handle: Handle) -> Self {
        S3Source { client, handle }
    }
}

/// An S3 object body read chunk by chunk: memory holds one network chunk, never the object.
struct BodyReader {
    body: ByteStream,
    chunk: bytes::Bytes,
    handle: Handle,
    uri: String,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.body.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(io::Error::other(TransientIo(format!("reading {}: {e}", self.uri)))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl ObjectSource for S3Source {
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError> {
        let out = self
            .handle
            .block_on(self.client.get_object().bucket(&obj.bucket).key(&obj.key).send())
            .map_err(|e| classify("get", obj.uri(), e))?;
        let etag = out.e_tag().map(str::to_string);
        let reader =
            BodyReader { body: out.body, chunk: bytes::Bytes::new(), handle: self.handle.clone(), uri: obj.uri() };
        Ok(ObjectBody { reader: Box::new(reader), etag })
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError> {
        Ok(self.list_pages(bucket, prefix, None, false)?.0)
    }

    fn list_after(&self, bucket: &str, prefix: &str, start_after: &str) -> Result<Vec<ObjectRef>, StoreError> {
        Ok(self.list_pages(bucket, prefix, Some(start_after), false)?.0)
    }

    fn list_folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_pages(bucket, prefix, None, true)?.1)
    }

    fn list_folders_each(&self, bucket: &str, prefixes: &[String]) -> Result<Vec<Vec<String>>, StoreError> {
        let listings = prefixes.iter().map(|p| (p.clone(), None, true)).collect();
        Ok(self.list_concurrently(bucket, listings)?.into_iter().map(|(_, f)| f).collect())
    }

    fn list_after_each(&self, bucket: &str, requests: &[(String, String)]) -> Result<Vec<Vec<ObjectRef>>, StoreError> {
        let listings = requests.iter().map(|(p, after)| (p.clone(), Some(after.clone()), false)).collect();
        Ok(self.list_concurrently(bucket, listings)?.into_iter().map(|(o, _)| o).collect())
    }
}

/// Listings in flight at once: S3 serves thousands of requests a second per prefix, and a
/// Lambda's few network connections are the real bound.
const LIST_CONCURRENCY: usize = 16;

/// One listing: a prefix, where to start after, and whether to list folders (delimiter `/`).
type Listing = (String, Option<String>, bool);
/// What a listing found: objects, and folders (common prefixes).
type Listed = (Vec<ObjectRef>, Vec<String>);

impl S3Source {
    /// Every page of a ListObjectsV2: the objects, and with `folders` (delimiter `/`) the common
    /// prefixes.
    fn list_pages(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        folders: bool,
    ) -> Result<Listed, StoreError> {
        self.handle.block_on(list_pages(&self.client, bucket, prefix, start_after, folders))
    }

    /// Several listings, `LIST_CONCURRENCY` at a time, results in request order; the first
    /// error fails them all (the run is retried whole).
    fn list_concurrently(&self, bucket: &str, listings: Vec<Listing>) -> Result<Vec<Listed>, StoreError> {
        self.handle.block_on(async {
            let n = listings.len();
            let mut out: Vec<Option<Listed>> = (0..n).map(|_| None).collect();
            let mut todo = listings.into_iter().enumerate();
            let mut set = tokio::task::JoinSet::new();
            loop {
                while set.len() < LIST_CONCURRENCY {
                    let Some((i, (prefix, after, folders))) = todo.next() else { break };
                    let (client, bucket) = (self.client.clone(), bucket.to_string());
                    set.spawn(
                        async move { (i, list_pages(&client, &bucket, &prefix, after.as_deref(), folders).await) },
                    );
                }
                match set.join_next().await {
                    None => break,
                    Some(Ok((i, r))) => out[i] = Some(r?),
                    Some(Err(e)) => {
                        return Err(StoreError {
                            op: "list",
                            uri: format!("s3://{bucket}/"),
                            message: format!("listing task failed: {e}"),
                            retryable: true,
                        })
                    }
                }
            }
            Ok(out.into_iter().flatten().collect())
        })
    }
}

/// Every page of a ListObjectsV2 (see [`S3Source::list_pages`]).
async fn list_pages(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
    folders: bool,
) -> Result<Listed, StoreError> {
    let (mut out, mut prefixes) = (Vec::new(), Vec::new());
    let mut token = None;
    loop {
        let req = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .set_delimiter(folders.then(|| "/".to_string()))
            .set_continuation_token(token);
        let page = req.send().await.map_err(|e| classify("list", format!("s3://{bucket}/{prefix}"), e))?;
        for o in page.contents() {
            if let Some(key) = o.key() {
                out.push(ObjectRef {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    etag: o.e_tag().map(str::to_string),
                    size: o.size().map(|s| s as u64),
                    modified: o.last_modified().and_then(|t| t.to_millis().ok()),
                });
            }
        }
        prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok((out, prefixes)),
        }
    }
}

/// A lake in an S3 bucket under a prefix, staging files in a local folder (`/tmp` in Lambda).
#[derive(Clone)]
pub struct S3Lake {
    client: aws_sdk_s3::Client,
    handle: Handle,
    bucket: String,
    prefix: String,
    staging: PathBuf,
}

impl S3Lake {
    pub fn new(client: aws_sdk_s3::Client, handle: Handle, bucket: &str, prefix: &str, staging: PathBuf) -> Self {
        let prefix = crate::lake::normalize_prefix(prefix);
        S3Lake { client, handle, bucket: bucket.to_string(), prefix, staging }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix lake objects are written under (empty or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl LakeStore for S3Lake {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        let full = format!("{}{key}", self.prefix);
        let uri = format!("s3://{}/{full}", self.bucket);
        let body = self.handle.block_on(ByteStream::from_path(local)).map_err(|e| StoreError {
            op: "put",
            uri: uri.clone(),
            message: e.to_string(),
            retryable: false,
        })?;
        let out = self
            .handle
            .block_on(self.client.put_object().bucket(&self.bucket).key(&full).body(body).send())
            .map_err(|e| classify("put", uri, e))?;
        let _ = std::fs::remove_file(local);
        Ok(out.e_tag().map(|e| e.trim_matches('"').to_string()))
    }

    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        let full = format!("{}{key}", self.prefix);
        let uri = format!("s3://{}/{full}", self.bucket);
        // S3 answers a delete of a missing key with success.
        self.handle
            .block_on(self.client.delete_object().bucket(&self.bucket).key(&full).send())
            .map_err(|e| classify("delete", uri, e))?;
        Ok(())
    }

    fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }

    fn root_uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        if obj.bucket != self.bucket {
            return false;
        }
        if !self.prefix.is_empty() {
            return obj.key.starts_with(&self.prefix);
        }
        let first = obj.key.split('/').next().unwrap_or("");
        crate::lake::OWN_FOLDERS.contains(&first)
    }
}
