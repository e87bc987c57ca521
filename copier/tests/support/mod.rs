//! What the copier's test files share: a scratch directory on the real disk, the io_uring backend or a reason to
//! skip it, deterministic file contents, and the check of a copied file against the `blake3` crate.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use backset_copier::*;

pub const MIB: usize = 1 << 20;

pub fn scratch() -> tempfile::TempDir {
    // On the target directory's disk (ext4 here), not a tmpfs: O_DIRECT matters.
    // BACKSET_TEST_DIR lets the suite run as a user who cannot write to the target directory (see .ci/run).
    let base =
        std::env::var_os("BACKSET_TEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    tempfile::tempdir_in(base).unwrap()
}

/// An io_uring copier, or `None` (saying why) where the ring cannot be set up. With `BACKSET_REQUIRE_URING=1`, which
/// CI sets (also for its run as `nobody`), that is a failure instead: the only `unsafe` code must have run.
pub fn uring_copier() -> Option<Copier> {
    uring_or_skip(Copier::new(Options { backend: BackendChoice::Uring, ..Options::default() }))
}

/// One copier per backend: io_uring (unless skipped, see [`uring_copier`]) and portable.
pub fn backends() -> Vec<Copier> {
    let mut out: Vec<Copier> = uring_copier().into_iter().collect();
    out.push(Copier::new(Options { backend: BackendChoice::Portable, ..Options::default() }).unwrap());
    out
}

/// One SM copier per backend, of `pool_bytes` each: io_uring (unless skipped, see [`uring_copier`]) and portable.
pub fn sm_backends(pool_bytes: usize) -> Vec<SmCopier> {
    let opts = |backend| Options { backend, pool_bytes, ..Options::default() };
    let mut out: Vec<SmCopier> = uring_or_skip(SmCopier::new(opts(BackendChoice::Uring))).into_iter().collect();
    out.push(SmCopier::new(opts(BackendChoice::Portable)).unwrap());
    out
}

/// `made`, or `None` (saying why) where the ring cannot be set up: a failure with `BACKSET_REQUIRE_URING=1`.
pub fn uring_or_skip<T>(made: Result<T, CopyError>) -> Option<T> {
    match made {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("BACKSET_REQUIRE_URING").is_some_and(|v| v == "1") => {
            panic!("BACKSET_REQUIRE_URING=1 but io_uring cannot be set up: {e}")
        }
        Err(e) => {
            eprintln!("skipping io_uring: {e} (BACKSET_REQUIRE_URING=1 makes this a failure)");
            None
        }
    }
}

/// Deterministic, incompressible-looking bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn expected_chunks(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes.chunks(MIB).map(|c| *blake3::hash(c).as_bytes()).collect()
}

/// Writes one source file per size, `{name}-src-{i}` under `dir`, of `pattern(size, i)`.
pub fn write_sources(dir: &Path, name: &str, sizes: &[usize]) -> Vec<PathBuf> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let src = dir.join(format!("{name}-src-{i}"));
            std::fs::write(&src, pattern(len, i as u64)).unwrap();
            src
        })
        .collect()
}

pub fn check_copy(report: &FileReport, target: &Path, expected: &[u8]) {
    let got = std::fs::read(target).unwrap();
    assert!(got == expected, "{}: {} bytes, expected {}", target.display(), got.len(), expected.len());
    assert_eq!(report.bytes, expected.len() as u64);
    assert_eq!(report.hash, *blake3::hash(expected).as_bytes(), "{}", target.display());
    assert_eq!(report.chunk_hashes, expected_chunks(expected), "{}", target.display());
    check_head(report, expected);
}

/// The report's head is the first `HEAD_BYTES` of `expected` (all of it when shorter).
pub fn check_head(report: &FileReport, expected: &[u8]) {
    let n = expected.len().min(limits::HEAD_BYTES);
    assert!(
        report.head == expected[..n],
        "request {}: head of {} bytes, expected the first {n}",
        report.request,
        report.head.len()
    );
}

/// Whether the tests run as root (who reads any file and has no memlock limit).
pub fn is_root() -> bool {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&uid.stdout).trim() == "0"
}
