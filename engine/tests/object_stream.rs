//! A hot copy's data files stored on object storage straight from the copier's buffers (`SetStorage::stream_data`
//! of `ObjectStore`, against `s3s-fs` on loopback): a file larger than a part goes up whole even when the SM's pool
//! is smaller than one part, on both copier backends.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use backset_copier::{BackendChoice, CopyRequest, JobControl, Options, SmCopier};
use backset_engine::set::{ObjectStore, SetStorage};
use backset_objstore::{Location, ObjectClient, S3Config};
use backset_s3test::S3sServer;

const MIB: usize = 1 << 20;

#[test]
fn a_file_larger_than_a_part_streams_whole_through_a_pool_smaller_than_a_part() {
    let server = S3sServer::start();
    let e = server.endpoint().clone();
    let config = S3Config::from_vars(|k| match k {
        "AWS_ENDPOINT_URL" => Some(e.url.clone()),
        "AWS_ACCESS_KEY_ID" => Some(e.access_key_id.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some(e.secret_access_key.clone()),
        "AWS_REGION" => Some("us-east-1".to_owned()),
        _ => None,
    })
    .unwrap();
    let Ok(Location::S3(url)) = Location::parse("s3://backset-test/small-pool") else { panic!("an s3 URL") };
    let store = ObjectStore::new(ObjectClient::new(url, &config).unwrap());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let source = dir.path().join("atom");
    // 20 MiB and a bit: two full 8 MiB parts and a last one, through a pool of 4 buffers (half a part).
    let bytes: Vec<u8> = (0..20 * MIB + 3).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let backends = [BackendChoice::Uring, BackendChoice::Portable];
    for (n, backend) in backends.into_iter().enumerate() {
        let copier = match SmCopier::new(Options { backend, pool_bytes: 4 * MIB, ..Options::default() }) {
            Ok(c) => c,
            Err(err) => {
                assert!(std::env::var_os("BACKSET_REQUIRE_URING").is_none_or(|v| v != "1"), "{err}");
                eprintln!("skipping {backend:?}: {err}");
                continue;
            }
        };
        let id = uuid::Uuid::new_v4();
        let staged = store.stage(id, "full".parse().unwrap()).unwrap();
        let files = [PathBuf::from(format!("data/atoms/{n}"))];
        let reads = [CopyRequest::read(&source)];
        let ctl = JobControl::new();
        let (done_tx, done_rx) = mpsc::channel();
        let report = std::thread::scope(|s| {
            s.spawn(|| {
                let mut copy = |sink: &dyn backset_copier::ChunkSink| copier.stream(&reads, &ctl, None, sink);
                let _ = done_tx.send(store.stream_data(&staged, &files, &ctl, &mut copy));
            });
            match done_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(result) => result,
                Err(_) => {
                    ctl.cancel();
                    panic!("{backend:?}: the stream stalled: the parts being filled hold the whole pool");
                }
            }
        });
        let report = report.unwrap().unwrap();
        assert_eq!(report.files[0].bytes, bytes.len() as u64);
        assert_eq!(report.files[0].hash, *blake3::hash(&bytes).as_bytes());
        let stored = std::fs::read(server.object_file(&format!("small-pool/full/{id}/data/atoms/{n}"))).unwrap();
        assert!(stored == bytes, "{backend:?}: {} bytes stored of {}", stored.len(), bytes.len());
        assert_eq!(copier.stats().free_buffers, copier.stats().pool_buffers, "{backend:?}: every buffer back");
    }
}
