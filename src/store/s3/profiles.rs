//! Boot profiles in S3: an image's profile is the object
//! `.s3lun/profiles/<hash of its cache namespace>.json` in the image's own bucket
//! (every worker that can read the image can find it), written only by a conditional
//! create (`If-None-Match: *`), so concurrent first boots on many workers publish
//! one profile and never overwrite it. What a profile holds and how it is checked is
//! `crate::store::cache::profile`.

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use sha2::{Digest, Sha256};

use super::{PutCondition, S3Client};
use crate::store::cache::profile::{ProfileStore, MAX_OBJECT};
use crate::store::StoreError;

/// Where profiles live in a bucket.
pub const PREFIX: &str = ".s3lun/profiles/";

/// The key of the profile of the image whose cache namespace is `namespace`.
pub fn profile_key(namespace: &str) -> String {
    format!(
        "{PREFIX}{}.json",
        hex::encode(&Sha256::digest(namespace.as_bytes())[..16])
    )
}

/// One image's profile object.
#[derive(Debug, Clone)]
pub struct S3Profiles {
    client: S3Client,
    bucket: String,
    key: String,
}

impl S3Profiles {
    pub fn new(client: S3Client, bucket: &str, namespace: &str) -> S3Profiles {
        S3Profiles {
            client,
            bucket: bucket.to_string(),
            key: profile_key(namespace),
        }
    }

    /// The profile's bytes and ETag, `None` where there is none.
    pub async fn get(&self) -> Result<Option<Bytes>, StoreError> {
        match self
            .client
            .get_small(&self.bucket, &self.key, MAX_OBJECT)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self) -> Result<(), StoreError> {
        self.client.delete(&self.bucket, &self.key).await
    }
}

impl ProfileStore for S3Profiles {
    fn load(&self) -> BoxFuture<'static, Result<Option<Bytes>, StoreError>> {
        let me = self.clone();
        async move { me.get().await }.boxed()
    }

    fn publish(&self, body: Bytes) -> BoxFuture<'static, Result<bool, StoreError>> {
        let me = self.clone();
        async move {
            let put = me
                .client
                .put_if(&me.bucket, &me.key, body, PutCondition::IfNoneMatch)
                .await;
            match put {
                Ok(_) => Ok(true),
                Err(StoreError::Stale(_)) => Ok(false),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn name(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}
