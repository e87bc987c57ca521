//! The copier on a real disk, on both backends: bytes, hashes, direct I/O, ranges, errors, cancellation.
//!
//! Every test runs once per backend (`backends()`); io_uring is skipped, saying so, where the kernel refuses it,
//! unless `BACKSET_REQUIRE_URING=1` (CI sets it) makes that a failure. Expected hashes come from the `blake3` crate
//! over the source bytes, not from the copier.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use backset_copier::*;

mod support;
use support::*;

#[test]
fn sizes_around_every_boundary_copy_exactly() {
    let sizes = [0, 1, 4095, 4096, 4097, MIB - 1, MIB, MIB + 1, 3 * MIB + 17, 100 * MIB];
    for mut copier in backends() {
        let dir = scratch();
        let mut reqs = vec![];
        let mut contents = vec![];
        for (i, &size) in sizes.iter().enumerate() {
            let src = dir.path().join(format!("src/{i}"));
            std::fs::create_dir_all(src.parent().unwrap()).unwrap();
            let bytes = pattern(size, i as u64);
            std::fs::write(&src, &bytes).unwrap();
            reqs.push(CopyRequest::file(&src, dir.path().join(format!("dst/sub/{i}"))));
            contents.push(bytes);
        }
        let ctl = JobControl::new();
        let report = copier.copy(&reqs, &ctl, None).unwrap();
        assert_eq!(report.backend, copier.backend());
        for ((r, req), bytes) in report.files.iter().zip(&reqs).zip(&contents) {
            check_copy(r, req.target.as_deref().unwrap(), bytes);
        }
        let p = ctl.progress();
        assert_eq!((p.files_done, p.files_total), (sizes.len() as u64, sizes.len() as u64));
        assert_eq!(p.bytes_done, sizes.iter().sum::<usize>() as u64);
        assert_eq!(p.bytes_done, p.bytes_total);
        assert_eq!(p.bytes_read, p.bytes_total, "padding read past a file's end is not counted");
    }
}

#[test]
fn direct_io_is_used_on_the_real_disk_with_unaligned_sizes() {
    for mut copier in backends() {
        let dir = scratch();
        let bytes = pattern(5 * MIB + 333, 9);
        let src = dir.path().join("src");
        std::fs::write(&src, &bytes).unwrap();
        let report = copier.copy(&[CopyRequest::file(&src, dir.path().join("dst"))], &JobControl::new(), None).unwrap();
        check_copy(&report.files[0], &dir.path().join("dst"), &bytes);
        // ext4 supports O_DIRECT: both sides must have used it, and the padded tail must be cut off again.
        assert!(report.files[0].direct_source && report.files[0].direct_target, "{:?}", copier.backend());
        assert_eq!((report.direct_sources, report.direct_targets, report.direct_fallbacks), (1, 1, 0));
        assert_eq!(std::fs::metadata(dir.path().join("dst")).unwrap().len(), bytes.len() as u64);
    }
}

#[test]
fn sparse_file_copies_its_bytes() {
    for mut copier in backends() {
        let dir = scratch();
        let src = dir.path().join("sparse");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(8 * MIB as u64 + 5).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"island", 3 * MIB as u64 + 100).unwrap();
        drop(f);
        let expected = std::fs::read(&src).unwrap();
        let report = copier.copy(&[CopyRequest::file(&src, dir.path().join("dst"))], &JobControl::new(), None).unwrap();
        check_copy(&report.files[0], &dir.path().join("dst"), &expected);
    }
}

#[test]
fn byte_ranges_copy_exactly_aligned_or_not() {
    for mut copier in backends() {
        let dir = scratch();
        let bytes = pattern(3 * MIB, 4);
        let src = dir.path().join("segment");
        std::fs::write(&src, &bytes).unwrap();
        let ranges = [(0usize, 64usize), (64, 1000), (4096, 2 * MIB), (777, MIB + 1), (3 * MIB - 10, 10), (5, 0)];
        let reqs: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, &(o, l))| CopyRequest::range(&src, dir.path().join(format!("r{i}")), o as u64, l as u64))
            .collect();
        let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
        for ((r, req), &(o, l)) in report.files.iter().zip(&reqs).zip(&ranges) {
            check_copy(r, req.target.as_deref().unwrap(), &bytes[o..o + l]);
        }
        // An unaligned start is read through the page cache; an aligned one directly.
        assert!(!report.files[1].direct_source && report.files[2].direct_source);
    }
}

