//! Streaming jobs (`SmCopier::stream`): each buffer read and hashed is lent to a consumer in file order, stays out of
//! the pool while the consumer holds it (so the pool bounds both and the reads wait for the consumer), and is never
//! reused by the copier before the consumer drops it, whatever the job did meanwhile (failed, was cancelled, or its
//! copier is gone).

mod support;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use backset_copier::*;
use support::*;

/// Collects every chunk of a streaming job (on this thread) while the job runs on another; returns the job's
/// result and each request's bytes, put together in the order the chunks came.
fn stream_all(copier: &SmCopier, reqs: &[CopyRequest]) -> (Result<JobReport, CopyError>, BTreeMap<usize, Vec<u8>>) {
    let (tx, rx) = mpsc::channel::<Chunk>();
    std::thread::scope(|s| {
        let job = s.spawn(move || copier.stream(reqs, &JobControl::new(), None, &tx));
        let mut files: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for chunk in rx {
            let file = files.entry(chunk.request()).or_default();
            assert_eq!(chunk.offset(), file.len() as u64, "request {}: chunks out of order", chunk.request());
            file.extend_from_slice(chunk.bytes());
            assert_eq!(chunk.is_last(), file.len() as u64 == chunk.file_len());
        }
        (job.join().unwrap(), files)
    })
}

#[test]
fn every_byte_comes_in_order_with_the_hashes_of_a_copy() {
    let dir = scratch();
    let sizes = [0, 1, 4095, 4096 + 3, MIB, 3 * MIB + 5, 9 * MIB];
    let sources = write_sources(dir.path(), "s", &sizes);
    let mut reqs: Vec<CopyRequest> = sources.iter().map(CopyRequest::read).collect();
    // A range too, aligned at neither end.
    reqs.push(CopyRequest { source: sources[6].clone(), target: None, offset: 4097, len: Some(2 * MIB as u64 + 11) });
    for copier in sm_backends(8 * MIB) {
        let (job, files) = stream_all(&copier, &reqs);
        let report = job.unwrap_or_else(|e| panic!("{:?}: {e}", copier.backend()));
        for (i, req) in reqs.iter().enumerate() {
            let all = std::fs::read(&req.source).unwrap();
            let start = req.offset as usize;
            let expected = &all[start..req.len.map_or(all.len(), |l| start + l as usize)];
            let got = files.get(&i).map_or(&[][..], Vec::as_slice);
            assert!(
                got == expected,
                "{:?} request {i}: {} bytes, expected {}",
                copier.backend(),
                got.len(),
                expected.len()
            );
            let r = &report.files[i];
            assert_eq!(r.bytes, expected.len() as u64);
            assert_eq!(r.hash, *blake3::hash(expected).as_bytes(), "{:?} request {i}", copier.backend());
            assert_eq!(r.chunk_hashes, expected_chunks(expected));
            check_head(r, expected);
        }
        assert!(!files.contains_key(&0), "an empty file gives no chunk");
        assert_eq!(
            copier.stats().free_buffers,
            copier.stats().pool_buffers,
            "every buffer back once the chunks dropped"
        );
    }
}

