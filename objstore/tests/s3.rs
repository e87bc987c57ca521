//! The object-storage client against real S3 servers on loopback: `s3s-fs` in-process (always) and moto's server
//! (protocol fidelity; skipped with a printed reason when it is not installed, a failure when `.ci/run` requires
//! it). Every test that does not depend on one server's quirks runs on both.

use std::io::Read;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use backset_objstore::limits::{LIST_PAGE_KEYS, MIN_PART_BYTES, MULTIPART_PARTS_IN_FLIGHT};
use backset_objstore::{
    DirListing, Entry, Location, ObjStoreError, ObjectClient, RetrySettings, S3Config, S3Credentials, S3Url, Secret,
};
use backset_s3test::{Endpoint, FaultServer, MotoServer, S3sServer, SlowDownProxy, TEST_SECRET_ACCESS_KEY};
use bytes::Bytes;

/// Retries short enough for a test of a failure: 2 retries, 10 to 50 ms apart.
fn quick_retries() -> RetrySettings {
    RetrySettings {
        max_retries: 2,
        timeout: Duration::from_secs(20),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

fn config(endpoint: &str, access_key_id: &str, secret: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        credentials: Some(S3Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Secret::new(secret),
            session_token: None,
        }),
        retry: quick_retries(),
        ..Default::default()
    }
}

fn url(text: &str) -> S3Url {
    match Location::parse(text).unwrap() {
        Location::S3(url) => url,
        other => panic!("{other:?}"),
    }
}

fn client(ep: &Endpoint, prefix: &str) -> ObjectClient {
    let url = url(&format!("s3://{}/{prefix}", ep.bucket));
    ObjectClient::new(url, &config(&ep.url, &ep.access_key_id, &ep.secret_access_key)).unwrap()
}

/// Runs `body` against `s3s-fs`, then against moto's server when it is there.
fn on_both(test: &str, body: impl Fn(&Endpoint)) {
    let s3s = S3sServer::start();
    body(s3s.endpoint());
    if let Some(moto) = MotoServer::start(test) {
        body(moto.endpoint());
    }
}

/// `len` bytes of a pattern that differs with `seed` (so a part out of place shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn round_trip_put_get_range_head_list_delete() {
    on_both("round_trip_put_get_range_head_list_delete", |ep| {
        let c = client(ep, "sets/demo");
        c.put("state", Bytes::from_static(b"state bytes")).unwrap();
        c.put("full/control/manifest", Bytes::from(pattern(1000, 1))).unwrap();
        c.put("full/data/atoms/0001", Bytes::from(pattern(10, 2))).unwrap();
        assert_eq!(&c.get("state", 1 << 20).unwrap()[..], b"state bytes");
        assert_eq!(&c.get_range("full/control/manifest", 100..110).unwrap()[..], &pattern(1000, 1)[100..110]);
        let head = c.head("full/control/manifest").unwrap().unwrap();
        assert_eq!((head.rel.as_str(), head.size), ("full/control/manifest", 1000));
        assert_eq!(c.head("nothing-here").unwrap(), None);
        let all: Vec<_> = c.list("").unwrap().into_iter().map(|o| (o.rel, o.size)).collect();
        assert_eq!(
            all,
            [
                ("full/control/manifest".to_owned(), 1000),
                ("full/data/atoms/0001".to_owned(), 10),
                ("state".to_owned(), 11)
            ]
        );
        let data: Vec<_> = c.list("full/data").unwrap().into_iter().map(|o| o.rel).collect();
        assert_eq!(data, ["full/data/atoms/0001"]);
        // A sibling prefix that shares the first letters is not below the set.
        client(ep, "sets/demo2").put("state", Bytes::from_static(b"other")).unwrap();
        assert_eq!(c.list("").unwrap().len(), 3);
        c.put("state", Bytes::from_static(b"replaced")).unwrap();
        assert_eq!(&c.get("state", 100).unwrap()[..], b"replaced");
        c.delete("state").unwrap();
        c.delete("state").unwrap(); // deleting what is not there succeeds
        assert_eq!(c.head("state").unwrap(), None);
        let missing = c.get("state", 100).unwrap_err();
        assert!(matches!(missing, ObjStoreError::NotFound { .. }), "{missing:?}");
        assert_eq!(missing.to_string(), format!("get s3://{}/sets/demo/state: no such object", ep.bucket));
    });
}