#[test]
fn a_range_past_the_end_is_refused_and_leaves_nothing() {
    for mut copier in backends() {
        let dir = scratch();
        std::fs::write(dir.path().join("src"), pattern(1000, 1)).unwrap();
        let req = CopyRequest::range(dir.path().join("src"), dir.path().join("out/dst"), 500, 501);
        let err = copier.copy(&[req], &JobControl::new(), None).unwrap_err();
        assert!(matches!(err, CopyError::SourceShort { expected: 1001, found: 1000, .. }), "{err}");
        assert!(!dir.path().join("out").exists(), "no target or directory is left behind");
    }
}

#[test]
fn a_missing_source_names_the_file_and_removes_earlier_targets() {
    for mut copier in backends() {
        let dir = scratch();
        std::fs::write(dir.path().join("a"), pattern(2 * MIB, 1)).unwrap();
        let missing = dir.path().join("no-such-file");
        let reqs = [
            CopyRequest::file(dir.path().join("a"), dir.path().join("t/a")),
            CopyRequest::file(&missing, dir.path().join("t/b")),
        ];
        let err = copier.copy(&reqs, &JobControl::new(), None).unwrap_err();
        assert_eq!(err.to_string(), format!("open {}: No such file or directory (os error 2)", missing.display()));
        assert!(!dir.path().join("t").exists(), "{:?}: the first target must be removed too", copier.backend());
    }
}

#[test]
fn an_existing_target_is_never_overwritten() {
    for mut copier in backends() {
        let dir = scratch();
        std::fs::write(dir.path().join("src"), b"new").unwrap();
        std::fs::write(dir.path().join("dst"), b"precious").unwrap();
        let err = copier
            .copy(&[CopyRequest::file(dir.path().join("src"), dir.path().join("dst"))], &JobControl::new(), None)
            .unwrap_err();
        assert!(matches!(err, CopyError::TargetExists { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), b"precious");
    }
}

/// A throttle admitting `rate` bytes per second, measured on the real clock (a stand-in for the SM limiter, which
/// has its own tests). It also refuses every first asking of a request for 1 ms, so a job always waits on it, however
/// slowly the disk lets it ask.
struct SlowThrottle {
    start: Instant,
    admitted: AtomicU64,
    rate: u64,
    asked: AtomicU64,
}

impl SlowThrottle {
    fn new(rate: u64) -> Self {
        Self { start: Instant::now(), admitted: AtomicU64::new(0), rate, asked: AtomicU64::new(0) }
    }
}

impl Throttle for SlowThrottle {
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        if self.asked.fetch_add(1, Relaxed).is_multiple_of(2) {
            return Err(Duration::from_millis(1));
        }
        let allowed = (self.start.elapsed().as_secs_f64() * self.rate as f64) as u64 + bytes;
        let admitted = self.admitted.load(Relaxed);
        if admitted + bytes <= allowed {
            self.admitted.fetch_add(bytes, Relaxed);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((admitted + bytes - allowed) as f64 / self.rate as f64))
        }
    }
}

/// Held by the test whose jobs flush the device every `FLUSH_AFTER_BYTES` and by the cancellation test: a flush in
/// flight holds every read and write on the device, and the operations a cancelled job waits out with it.
static DEVICE_FLUSHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn cancellation_stops_within_100ms_and_removes_targets() {
    let _alone = DEVICE_FLUSHES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for mut copier in backends() {
        let dir = scratch();
        let src = dir.path().join("src");
        std::fs::write(&src, pattern(64 * MIB, 2)).unwrap();
        let ctl = JobControl::new();
        let throttle = SlowThrottle::new(8 * MIB as u64);
        let target = dir.path().join("dst");
        let latency = std::thread::scope(|s| {
            let job = s.spawn(|| copier.copy(&[CopyRequest::file(&src, &target)], &ctl, Some(&throttle)));
            while ctl.progress().bytes_done < 2 * MIB as u64 {
                // Poll without taking a core from the copier (two cores here).
                std::thread::sleep(Duration::from_millis(1));
            }
            let asked = Instant::now();
            ctl.cancel();
            let result = job.join().unwrap();
            assert!(matches!(result, Err(CopyError::Cancelled)), "{result:?}");
            asked.elapsed()
        });
        assert!(latency < Duration::from_millis(100), "cancellation took {latency:?}");
        assert!(!target.exists(), "the partial target is removed");
        let p = ctl.progress();
        assert!(p.bytes_done < p.bytes_total && p.waited > Duration::ZERO, "{p:?}");
    }
}

