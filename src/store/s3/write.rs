//! The write side of the S3 client: conditional PUTs of small objects (the shared LUN
//! map, its probe, digest indexes) and deletes, each bounded by the deadline.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{describe, status, unquote, S3Client};
use crate::store::StoreError;

impl S3Client {
    /// Write a small object only if `cond` holds at the server; returns its new ETag.
    /// A failed precondition (412, 409 for a conditional write racing another, or the
    /// 500 Ceph RGW may give the loser of such a race) is `Stale`; an `If-Match` on a
    /// missing object is `NotFound` (RGW says 412 there: `Stale`, which callers treat
    /// alike).
    pub async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        cond: PutCondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        let name = format!("s3://{bucket}/{key}");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        req = match cond {
            // Ceph RGW compares a PUT's If-Match with the stored ETag literally, so a
            // quoted one never matches; AWS and moto take either form. Unquoted unless
            // the probe found a server that needs the quotes.
            PutCondition::IfMatch(etag) if self.quote_put_if_match.load(Ordering::Relaxed) => {
                req.if_match(format!("\"{}\"", unquote(etag)))
            }
            PutCondition::IfMatch(etag) => req.if_match(unquote(etag)),
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::Always => req,
        };
        let conditional = cond != PutCondition::Always;
        match tokio::time::timeout(self.deadline, req.send()).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "PUT {name}: deadline passed"
            ))),
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(match status(&e) {
                    Some(412 | 409) => StoreError::Stale(name),
                    Some(500) if conditional => StoreError::Stale(name),
                    Some(404) => StoreError::NotFound(name),
                    _ => StoreError::Unavailable(format!("PUT {name}: {}", describe(&e))),
                })
            }
            Ok(Ok(out)) => Ok(out.e_tag().map(unquote)),
        }
    }

    /// Send `If-Match` on PUTs quoted (the probe found a server that needs it).
    pub fn quote_put_if_match(&self, quoted: bool) {
        self.quote_put_if_match.store(quoted, Ordering::Relaxed);
    }

    /// Delete an object (missing is fine).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let name = format!("s3://{bucket}/{key}");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = self.client.delete_object().bucket(bucket).key(key).send();
        match tokio::time::timeout(self.deadline, req).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "DELETE {name}: deadline passed"
            ))),
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!(
                    "DELETE {name}: {}",
                    describe(&e)
                )))
            }
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The precondition of a conditional PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition<'a> {
    /// `If-Match: <etag>`: replace exactly the version that was read.
    IfMatch(&'a str),
    /// `If-None-Match: *`: create, never overwrite.
    IfNoneMatch,
    /// No precondition (the probe's first write only).
    Always,
}