#[test]
fn get_refuses_an_object_over_its_bound_before_reading_it() {
    let server = S3sServer::start();
    let c = client(server.endpoint(), "bound");
    c.put("meta", Bytes::from(vec![7; 100])).unwrap();
    assert_eq!(c.get("meta", 100).unwrap().len(), 100);
    let e = c.get("meta", 99).unwrap_err();
    assert!(matches!(e, ObjStoreError::TooLarge { size: 100, max: 99, .. }), "{e:?}");
}

#[test]
fn multipart_upload_stores_the_parts_in_order() {
    on_both("multipart_upload_stores_the_parts_in_order", |ep| {
        let c = client(ep, "multipart");
        let parts: Vec<Vec<u8>> = (0..MULTIPART_PARTS_IN_FLIGHT + 2)
            .map(|i| pattern(MIN_PART_BYTES, i as u8))
            .chain([pattern(1234, 99)])
            .collect();
        let mut upload = c.upload("full/data/atoms/big").unwrap();
        for part in &parts {
            upload.put_part(Bytes::from(part.clone())).unwrap();
            assert!(upload.in_flight() <= MULTIPART_PARTS_IN_FLIGHT, "{} parts in flight", upload.in_flight());
        }
        assert_eq!(c.head("full/data/atoms/big").unwrap(), None, "the object appears only when the upload completes");
        upload.finish().unwrap();
        let whole = c.get("full/data/atoms/big", u64::MAX).unwrap();
        assert_eq!(whole.len(), parts.iter().map(Vec::len).sum::<usize>());
        assert!(whole[..] == parts.concat()[..], "the object is not the parts in order");
    });
}

#[test]
fn an_upload_finished_in_the_background_completes_while_the_next_objects_go_up() {
    let server = S3sServer::start();
    let proxy = SlowDownProxy::start(&server.endpoint().url);
    let c = client(&proxy.endpoint_for(server.endpoint()), "background");
    proxy.hold_completions();
    let mut a = c.upload("a").unwrap();
    let parts = [pattern(MIN_PART_BYTES, 1), pattern(1000, 2)];
    for part in &parts {
        a.put_part(Bytes::from(part.clone())).unwrap();
    }
    // Returns although its last part may still be in flight and its completion is held.
    let pending = a.finish_in_background().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.held_completions() == 0 {
        assert!(Instant::now() < deadline, "the completion of `a` never reached the store");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile other objects go up: a put, and the parts of another upload.
    c.put("b", Bytes::from(pattern(100, 3))).unwrap();
    let mut d = c.upload("d").unwrap();
    d.put_part(Bytes::from(pattern(MIN_PART_BYTES, 4))).unwrap();
    assert_eq!(c.head("b").unwrap().map(|i| i.size), Some(100));
    assert_eq!(c.head("a").unwrap(), None, "`a` appears only when its upload completes");
    proxy.release_completions();
    pending.wait(&c).unwrap();
    assert!(c.get("a", u64::MAX).unwrap()[..] == parts.concat()[..], "`a` is not its parts in order");
    d.finish().unwrap();
    assert_eq!(c.head("d").unwrap().map(|i| i.size), Some(MIN_PART_BYTES as u64));
}

/// Puts `n` one-byte objects `data/atoms/NNNNN` and one beside the prefix (`datax`); returns the keys below it.
fn many_objects(c: &ObjectClient, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("data/atoms/{i:05}")).collect();
    for batch in keys.chunks(16) {
        let puts: Vec<_> = batch.iter().map(|k| c.put_pieces(k, vec![Bytes::from_static(b"x")]).unwrap()).collect();
        puts.into_iter().for_each(|p| drop(p.wait(c).unwrap()));
    }
    c.put("datax", Bytes::from_static(b"beside the prefix")).unwrap();
    keys
}

#[test]
fn a_listing_of_more_than_one_page_returns_every_object_below_the_prefix_in_order() {
    on_both("a_listing_of_more_than_one_page_returns_every_object_below_the_prefix_in_order", |ep| {
        let c = client(ep, "pages");
        let keys = many_objects(&c, 2_500);
        let listed: Vec<String> = c.list("data").unwrap().into_iter().map(|o| o.rel).collect();
        assert_eq!(listed, keys, "every object below data/, in key order, and nothing beside it");
    });
}