#[test]
fn a_source_renamed_over_during_the_copy_is_copied_as_one_whole_version() {
    for mut copier in backends() {
        let dir = scratch();
        let src = dir.path().join("atom");
        let old = pattern(16 * MIB, 5);
        std::fs::write(&src, &old).unwrap();
        let ctl = JobControl::new();
        let throttle = SlowThrottle::new(32 * MIB as u64);
        let target = dir.path().join("copy");
        let report = std::thread::scope(|s| {
            let job = s.spawn(|| copier.copy(&[CopyRequest::file(&src, &target)], &ctl, Some(&throttle)));
            while ctl.progress().bytes_done == 0 {
                std::thread::yield_now();
            }
            // A checkpointer writes a new version and renames it over the atom while the copy runs.
            let new = dir.path().join("atom.new");
            std::fs::write(&new, pattern(3 * MIB, 6)).unwrap();
            std::fs::rename(&new, &src).unwrap();
            job.join().unwrap().unwrap()
        });
        check_copy(&report.files[0], &target, &old);
    }
}

#[test]
fn many_small_files_copy_exactly() {
    for mut copier in backends() {
        let dir = scratch();
        let reqs: Vec<_> = (0..500)
            .map(|i| {
                let src = dir.path().join(format!("s/{i:04}"));
                std::fs::create_dir_all(src.parent().unwrap()).unwrap();
                std::fs::write(&src, pattern(i * 37 % 20_000, i as u64)).unwrap();
                CopyRequest::file(src, dir.path().join(format!("d/{}/{i:04}", i % 7)))
            })
            .collect();
        let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
        for (r, req) in report.files.iter().zip(&reqs) {
            check_copy(r, req.target.as_deref().unwrap(), &std::fs::read(&req.source).unwrap());
        }
    }
}

#[test]
fn small_targets_are_synced_by_one_syncfs_and_larger_ones_by_an_fsync_each() {
    let edge = limits::BATCH_SYNC_MAX_BYTES as usize;
    for mut copier in backends() {
        let dir = scratch();
        let copy = |copier: &mut Copier, name: &str, sizes: &[usize], target: bool| {
            let reqs: Vec<_> = write_sources(dir.path(), name, sizes)
                .into_iter()
                .enumerate()
                .map(|(i, src)| match target {
                    true => CopyRequest::file(src, dir.path().join(format!("{name}/sub{}/{i}", i % 2))),
                    false => CopyRequest::read(src),
                })
                .collect();
            let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
            for (r, req) in report.files.iter().zip(&reqs) {
                if let Some(t) = &req.target {
                    check_copy(r, t, &std::fs::read(&req.source).unwrap());
                }
            }
            (report.batch_synced, report.synced_file_systems)
        };
        // Up to the limit (one buffer), inclusive: left to the batch, whose one syncfs covers both directories.
        assert_eq!(copy(&mut copier, "small", &[0, 1, 4097, edge, edge + 1], true), (4, 1), "{:?}", copier.backend());
        // One byte over: fsynced one by one, and no file system sync.
        assert_eq!(copy(&mut copier, "large", &[edge + 1, 3 * edge], true), (0, 0));
        // Reading only: nothing to make durable.
        assert_eq!(copy(&mut copier, "read", &[10, edge], false), (0, 0));
    }
}

#[test]
fn full_target_file_system_fails_cleanly() {
    let dir = scratch();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "skipping: cannot mount a 2 MiB tmpfs here (needs root); the full-disk case is untested on this machine"
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    // A file over one buffer is allocated up front, so the allocation fails; files of one buffer or less are not,
    // so their writes fail.
    std::fs::write(dir.path().join("big"), pattern(6 * MIB, 3)).unwrap();
    let small: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("small{i}"))).collect();
    for (i, p) in small.iter().enumerate() {
        std::fs::write(p, pattern(900 << 10, i as u64)).unwrap();
    }
    for mut copier in backends() {
        let target = mnt.join("set/big");
        let err =
            copier.copy(&[CopyRequest::file(dir.path().join("big"), &target)], &JobControl::new(), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("allocate {}: No space left on device", target.display())), "{msg}");
        assert!(!mnt.join("set").exists(), "no partial target is left");

        let reqs: Vec<_> =
            small.iter().enumerate().map(|(i, p)| CopyRequest::file(p, mnt.join(format!("set/{i}")))).collect();
        let err = copier.copy(&reqs, &JobControl::new(), None).unwrap_err();
        let msg = err.to_string();
        let named = reqs.iter().any(|r| msg.starts_with(&format!("write {}: ", r.target.as_ref().unwrap().display())));
        assert!(named && msg.contains("No space left on device"), "{msg}");
        assert!(!mnt.join("set").exists(), "no partial target is left");
    }
}

