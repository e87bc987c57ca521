//! Every bound and setting this crate puts on object storage: sizes, counts, retries and timeouts.

use std::time::Duration;

/// Longest prefix of an `s3://bucket/prefix` location: 512 bytes. S3 keys are at most 1024 bytes; a set's own names
/// below the prefix (`incr-N/data/atoms/<id>`, journal segments) stay well under the other 512.
pub const MAX_PREFIX_BYTES: usize = 512;

/// S3's smallest part of a multipart upload, except the last: 5 MiB. A smaller one is refused before it is sent
/// (S3 would refuse the whole upload at its completion, `EntityTooSmall`).
pub const MIN_PART_BYTES: usize = 5 << 20;

/// S3's largest part: 5 GiB.
pub const MAX_PART_BYTES: usize = 5 << 30;

/// S3's most parts in one multipart upload: 10,000.
pub const MAX_PARTS: usize = 10_000;

/// Parts of one multipart upload in flight at once: 6. The caller's buffers are held until their part is stored,
/// so one upload holds at most 6 parts of memory (48 MiB with 8 MiB parts, which the hot copy's pool or the set
/// copy's budget bounds in turn); the next [`put_part`](crate::Upload::put_part) waits for the oldest part to be
/// stored. With 4, a hot copy of large files to `s3s-fs` on loopback was slower than rclone's 4 files x 4 parts.
pub const MULTIPART_PARTS_IN_FLIGHT: usize = 6;

/// Keys asked for in one page of a listing ([`ObjectClient::list`](crate::ObjectClient::list)): 10,000. S3 answers
/// at most 1,000 a page whatever is asked (MinIO and Ceph's RGW by default too), so there this changes nothing; a
/// server that honours more answers a large listing in fewer requests, which matters where each request costs a
/// walk of the whole bucket (`s3s-fs` does: listing the 50,000 objects of an element 1,000 at a time took longer
/// than uploading them). A page of 10,000 keys is a response of a few MB.
pub const LIST_PAGE_KEYS: usize = 10_000;

/// Worker threads of a client's runtime (the HTTP connections and retries): 2. Requests are I/O-bound; the callers'
/// own threads (the copier, restore, check) do the hashing.
pub const RUNTIME_WORKER_THREADS: usize = 2;

/// Retries of one request that failed in a way worth retrying (a 5xx such as 503 `SlowDown`, 429, 408, a
/// connection refused or reset): 10, object_store's own default.
pub const RETRY_MAX: usize = 10;

/// Longest time from a request's first attempt after which it is not retried any more: 3 minutes (object_store's
/// default; its requests are signed once, and signatures of S3 expire after 15 minutes).
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(180);

/// Most retries a configuration may ask for (`serve --config`'s `max-retries`; 0 is allowed: no retry): 100.
pub const MAX_CONFIG_RETRIES: usize = 100;

/// Longest retry timeout a configuration may ask for (`serve --config`'s `retry-timeout`): 10 minutes, under the
/// 15 minutes after which S3 refuses a signature (object_store signs a request once, for all its retries).
pub const MAX_CONFIG_RETRY_TIMEOUT: Duration = Duration::from_secs(600);

/// First wait before a retry: 100 ms, doubled (with jitter) on each further retry up to [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Longest wait between two retries: 15 s.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Factor between two successive waits: 2.
pub const RETRY_BACKOFF_BASE: f64 = 2.0;

/// Time to open a connection to the store: 5 s.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time for one request, its body included: 5 minutes (a 5 GiB part at 20 MB/s takes 4.5 minutes; the
/// default 30 s of object_store would fail a large part on a slow link).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

const _: () = assert!(MIN_PART_BYTES <= MAX_PART_BYTES);
const _: () = assert!(MULTIPART_PARTS_IN_FLIGHT >= 1 && MULTIPART_PARTS_IN_FLIGHT <= MAX_PARTS);
const _: () = assert!(RUNTIME_WORKER_THREADS >= 1);
const _: () = assert!(LIST_PAGE_KEYS >= 1_000);
const _: () = assert!(RETRY_BACKOFF_INITIAL.as_millis() <= RETRY_BACKOFF_MAX.as_millis());
const _: () = assert!(MAX_PREFIX_BYTES < 1024);
const _: () = assert!(RETRY_MAX <= MAX_CONFIG_RETRIES);
const _: () = assert!(RETRY_TIMEOUT.as_secs() <= MAX_CONFIG_RETRY_TIMEOUT.as_secs());