#[test]
fn a_listing_asks_for_pages_of_list_page_keys() {
    // S3 answers 1,000 keys a page whatever is asked; s3s-fs answers what is asked, so 2,500 objects take one
    // request of LIST_PAGE_KEYS where pages of 1,000 would take 3.
    let server = S3sServer::start();
    let keys = many_objects(&client(server.endpoint(), "pages"), 2_500);
    assert!(keys.len() <= LIST_PAGE_KEYS && keys.len() > 2_000);
    let proxy = SlowDownProxy::start(&server.endpoint().url);
    let through = client(&proxy.endpoint_for(server.endpoint()), "pages");
    assert_eq!(through.list("data").unwrap().len(), keys.len());
    assert_eq!(proxy.forwarded(), 1, "list requests for {} objects", keys.len());
}

#[test]
fn an_aborted_or_refused_upload_leaves_no_object() {
    let server = S3sServer::start();
    let c = client(server.endpoint(), "aborted");
    let mut upload = c.upload("a").unwrap();
    upload.put_part(Bytes::from(pattern(MIN_PART_BYTES, 1))).unwrap();
    upload.abort().unwrap();
    assert_eq!(c.head("a").unwrap(), None);

    let mut upload = c.upload("b").unwrap();
    upload.put_part(Bytes::from(pattern(MIN_PART_BYTES - 1, 1))).unwrap();
    let e = upload.put_part(Bytes::from(pattern(10, 2))).unwrap_err();
    assert!(matches!(e, ObjStoreError::PartTooSmall { part: 1, len, .. } if len == MIN_PART_BYTES - 1), "{e:?}");
    assert!(e.to_string().contains("every part but the last needs at least 5242880"), "{e}");
    drop(upload);
    assert_eq!(c.head("b").unwrap(), None);

    // A small last part, and an upload of no part (an empty object), are fine.
    let mut upload = c.upload("c").unwrap();
    upload.put_part(Bytes::from(pattern(10, 3))).unwrap();
    upload.finish().unwrap();
    assert_eq!(&c.get("c", 10).unwrap()[..], &pattern(10, 3)[..]);
    c.upload("empty").unwrap().finish().unwrap();
    assert_eq!(c.head("empty").unwrap().unwrap().size, 0);
}