#[test]
fn a_fifo_source_is_refused_without_hanging() {
    for mut copier in backends() {
        let dir = scratch();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err =
            copier.copy(&[CopyRequest::file(&fifo, dir.path().join("t/x"))], &JobControl::new(), None).unwrap_err();
        assert!(matches!(err, CopyError::BadRequest { .. }), "{err}");
        assert!(err.to_string().contains("not a regular file") && err.to_string().contains("fifo"), "{err}");
        assert!(!dir.path().join("t").exists(), "{:?}: no target is left", copier.backend());
    }
}

#[test]
fn buffers_are_registered_as_far_as_the_memlock_limit_allows() {
    let Some(mut copier) = uring_copier() else { return };
    let dir = scratch();
    std::fs::write(dir.path().join("s"), pattern(3 * MIB, 8)).unwrap();
    let report = copier
        .copy(&[CopyRequest::file(dir.path().join("s"), dir.path().join("d"))], &JobControl::new(), None)
        .unwrap();
    let pool = limits::POOL_BYTES_DEFAULT / limits::BUFFER_BYTES;
    // As root (CAP_IPC_LOCK) the whole pool registers; as a normal user (8 MiB memlock here) a part of it does, and
    // the copy still works with the rest unregistered.
    if is_root() {
        assert_eq!(report.registered_buffers, pool);
    } else {
        assert!(report.registered_buffers < pool, "{}", report.registered_buffers);
    }
    check_copy(&report.files[0], &dir.path().join("d"), &pattern(3 * MIB, 8));
}

#[test]
fn a_permission_error_names_the_file_and_the_operation() {
    if is_root() {
        return eprintln!("skipping: root reads any file; .ci/run runs this suite as `nobody` too");
    }
    for mut copier in backends() {
        let dir = scratch();
        let src = dir.path().join("secret");
        std::fs::write(&src, b"x").unwrap();
        std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let err = copier.copy(&[CopyRequest::file(&src, dir.path().join("d"))], &JobControl::new(), None).unwrap_err();
        assert_eq!(err.to_string(), format!("open {}: Permission denied (os error 13)", src.display()));
        assert!(!dir.path().join("d").exists());
    }
}

/// Regression: a relative target whose parent is the current directory made the directory fsync fail on "".
#[test]
fn relative_target_paths_work() {
    let dir = scratch();
    std::fs::write(dir.path().join("src"), b"abc").unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    for (i, mut copier) in backends().into_iter().enumerate() {
        let target = format!("out{i}");
        let report = copier.copy(&[CopyRequest::file("src", &target)], &JobControl::new(), None).unwrap();
        check_copy(&report.files[0], Path::new(&target), b"abc");
    }
}

/// Three jobs of one SM, each on its own copier, share the SM budget: together they cannot read faster than it.
/// Only the lower bound on time is asserted (a slow machine cannot break it); the limiter's exactness is proven on a
/// simulated clock in `tests/limit.rs`.
#[test]
fn three_jobs_sharing_one_sm_limiter_never_exceed_its_budget() {
    use backset_copier::limit::{JobLimiter, SmLimiter};
    for backend in [BackendChoice::Uring, BackendChoice::Portable] {
        if backend == BackendChoice::Uring && uring_copier().is_none() {
            continue;
        }
        let dir = scratch();
        let rate = 40_000_000u64;
        let sm = SmLimiter::new(Some(rate));
        let per_job = 8 * MIB;
        let started = Instant::now();
        std::thread::scope(|s| {
            for j in 0..3 {
                let (dir, sm) = (dir.path(), &sm);
                s.spawn(move || {
                    let src = dir.join(format!("src{j}"));
                    std::fs::write(&src, pattern(per_job, j)).unwrap();
                    let mut copier = Copier::new(Options { backend, ..Options::default() }).unwrap();
                    let job = JobLimiter::new(sm, None);
                    let report = copier
                        .copy(&[CopyRequest::file(&src, dir.join(format!("dst{j}")))], &JobControl::new(), Some(&job))
                        .unwrap();
                    check_copy(&report.files[0], &dir.join(format!("dst{j}")), &pattern(per_job, j));
                });
            }
        });
        // The budget starts empty, so 24 MiB take at least 24 MiB / 40 MB/s = 0.63 s whatever the scheduling.
        let floor = Duration::from_secs_f64((3 * per_job) as f64 / rate as f64);
        assert!(
            started.elapsed() >= floor,
            "{backend:?}: 3 jobs read 24 MiB in {:?}, faster than the budget allows",
            started.elapsed()
        );
    }
}