#[test]
fn chunks_held_by_the_consumer_hold_the_reads_back_within_the_pool() {
    let dir = scratch();
    let pool = 4 * MIB;
    let sources = write_sources(dir.path(), "big", &[24 * MIB]);
    let reqs = [CopyRequest::read(&sources[0])];
    for copier in sm_backends(pool) {
        let (tx, rx) = mpsc::channel::<Chunk>();
        let ctl = JobControl::new();
        std::thread::scope(|s| {
            let (c, r, k) = (&copier, &reqs, &ctl);
            let job = s.spawn(move || c.stream(r, k, None, &tx));
            // Hold every chunk: once the consumer holds the whole pool, nothing more is read.
            let mut held = Vec::new();
            while held.len() < pool / MIB {
                held.push(rx.recv_timeout(Duration::from_secs(60)).expect("a chunk"));
            }
            assert_eq!(copier.stats().free_buffers, 0, "{:?}: the held chunks are out of the pool", copier.backend());
            let read = ctl.progress().bytes_read;
            assert!(read <= pool as u64, "{:?}: read {read} bytes with the whole pool held", copier.backend());
            assert!(rx.try_recv().is_err(), "no chunk beyond the pool");
            // Let go: the job reads the rest and every byte comes, in order.
            let mut got: Vec<u8> = held.iter().flat_map(|c| c.bytes().to_vec()).collect();
            drop(held);
            for chunk in rx.iter() {
                assert_eq!(chunk.offset(), got.len() as u64);
                got.extend_from_slice(chunk.bytes());
            }
            job.join().unwrap().unwrap();
            assert!(got == std::fs::read(&sources[0]).unwrap(), "{:?}: the file streamed whole", copier.backend());
        });
    }
}

#[test]
fn a_held_chunk_is_never_reused_after_a_cancel_by_later_jobs_or_after_its_copier_is_gone() {
    let dir = scratch();
    let sources = write_sources(dir.path(), "c", &[16 * MIB, 16 * MIB]);
    for copier in sm_backends(4 * MIB) {
        let backend = copier.backend();
        let (tx, rx) = mpsc::channel::<Chunk>();
        let ctl = JobControl::new();
        let first = [CopyRequest::read(&sources[0])];
        let held: Vec<Chunk> = std::thread::scope(|s| {
            let job = s.spawn(|| copier.stream(&first, &ctl, None, &tx));
            let held: Vec<Chunk> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(60)).unwrap()).collect();
            ctl.cancel();
            let result = job.join().unwrap();
            assert!(matches!(result, Err(CopyError::Cancelled)), "{backend:?}: {result:?}");
            held
        });
        drop(rx);
        let original = std::fs::read(&sources[0]).unwrap();
        let snapshot: Vec<Vec<u8>> = held.iter().map(|c| c.bytes().to_vec()).collect();
        // The cancelled job's end gave back its own buffers, not the two lent ones.
        assert_eq!(copier.stats().free_buffers, copier.stats().pool_buffers - held.len(), "{backend:?}");
        // Another job runs through the rest of the pool again and again, reading other bytes.
        let (tx2, rx2) = mpsc::channel::<Chunk>();
        let second = [CopyRequest::read(&sources[1])];
        std::thread::scope(|s| {
            let job = s.spawn(|| copier.stream(&second, &JobControl::new(), None, &tx2));
            for chunk in rx2.iter().take(16) {
                drop(chunk);
            }
            job.join().unwrap().unwrap();
        });
        drop(tx2);
        for (c, bytes) in held.iter().zip(&snapshot) {
            let at = c.offset() as usize;
            assert!(c.bytes() == bytes.as_slice(), "{backend:?}: a held chunk changed under its consumer");
            assert!(c.bytes() == &original[at..at + c.len()], "{backend:?}: chunk at {at}");
        }
        // The copier goes; the chunks still read their bytes, and give their buffers back to the pool they keep.
        drop(copier);
        for (c, bytes) in held.iter().zip(&snapshot) {
            assert!(c.bytes() == bytes.as_slice(), "{backend:?}: after the copier is gone");
        }
        drop(held);
    }
}

#[test]
fn a_streaming_request_with_a_target_is_refused() {
    let dir = scratch();
    let sources = write_sources(dir.path(), "t", &[10]);
    let target = dir.path().join("t-dst");
    for copier in sm_backends(4 * MIB) {
        let (tx, _rx) = mpsc::channel::<Chunk>();
        let e = copier.stream(&[CopyRequest::file(&sources[0], &target)], &JobControl::new(), None, &tx).unwrap_err();
        assert!(matches!(e, CopyError::BadRequest { .. }), "{e}");
        assert!(e.to_string().contains("no target"), "{e}");
        assert!(!target.exists());
    }
}