#[test]
fn create_only_put_never_overwrites() {
    on_both("create_only_put_never_overwrites", |ep| {
        let c = client(ep, "create");
        c.put_create("full/commit", Bytes::from_static(b"first")).unwrap();
        let e = c.put_create("full/commit", Bytes::from_static(b"second")).unwrap_err();
        assert!(matches!(e, ObjStoreError::AlreadyExists { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "create s3://{}/create/full/commit: it already exists (another writer created it first); nothing was \
                 overwritten",
                ep.bucket
            )
        );
        assert_eq!(&c.get("full/commit", 100).unwrap()[..], b"first");
    });
}

#[test]
fn racing_create_only_puts_exactly_one_wins() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 5;
    on_both("racing_create_only_puts_exactly_one_wins", |ep| {
        let clients: Vec<Arc<ObjectClient>> = (0..WRITERS).map(|_| Arc::new(client(ep, "race"))).collect();
        for round in 0..ROUNDS {
            let key = format!("incr-{round}/commit");
            let barrier = Arc::new(Barrier::new(WRITERS));
            let threads: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(w, c)| {
                    let (c, key, barrier) = (c.clone(), key.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let body = Bytes::from(pattern(64 << 10, w as u8));
                        barrier.wait();
                        c.put_create(&key, body)
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<usize> = (0..WRITERS).filter(|&w| results[w].is_ok()).collect();
            assert_eq!(winners.len(), 1, "round {round} on {}: winners {winners:?}, results {results:?}", ep.url);
            for (w, r) in results.iter().enumerate() {
                if let Err(e) = r {
                    assert!(matches!(e, ObjStoreError::AlreadyExists { .. }), "writer {w}: {e:?}");
                }
            }
            let stored = clients[0].get(&key, u64::MAX).unwrap();
            assert!(stored[..] == pattern(64 << 10, winners[0] as u8)[..], "the stored object is not the winner's");
        }
    });
}

#[test]
fn a_missing_bucket_is_named_with_what_to_do() {
    on_both("a_missing_bucket_is_named_with_what_to_do", |ep| {
        let url = url("s3://no-such-bucket-here/sets");
        let c = ObjectClient::new(url, &config(&ep.url, &ep.access_key_id, &ep.secret_access_key)).unwrap();
        for e in [c.put("state", Bytes::from_static(b"x")).unwrap_err(), c.list("").unwrap_err()] {
            assert!(matches!(e, ObjStoreError::NoSuchBucket { .. }), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("the bucket \"no-such-bucket-here\" does not exist on http://127.0.0.1:"), "{text}");
            assert!(text.contains("create it, or correct the URL"), "{text}");
        }
    });
}

#[test]
fn wrong_credentials_are_denied_and_no_secret_is_shown() {
    // moto does not check signatures: only s3s-fs can refuse a key.
    let server = S3sServer::start();
    let ep = server.endpoint();
    let wrong_secret = "wrong-secret-5d1e77";
    let url = url(&format!("s3://{}/sets", ep.bucket));
    for (key_id, secret) in [(ep.access_key_id.as_str(), wrong_secret), ("unknown-key-id", TEST_SECRET_ACCESS_KEY)] {
        let cfg = config(&ep.url, key_id, secret);
        let c = ObjectClient::new(url.clone(), &cfg).unwrap();
        let e = c.put("state", Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(e, ObjStoreError::Denied { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("access denied by the store") && text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
        let shown = format!("{text} {e:?} {c:?} {cfg:?} {cfg:#?}");
        assert!(!shown.contains(secret), "a secret is shown: {shown}");
    }
    // Right credentials work, and still nothing shows the secret.
    let cfg = config(&ep.url, &ep.access_key_id, &ep.secret_access_key);
    let c = ObjectClient::new(url.clone(), &cfg).unwrap();
    c.put("state", Bytes::from_static(b"x")).unwrap();
    assert!(!format!("{c:?} {cfg:?}").contains(TEST_SECRET_ACCESS_KEY));
}

#[test]
fn missing_credentials_fail_before_any_request() {
    let fault = FaultServer::slow_down();
    let cfg = S3Config { endpoint: Some(fault.url().to_owned()), ..Default::default() };
    let e = ObjectClient::new(url("s3://backups/demo"), &cfg).unwrap_err();
    assert!(matches!(e, ObjStoreError::MissingCredentials { .. }), "{e:?}");
    assert!(e.to_string().starts_with("no credentials for s3://backups/demo: set AWS_ACCESS_KEY_ID"), "{e}");
    assert_eq!(fault.requests(), 0);
}

#[test]
fn plain_http_to_a_remote_endpoint_is_refused_before_any_request() {
    let cfg = config("http://192.0.2.10:9000", "key", "secret");
    let e = ObjectClient::new(url("s3://backups/demo"), &cfg).unwrap_err();
    assert!(matches!(e, ObjStoreError::InsecureEndpoint { .. }), "{e:?}");
    let allowed = S3Config { allow_http: true, ..cfg };
    ObjectClient::new(url("s3://backups/demo"), &allowed).expect("allow_http lets a remote http:// endpoint through");
}

#[test]
fn a_stopped_server_is_unreachable_after_the_retries() {
    let mut server = S3sServer::start();
    let ep = server.endpoint().clone();
    let c = client(&ep, "stopped");
    c.put("state", Bytes::from_static(b"before")).unwrap();
    server.stop();
    let started = Instant::now();
    let e = c.put("state", Bytes::from_static(b"after")).unwrap_err();
    assert!(matches!(e, ObjStoreError::Unreachable { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("cannot reach the store at {}", ep.url)), "{text}");
    assert!(text.contains("check that it is running"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(matches!(c.get("state", 100).unwrap_err(), ObjStoreError::Unreachable { .. }));
}

#[test]
fn throttling_is_retried_then_reported_with_the_stores_message() {
    let fault = FaultServer::slow_down();
    let c = ObjectClient::new(url("s3://backups/demo"), &config(fault.url(), "key", "secret")).unwrap();
    let e = c.put("state", Bytes::from_static(b"x")).unwrap_err();
    assert!(matches!(e, ObjStoreError::Throttled { retries: 2, .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("Please reduce your request rate"), "{text}");
    assert!(text.contains("lower --max-rate or the number of concurrent jobs"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(fault.requests(), 3, "one request and two retries");
}

#[test]
fn stat_and_list_dir_see_prefixes_as_directories() {
    on_both("stat_and_list_dir_see_prefixes_as_directories", |ep| {
        let c = client(ep, "dirs/demo");
        for rel in ["state", "full/control/manifest", "full/data/atoms/1", "full/data/atoms/2", "incr-1/control/x"] {
            c.put(rel, Bytes::from(rel.as_bytes().to_vec())).unwrap();
        }
        assert_eq!(c.stat("state").unwrap(), Some(Entry::Object { size: 5 }));
        assert_eq!(c.stat("full").unwrap(), Some(Entry::Prefix));
        assert_eq!(c.stat("full/data/atoms").unwrap(), Some(Entry::Prefix));
        assert_eq!(c.stat("").unwrap(), Some(Entry::Prefix));
        assert_eq!(c.stat("ful").unwrap(), None, "a name is not a prefix of a longer name");
        assert_eq!(c.stat("nothing").unwrap(), None);
        assert_eq!(client(ep, "dirs/empty").stat("").unwrap(), None);

        let top = c.list_dir("").unwrap();
        assert_eq!(top.prefixes, ["full", "incr-1"]);
        assert_eq!(top.objects.iter().map(|o| (o.rel.as_str(), o.size)).collect::<Vec<_>>(), [("state", 5)]);
        let atoms = c.list_dir("full/data/atoms").unwrap();
        assert!(atoms.prefixes.is_empty());
        assert_eq!(atoms.objects.iter().map(|o| o.rel.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(c.list_dir("nothing").unwrap(), DirListing::default());
    });
}

#[test]
fn open_streams_an_object_chunk_by_chunk() {
    on_both("open_streams_an_object_chunk_by_chunk", |ep| {
        let c = client(ep, "stream");
        let data = pattern(3 << 20, 5);
        c.put("big", Bytes::from(data.clone())).unwrap();
        let (mut reader, size) = c.open("big").unwrap();
        assert_eq!(size, data.len() as u64);
        let mut read = Vec::new();
        let mut buf = vec![0; 100_000];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert!(read == data, "streamed bytes differ from the object's");
        let missing = c.open("missing").unwrap_err();
        assert!(matches!(missing, ObjStoreError::NotFound { .. }), "{missing:?}");
    });
}

#[test]
fn a_server_stopped_mid_stream_is_a_read_error_not_a_short_read() {
    let mut server = S3sServer::start();
    let c = client(server.endpoint(), "cut");
    let size = 64 << 20;
    c.put("big", Bytes::from(pattern(size, 9))).unwrap();
    let (mut reader, _) = c.open("big").unwrap();
    let mut buf = vec![0; 1 << 16];
    assert!(reader.read(&mut buf).unwrap() > 0);
    server.stop();
    let mut total = 0usize;
    let e = loop {
        match reader.read(&mut buf) {
            Ok(0) => panic!("the stream ended after {total} more bytes without an error"),
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    assert!(total < size);
    let text = e.to_string();
    assert!(text.contains(&format!("get s3://{}/cut/big", server.endpoint().bucket)), "{text}");
}

#[test]
fn delete_tree_removes_everything_below_and_nothing_beside() {
    on_both("delete_tree_removes_everything_below_and_nothing_beside", |ep| {
        let c = client(ep, "tree/demo");
        let keep = ["full2/control/manifest", "fullx", "state"];
        for rel in keep {
            c.put(rel, Bytes::from_static(b"keep")).unwrap();
        }
        let mut gone: Vec<String> = Vec::new();
        gone.extend((0..1001).map(|i| format!("full/data/atoms/{i:04}")));
        gone.push("full/control/manifest".into());
        for rel in &gone {
            c.put(rel, Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(c.delete_tree("full").unwrap(), gone.len(), "every object below");
        let left: Vec<String> = c.list("").unwrap().into_iter().map(|o| o.rel).collect();
        assert_eq!(left, keep);
        assert_eq!(c.delete_tree("full").unwrap(), 0);
        assert_eq!(c.delete_tree("").unwrap(), keep.len());
        assert!(c.list("").unwrap().is_empty());
        // Another set's prefix that shares the first letters keeps its objects.
        let sibling = client(ep, "tree/demo2");
        sibling.put("state", Bytes::from_static(b"other")).unwrap();
        assert_eq!(c.delete_tree("").unwrap(), 0);
        assert!(sibling.head("state").unwrap().is_some());
    });
}