#[test]
fn a_throttled_job_flushes_after_every_flush_after_bytes_and_an_unthrottled_one_never() {
    let _alone = DEVICE_FLUSHES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    use backset_copier::limit::{JobLimiter, SmLimiter};
    let after = limits::FLUSH_AFTER_BYTES as usize;
    // 3.25 x FLUSH_AFTER_BYTES in two files: the job counts across its files.
    let sizes = [after * 5 / 2, after * 3 / 4];
    // Limited (so it flushes), but fast enough not to slow the test.
    let fast = SmLimiter::new(Some(4_000_000_000));
    let unlimited = SmLimiter::new(None);
    for mut copier in backends() {
        let dir = scratch();
        let sources = write_sources(dir.path(), "job", &sizes);
        let backend = copier.backend();
        let mut copy = |name: &str, throttle: Option<&dyn Throttle>| {
            let reqs: Vec<_> = sources
                .iter()
                .map(|s| CopyRequest::file(s, dir.path().join(name).join(s.file_name().unwrap())))
                .collect();
            let report = copier.copy(&reqs, &JobControl::new(), throttle).unwrap();
            for (r, req) in report.files.iter().zip(&reqs) {
                check_copy(r, req.target.as_deref().unwrap(), &std::fs::read(&req.source).unwrap());
            }
            report.flushes
        };
        let flushes = copy("throttled", Some(&JobLimiter::new(&fast, None)));
        match backend {
            // Each thread flushes when its write takes the job past another FLUSH_AFTER_BYTES.
            Backend::Portable => assert_eq!(flushes, 3),
            // At most one flush in flight: one due while another runs waits for the next write, which may not come.
            Backend::Uring => assert!((1..=3).contains(&flushes), "{flushes} flushes"),
        }
        assert_eq!(copy("no-throttle", None), 0, "{backend:?}");
        assert_eq!(copy("unlimited", Some(&JobLimiter::new(&unlimited, None))), 0, "{backend:?}");
    }
}

/// Bytes of `path` in the page cache, from util-linux's `fincore`.
fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore").args(["-b", "-n", "-r", "-o", "RES"]).arg(path).output().unwrap();
    assert!(out.status.success(), "fincore {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[test]
fn a_copy_leaves_the_page_cache_as_it_found_it() {
    // The running database's pages must stay in the page cache: a direct-I/O copy neither evicts the source's cached
    // pages nor caches any page of its own (which, under memory pressure, would push the database's out).
    for mut copier in backends() {
        let dir = scratch();
        let (hot, cold) = (dir.path().join("hot"), dir.path().join("cold"));
        let (hot_bytes, cold_bytes) = (pattern(8 * MIB + 4097, 5), pattern(8 * MIB + 4097, 6));
        std::fs::write(&hot, &hot_bytes).unwrap();
        std::fs::write(&cold, &cold_bytes).unwrap();
        std::fs::File::open(&cold).unwrap().sync_all().unwrap();
        let dropped = std::process::Command::new("dd")
            .arg(format!("if={}", cold.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .unwrap();
        assert!(dropped.success());
        assert_eq!(cached_bytes(&cold), 0, "the cold source starts out of the cache");
        // The database has read all of `hot` (it was just written, so it is cached anyway; read it to be sure).
        assert!(std::fs::read(&hot).unwrap() == hot_bytes);
        let hot_cached = cached_bytes(&hot);
        assert_eq!(hot_cached, (8 * MIB + 4097).next_multiple_of(4096) as u64, "the hot source is all cached");

        let reqs = [
            CopyRequest::file(&hot, dir.path().join("set/hot")),
            CopyRequest::file(&cold, dir.path().join("set/cold")),
        ];
        let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
        for r in &report.files {
            assert!(r.direct_source && r.direct_target, "{:?}: direct I/O on the real disk", copier.backend());
        }
        for req in &reqs {
            let t = req.target.as_deref().unwrap();
            assert_eq!(cached_bytes(t), 0, "{:?}: the copy cached none of {}", copier.backend(), t.display());
        }
        assert_eq!(cached_bytes(&cold), 0, "{:?}: reading the cold source cached nothing", copier.backend());
        assert_eq!(cached_bytes(&hot), hot_cached, "{:?}: the hot source is still all cached", copier.backend());
        check_copy(&report.files[0], &dir.path().join("set/hot"), &hot_bytes);
        check_copy(&report.files[1], &dir.path().join("set/cold"), &cold_bytes);
    }
}

/// A throttle that admits everything at once, asks for pieces of `grain` bytes and records what it was asked.
struct Recorder {
    grain: u64,
    asked: std::sync::Mutex<Vec<u64>>,
}

impl Throttle for Recorder {
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        self.asked.lock().unwrap().push(bytes);
        Ok(())
    }

    fn grain(&self) -> u64 {
        self.grain
    }
}

#[test]
fn a_throttle_with_a_small_grain_gets_reads_in_pieces_that_reassemble_exactly() {
    // Sizes around chunk and page boundaries, and an unaligned range, with pieces of 3 pages: a 1 MiB chunk is read
    // in 22 pieces, the last padded for direct I/O.
    for mut copier in backends() {
        let dir = scratch();
        let sizes = [1, 4096, 12289, MIB - 1, MIB, 2 * MIB + 5000];
        let mut reqs = vec![];
        let mut contents = vec![];
        for (i, &size) in sizes.iter().enumerate() {
            let src = dir.path().join(format!("s{i}"));
            let bytes = pattern(size, 40 + i as u64);
            std::fs::write(&src, &bytes).unwrap();
            reqs.push(CopyRequest::file(&src, dir.path().join(format!("t/{i}"))));
            contents.push(bytes);
        }
        let whole = pattern(3 * MIB, 99);
        std::fs::write(dir.path().join("r"), &whole).unwrap();
        reqs.push(CopyRequest::range(dir.path().join("r"), dir.path().join("t/r"), 777, 2 * MIB as u64));
        contents.push(whole[777..777 + 2 * MIB].to_vec());
        let grain = 3 * 4096;
        let recorder = Recorder { grain, asked: Default::default() };
        let report = copier.copy(&reqs, &JobControl::new(), Some(&recorder)).unwrap();
        for ((r, req), bytes) in report.files.iter().zip(&reqs).zip(&contents) {
            check_copy(r, req.target.as_deref().unwrap(), bytes);
        }
        let asked = recorder.asked.into_inner().unwrap();
        assert!(asked.iter().all(|&b| b > 0 && b <= grain), "{:?}: a request above the grain", copier.backend());
        let total: usize = contents.iter().map(Vec::len).sum();
        assert_eq!(asked.iter().sum::<u64>(), total as u64, "every byte is admitted exactly once");
        let pieces_per_chunk = MIB.div_ceil(grain as usize);
        assert!(asked.len() >= 4 * pieces_per_chunk, "{} requests", asked.len());
    }
}

/// A throttle that admits everything, in pieces of `grain` bytes, and records at each admission how far the admitted
/// bytes ran ahead of the bytes read.
struct AheadRecorder {
    grain: u64,
    ctl: JobControl,
    admitted: AtomicU64,
    most_ahead: AtomicU64,
}

impl Throttle for AheadRecorder {
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        let before = self.admitted.fetch_add(bytes, Relaxed);
        self.most_ahead.fetch_max(before - self.ctl.progress().bytes_read.min(before), Relaxed);
        Ok(())
    }

    fn grain(&self) -> u64 {
        self.grain
    }
}

#[test]
fn a_throttled_file_queues_its_next_pieces_while_earlier_ones_are_still_reading() {
    // One file read in pieces of one page: the ring backend queues each piece as soon as the throttle admits it, so a
    // piece stalled in the device (a flush) does not hold back the budget of the next ones. Reading one piece at a
    // time per file, admissions could never run more than one piece ahead of the reads.
    let Some(mut copier) = uring_copier() else { return };
    let dir = scratch();
    let bytes = pattern(3 * MIB + 123, 77);
    std::fs::write(dir.path().join("s"), &bytes).unwrap();
    let throttle = AheadRecorder {
        grain: 4096,
        ctl: JobControl::new(),
        admitted: Default::default(),
        most_ahead: Default::default(),
    };
    let req = CopyRequest::file(dir.path().join("s"), dir.path().join("t"));
    let report = copier.copy(std::slice::from_ref(&req), &throttle.ctl, Some(&throttle)).unwrap();
    check_copy(&report.files[0], &dir.path().join("t"), &bytes);
    let ahead = throttle.most_ahead.into_inner();
    assert!(ahead > 4 * 4096, "admissions ran at most {ahead} bytes ahead of the reads: one piece at a time");
}

#[test]
fn read_only_requests_hash_without_writing() {
    for mut copier in backends() {
        let dir = scratch();
        let sizes = [0, 1, 4097, MIB, 5 * MIB + 3];
        let mut reqs = vec![];
        for (i, &size) in sizes.iter().enumerate() {
            let src = dir.path().join(format!("f{i}"));
            std::fs::write(&src, pattern(size, i as u64 + 20)).unwrap();
            reqs.push(CopyRequest::read(&src));
        }
        // A copy in the same job works beside the reads.
        reqs.push(CopyRequest::file(dir.path().join("f4"), dir.path().join("copy")));
        let ctl = JobControl::new();
        let report = copier.copy(&reqs, &ctl, None).unwrap();
        for (i, &size) in sizes.iter().enumerate() {
            let expected = pattern(size, i as u64 + 20);
            assert_eq!(report.files[i].hash, *blake3::hash(&expected).as_bytes(), "{:?} file {i}", copier.backend());
            assert_eq!(report.files[i].chunk_hashes, expected_chunks(&expected));
            assert!(!report.files[i].direct_target);
        }
        check_copy(&report.files[5], &dir.path().join("copy"), &pattern(5 * MIB + 3, 24));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), sizes.len() + 1, "only the one copy was written: {names:?}");
        assert_eq!(ctl.progress().bytes_done, sizes.iter().sum::<usize>() as u64 + (5 * MIB + 3) as u64);
    }
}

/// Each file's report carries the first `HEAD_BYTES` it read (all of a shorter file, none of an empty one, the start of
/// the range for a ranged request), for copies and read-only requests, hashing on or off: what a restore and a check
/// parse the atom headers from instead of reading each file again. (`check_copy` checks the head of every copy of the
/// other tests too, throttled reads in pieces among them.)
#[test]
fn each_report_carries_the_first_bytes_read_of_its_file_or_range() {
    let h = limits::HEAD_BYTES;
    for hash in [true, false] {
        let opts = |backend| Options { backend, hash, ..Options::default() };
        let mut copiers: Vec<Copier> =
            uring_copier().map(|_| Copier::new(opts(BackendChoice::Uring)).unwrap()).into_iter().collect();
        copiers.push(Copier::new(opts(BackendChoice::Portable)).unwrap());
        for mut copier in copiers {
            let dir = scratch();
            let sizes = [0, 1, h - 1, h, h + 1, 4097, 2 * MIB + 5];
            let srcs = write_sources(dir.path(), "f", &sizes);
            let contents: Vec<Vec<u8>> = srcs.iter().map(|s| std::fs::read(s).unwrap()).collect();
            let mut reqs = vec![];
            let mut expected: Vec<&[u8]> = vec![];
            for (i, src) in srcs.iter().enumerate() {
                reqs.push(CopyRequest::file(src, dir.path().join(format!("copy/{i}"))));
                expected.push(&contents[i]);
                reqs.push(CopyRequest::read(src));
                expected.push(&contents[i]);
            }
            // Ranges: aligned and not, shorter than a head, from the middle of a chunk and across chunks.
            let big = &contents[sizes.len() - 1];
            for (i, (o, l)) in [(0, 10), (777, 50), (777, 4000), (4096, MIB + 100), (MIB - 3, 8), (2 * MIB + 5, 0)]
                .into_iter()
                .enumerate()
            {
                reqs.push(CopyRequest::range(
                    srcs.last().unwrap(),
                    dir.path().join(format!("range/{i}")),
                    o as u64,
                    l as u64,
                ));
                expected.push(&big[o..o + l]);
                let source = srcs.last().unwrap().clone();
                reqs.push(CopyRequest { source, target: None, offset: o as u64, len: Some(l as u64) });
                expected.push(&big[o..o + l]);
            }
            let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
            assert_eq!(report.files.len(), reqs.len());
            for (r, bytes) in report.files.iter().zip(&expected) {
                assert_eq!(r.bytes, bytes.len() as u64, "{:?} request {}", copier.backend(), r.request);
                check_head(r, bytes);
            }
        }
    }
}

/// The io_uring backend's guard. A completion handler panics mid-job (the test-only fault hook: feature
/// `fault-injection`, which only this crate's tests turn on): the panic unwinds only after every operation the kernel
/// still owned completed, so no path, `statx` buffer or pool buffer it may write to was freed under it; the job
/// returns an internal error and leaves no target; and the same copier, with its whole pool, then copies byte for
/// byte. Panics at the first completion (opens and creates in flight), among the setups and in the middle of the
/// reads and writes.
#[test]
fn a_panic_in_a_completion_handler_waits_out_the_ring_and_leaves_the_copier_usable() {
    let Some(mut copier) = uring_copier() else { return };
    let dir = scratch();
    // Large files keep reads and writes in flight; many small ones keep opens, creates and `statx` in flight.
    let mut sizes = vec![9 * MIB + 5, 6 * MIB, 4 * MIB + 4097];
    sizes.extend((0..60).map(|i| 1000 + i * 3001));
    let sources = write_sources(dir.path(), "src", &sizes);
    let requests = |name: &str| -> Vec<CopyRequest> {
        sources.iter().map(|s| CopyRequest::file(s, dir.path().join(name).join(s.file_name().unwrap()))).collect()
    };
    // Which operations are in flight at a given completion depends on the kernel's timing (and on how much of the
    // pool could be registered: less under a normal user's memlock limit): each phase tries successive completions
    // until one comes with operations in flight, checking the guard at every try.
    for phase in [1, 40, 300] {
        let mut proven = None;
        for at in phase..phase + 16 {
            copier.panic_at_completion(at);
            let failed = format!("failed-at-{at}");
            let err = copier.copy(&requests(&failed), &JobControl::new(), None).unwrap_err();
            assert!(matches!(err, CopyError::Internal { backend: "uring", .. }), "{err}");
            assert!(err.to_string().contains("fault injection"), "{err}");
            let unwound = copier.take_unwound().expect("the guard ran while the panic unwound");
            assert_eq!(unwound.in_flight_after, 0, "completion {at}: the guard waited out every operation");
            assert_eq!(unwound.hashes_outstanding_after, 0, "completion {at}: and every buffer the hashing thread had");
            let (free, count) = copier.free_buffers();
            assert_eq!(free, count, "completion {at}: the whole pool is free again");
            assert!(!dir.path().join(&failed).exists(), "completion {at}: the failed job's targets are removed");
            if unwound.in_flight > 0 {
                proven = Some(at);
                break;
            }
        }
        let at = proven.unwrap_or_else(|| {
            panic!("completions {phase}..{}: nothing was in flight when the panic came, nothing proven", phase + 16)
        });
        let copied = format!("after-{at}");
        let reqs = requests(&copied);
        let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
        assert_eq!(copier.take_unwound(), None);
        for (r, req) in report.files.iter().zip(&reqs) {
            check_copy(r, req.target.as_deref().unwrap(), &std::fs::read(&req.source).unwrap());
        }
    }
}

/// Targets after the first ones of a directory are created with O_DIRECT, or without, by the verdict of the first one
/// stated there, and not stated themselves: 600 small files into one directory and 3 into another take one `statx`
/// per source and at most one per target created before the first target of its directory was stated (at most
/// `MAX_OPEN_FILES` are open at once), not one per target; every target of a directory gets the same verdict.
#[test]
fn targets_after_the_first_of_a_directory_are_not_stated() {
    let Some(mut copier) = uring_copier() else { return };
    let dir = scratch();
    let sizes: Vec<usize> = (0..603).map(|i| 16 * 1024 + i % 5).collect();
    let sources = write_sources(dir.path(), "many", &sizes);
    let reqs: Vec<CopyRequest> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let sub = if i < 600 { "one" } else { "other" };
            CopyRequest::file(src, dir.path().join(sub).join(format!("dst-{i}")))
        })
        .collect();
    let report = copier.copy(&reqs, &JobControl::new(), None).unwrap();
    for ((r, req), &len) in report.files.iter().zip(&reqs).zip(&sizes) {
        check_copy(r, req.target.as_deref().unwrap(), &pattern(len, r.request as u64));
    }
    let n = reqs.len() as u64;
    let targets_stated = copier.stats().statx_ops - n;
    assert!(
        (2..=limits::MAX_OPEN_FILES as u64 + 3).contains(&targets_stated),
        "{targets_stated} targets stated of {n} (the first of each directory at least)"
    );
    assert!(report.direct_targets == 0 || report.direct_targets == n, "{report:?}");
}
