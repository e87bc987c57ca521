//! One copier per SM ([`SmCopier`]): jobs running at the same time on one ring and one pool, on a real disk, on both
//! backends (io_uring is skipped, saying so, where the kernel refuses it, unless `BACKSET_REQUIRE_URING=1`, which CI
//! sets, also for its run of this suite as `nobody`).
//!
//! Concurrency is made certain, not hoped for: jobs that must overlap are held at their first read by a gate until
//! all of them are there, or one job is started once another has read its first bytes. Fairness and rates are
//! asserted by completion order and byte counts, never by how long something took. Expected bytes and hashes come
//! from the sources and the `blake3` crate, not from the copier.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use backset_copier::limit::{JobLimiter, SmLimiter};
use backset_copier::*;

mod support;
use support::*;

/// Longest a test waits for a job to reach a point (a deadline, not a pace).
const DEADLINE: Duration = Duration::from_secs(60);

/// A job's files: its requests and the bytes each target must hold.
struct TestJob {
    reqs: Vec<CopyRequest>,
    contents: Vec<Vec<u8>>,
}

impl TestJob {
    /// Sources `{name}-src-{i}` of `pattern(size, seed + i)`, copied to `{name}/dst-{i}` (a directory the job makes).
    fn write(dir: &Path, name: &str, sizes: &[usize], seed: u64) -> Self {
        let mut job = Self { reqs: Vec::new(), contents: Vec::new() };
        for (i, &len) in sizes.iter().enumerate() {
            let src = dir.join(format!("{name}-src-{i}"));
            let bytes = pattern(len, seed + i as u64);
            std::fs::write(&src, &bytes).unwrap();
            job.reqs.push(CopyRequest::file(&src, dir.join(name).join(format!("dst-{i}"))));
            job.contents.push(bytes);
        }
        job
    }

    fn bytes(&self) -> u64 {
        self.contents.iter().map(|c| c.len() as u64).sum()
    }

    fn check(&self, report: &JobReport) {
        assert_eq!(report.files.len(), self.reqs.len());
        for ((r, req), expected) in report.files.iter().zip(&self.reqs).zip(&self.contents) {
            check_copy(r, req.target.as_deref().unwrap(), expected);
        }
    }
}

/// Holds jobs at their first read until `n` of them got there.
struct Gate {
    arrived: AtomicUsize,
    n: usize,
}

impl Gate {
    fn new(n: usize) -> Self {
        Self { arrived: AtomicUsize::new(0), n }
    }
}

/// A job's throttle: the gate, then (if any) the job's own throttle.
struct Gated<'a> {
    gate: &'a Gate,
    here: AtomicBool,
    inner: Option<&'a dyn Throttle>,
}

impl<'a> Gated<'a> {
    fn new(gate: &'a Gate, inner: Option<&'a dyn Throttle>) -> Self {
        Self { gate, here: AtomicBool::new(false), inner }
    }
}

impl Throttle for Gated<'_> {
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        if !self.here.swap(true, Relaxed) {
            self.gate.arrived.fetch_add(1, Relaxed);
        }
        if self.gate.arrived.load(Relaxed) < self.gate.n {
            return Err(Duration::from_millis(1));
        }
        self.inner.map_or(Ok(()), |t| t.try_acquire(bytes))
    }

    fn grain(&self) -> u64 {
        self.inner.map_or(u64::MAX, |t| t.grain())
    }

    fn is_limited(&self) -> bool {
        self.inner.is_some_and(|t| t.is_limited())
    }
}

/// Polls `cond` every millisecond until it holds; fails after [`DEADLINE`].
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// After every job: nothing runs and the whole pool is free.
fn assert_idle(copier: &SmCopier) {
    let stats = copier.stats();
    assert_eq!(stats.jobs_running, 0, "{stats:?}");
    assert_eq!(stats.free_buffers, stats.pool_buffers, "every buffer is back in the pool: {stats:?}");
}

#[test]
fn two_and_three_concurrent_jobs_on_one_sm_copier_complete_with_correct_bytes_and_hashes() {
    let sizes: [Vec<usize>; 3] =
        [vec![9 * MIB + 5, 4097, MIB], (0..30).map(|i| 1000 + i * 3001).collect(), vec![3 * MIB + 17, 1, 2 * MIB]];
    for copier in sm_backends(limits::POOL_BYTES_DEFAULT) {
        let backend = copier.backend();
        let dir = scratch();
        for n in [2, 3] {
            let gate = Gate::new(n);
            let jobs: Vec<TestJob> = (0..n)
                .map(|j| TestJob::write(dir.path(), &format!("of{n}-job{j}"), &sizes[j], 100 * j as u64))
                .collect();
            std::thread::scope(|s| {
                for job in &jobs {
                    let (copier, gate) = (copier.clone(), &gate);
                    s.spawn(move || {
                        let report = copier.copy(&job.reqs, &JobControl::new(), Some(&Gated::new(gate, None))).unwrap();
                        assert_eq!(report.backend, backend);
                        job.check(&report);
                    });
                }
            });
            if backend == Backend::Uring {
                assert!(
                    copier.stats().jobs_on_ring_max >= n as u64,
                    "{n} jobs on the ring at once: {:?}",
                    copier.stats()
                );
            }
        }
        let stats = copier.stats();
        assert_eq!(stats.jobs_started, 5, "{stats:?}");
        assert_idle(&copier);
    }
}

#[test]
fn the_ring_and_the_pool_are_set_up_once_for_every_job_of_the_sm() {
    let Some(copier) = sm_backends(limits::POOL_BYTES_DEFAULT).into_iter().find(|c| c.backend() == Backend::Uring)
    else {
        return;
    };
    let before = copier.stats();
    assert_eq!((before.rings_set_up, before.jobs_started), (1, 0), "{before:?}");
    assert!(before.registered_buffers >= 1, "{before:?}");
    let dir = scratch();
    // Jobs one after the other, then three side by side.
    for j in 0..4 {
        let job = TestJob::write(dir.path(), &format!("seq{j}"), &[2 * MIB + 1, 300], 10 * j);
        let report = copier.copy(&job.reqs, &JobControl::new(), None).unwrap();
        // Every job uses the registered buffers of the one pool: none registers its own.
        assert_eq!(report.registered_buffers, before.registered_buffers);
        job.check(&report);
    }
    let gate = Gate::new(3);
    std::thread::scope(|s| {
        for j in 0..3 {
            let (copier, gate, dir) = (copier.clone(), &gate, dir.path());
            s.spawn(move || {
                let job = TestJob::write(dir, &format!("side{j}"), &[3 * MIB, 5000], 50 + 10 * j);
                let report = copier.copy(&job.reqs, &JobControl::new(), Some(&Gated::new(gate, None))).unwrap();
                assert_eq!(report.registered_buffers, before.registered_buffers);
                job.check(&report);
            });
        }
    });
    let after = copier.stats();
    assert_eq!(after.rings_set_up, 1, "one ring for 7 jobs: {after:?}");
    assert_eq!(
        (after.pool_buffers, after.registered_buffers, after.setup),
        (before.pool_buffers, before.registered_buffers, before.setup),
        "the pool and its registration are the ones made at the start"
    );
    assert_eq!(after.jobs_started, 7);
    assert!(after.jobs_on_ring_max >= 3, "{after:?}");
    assert_idle(&copier);
    eprintln!(
        "setup of the ring and the pool: {:?} ({} of {} buffers registered), once for {} jobs",
        after.setup, after.registered_buffers, after.pool_buffers, after.jobs_started
    );
}

/// The journal copy beside the atom copy: a small job started while a large one runs, both under one SM budget,
/// finishes first. The large job cannot finish in less than its bytes over the budget (the budget starts empty), so
/// the small one finishing first is a matter of order, not of speed.
#[test]
fn a_small_journal_like_job_finishes_while_a_large_job_runs() {
    let _alone = DEVICE_FLUSHES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for copier in sm_backends(limits::POOL_BYTES_DEFAULT) {
        let backend = copier.backend();
        let dir = scratch();
        let sm = SmLimiter::new(Some(16_000_000));
        let large = TestJob::write(dir.path(), "atoms", &[24 * MIB, 8 * MIB], 1);
        // A journal slice: from a record boundary (unaligned) of a segment, up to a durable offset.
        let segment = pattern(3 * MIB, 7);
        let segment_path = dir.path().join("segment");
        std::fs::write(&segment_path, &segment).unwrap();
        let (offset, len) = (4099, 2 * MIB + 5);
        let journal_target = dir.path().join("journal").join("segment");
        let journal = [CopyRequest::range(&segment_path, &journal_target, offset as u64, len as u64)];
        let large_ctl = JobControl::new();
        std::thread::scope(|s| {
            let large_job = s.spawn(|| copier.copy(&large.reqs, &large_ctl, Some(&JobLimiter::new(&sm, None))));
            wait_for("the large job's first bytes", || large_ctl.progress().bytes_read > 0);
            let report = copier.copy(&journal, &JobControl::new(), Some(&JobLimiter::new(&sm, None))).unwrap();
            let p = large_ctl.progress();
            assert!(p.bytes_done < large.bytes(), "{backend:?}: the journal-like job ended after the large one: {p:?}");
            check_copy(&report.files[0], &journal_target, &segment[offset..offset + len]);
            large.check(&large_job.join().unwrap().unwrap());
        });
        assert_idle(&copier);
    }
}

#[test]
fn cancelling_one_job_leaves_the_other_completing_correctly() {
    let _alone = DEVICE_FLUSHES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for copier in sm_backends(limits::POOL_BYTES_DEFAULT) {
        let backend = copier.backend();
        let dir = scratch();
        let sm = SmLimiter::new(Some(32_000_000));
        let cancelled = TestJob::write(dir.path(), "cancelled", &[8 * MIB, 8 * MIB + 3, 4097], 10);
        let other = TestJob::write(dir.path(), "other", &[12 * MIB + 1, 2 * MIB, 100], 20);
        let (cancelled_ctl, other_ctl) = (JobControl::new(), JobControl::new());
        std::thread::scope(|s| {
            let a = s.spawn(|| copier.copy(&cancelled.reqs, &cancelled_ctl, Some(&JobLimiter::new(&sm, None))));
            let b = s.spawn(|| copier.copy(&other.reqs, &other_ctl, Some(&JobLimiter::new(&sm, None))));
            wait_for("both jobs' first bytes", || {
                cancelled_ctl.progress().bytes_done >= MIB as u64 && other_ctl.progress().bytes_done > 0
            });
            cancelled_ctl.cancel();
            let result = a.join().unwrap();
            assert!(matches!(result, Err(CopyError::Cancelled)), "{backend:?}: {result:?}");
            let p = other_ctl.progress();
            assert!(p.bytes_done < other.bytes(), "{backend:?}: the other job was still running: {p:?}");
            assert!(!dir.path().join("cancelled").exists(), "{backend:?}: the cancelled job's targets are removed");
            other.check(&b.join().unwrap().unwrap());
        });
        assert_eq!(other_ctl.progress().bytes_done, other.bytes());
        assert_idle(&copier);
    }
}

/// A job whose completion handler panics (the test-only fault hook) fails alone: a job running beside it on the same
/// ring completes byte for byte, and the failed job's targets are removed.
#[test]
fn a_panic_in_one_job_leaves_the_other_completing_correctly() {
    let Some(copier) = sm_backends(limits::POOL_BYTES_DEFAULT).into_iter().find(|c| c.backend() == Backend::Uring)
    else {
        return;
    };
    let dir = scratch();
    let sm = SmLimiter::new(Some(16_000_000));
    let other = TestJob::write(dir.path(), "other", &[16 * MIB, 3 * MIB + 7], 30);
    let mut sizes = vec![9 * MIB + 5, 6 * MIB];
    sizes.extend((0..60).map(|i| 1000 + i * 3001));
    let failing = TestJob::write(dir.path(), "failing", &sizes, 40);
    let other_ctl = JobControl::new();
    std::thread::scope(|s| {
        let b = s.spawn(|| copier.copy(&other.reqs, &other_ctl, Some(&JobLimiter::new(&sm, None))));
        wait_for("the other job's first bytes", || other_ctl.progress().bytes_done > 0);
        copier.panic_at_completion(40);
        let err = copier.copy(&failing.reqs, &JobControl::new(), None).unwrap_err();
        assert!(
            matches!(err, CopyError::Internal { backend: "uring", .. }) && err.to_string().contains("fault"),
            "{err}"
        );
        let unwound = copier.take_unwound().expect("the failed job reports its end");
        assert_eq!((unwound.in_flight_after, unwound.hashes_outstanding_after), (0, 0), "{unwound:?}");
        assert!(!dir.path().join("failing").exists(), "the failed job's targets are removed");
        let p = other_ctl.progress();
        assert!(p.bytes_done < other.bytes(), "the other job was still running: {p:?}");
        other.check(&b.join().unwrap().unwrap());
    });
    assert_idle(&copier);
}

/// Three jobs on one SM copier under one SM budget: at every moment the bytes they read together stay within what
/// the budget admitted since it was made (it starts empty: `rate x elapsed`), however the jobs are scheduled. Only
/// an upper bound is asserted, so a slow machine cannot break it; the limiter's exactness is proven on a simulated
/// clock in `tests/limit.rs`.
#[test]
fn three_jobs_on_one_sm_copier_never_read_faster_than_the_sm_budget() {
    for copier in sm_backends(limits::POOL_BYTES_DEFAULT) {
        let backend = copier.backend();
        let dir = scratch();
        let jobs: Vec<TestJob> =
            (0..3).map(|j| TestJob::write(dir.path(), &format!("job{j}"), &[8 * MIB], j)).collect();
        let ctls: Vec<JobControl> = (0..3).map(|_| JobControl::new()).collect();
        let rate = 40_000_000u64;
        let since = Instant::now();
        let sm = SmLimiter::new(Some(rate));
        let gate = Gate::new(3);
        let done = AtomicUsize::new(0);
        let mut samples = 0;
        std::thread::scope(|s| {
            for (job, ctl) in jobs.iter().zip(&ctls) {
                let (copier, gate, sm, done) = (copier.clone(), &gate, &sm, &done);
                s.spawn(move || {
                    let limiter = JobLimiter::new(sm, None);
                    let report = copier.copy(&job.reqs, ctl, Some(&Gated::new(gate, Some(&limiter))));
                    done.fetch_add(1, Relaxed);
                    job.check(&report.unwrap());
                });
            }
            while done.load(Relaxed) < 3 {
                let read: u64 = ctls.iter().map(|c| c.progress().bytes_read).sum();
                // Bytes first, then the time: the bound is taken at a moment after the bytes were counted.
                let allowed = rate as f64 * since.elapsed().as_secs_f64();
                assert!(read as f64 <= allowed + 65536.0, "{backend:?}: {read} bytes read, {allowed:.0} allowed");
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(samples > 10, "{backend:?}: only {samples} samples");
        let read: u64 = ctls.iter().map(|c| c.progress().bytes_read).sum();
        assert_eq!(read, 3 * 8 * MIB as u64);
        if backend == Backend::Uring {
            assert!(copier.stats().jobs_on_ring_max >= 3, "{:?}", copier.stats());
        }
        assert_idle(&copier);
    }
}

/// Held by the tests whose throttled jobs may flush the device (a flush in flight holds every read and write on it).
static DEVICE_FLUSHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether the running kernel is at least `major.minor` (from /proc/sys/kernel/osrelease, e.g. "6.18.44-...").
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// The ring defers its task work (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN) on kernels that have it (6.1+), and
/// the fallback a kernel without it gets, a plain ring (forced here), runs concurrent jobs of small and large files
/// to the same bytes and hashes.
#[test]
fn the_ring_defers_its_task_work_where_the_kernel_can_and_a_plain_ring_copies_the_same() {
    let opts = Options { backend: BackendChoice::Uring, ..Options::default() };
    let Some(deferred) = uring_or_skip(SmCopier::new(opts.clone())) else { return };
    let plain = SmCopier::new_without_deferred_task_work(opts).unwrap();
    assert_eq!(deferred.stats().deferred_task_work, kernel_at_least(6, 1), "{:?}", deferred.stats());
    assert!(!plain.stats().deferred_task_work, "the fallback was forced: {:?}", plain.stats());
    let sizes: [Vec<usize>; 2] = [(0..200).map(|i| 16 * 1024 + i % 3).collect(), vec![5 * MIB + 3, 0, 4096]];
    for (name, copier) in [("deferred", deferred), ("plain", plain)] {
        let dir = scratch();
        let gate = Gate::new(2);
        std::thread::scope(|s| {
            for (j, sizes) in sizes.iter().enumerate() {
                let job = TestJob::write(dir.path(), &format!("{name}-job{j}"), sizes, 7 * j as u64);
                let (copier, gate) = (copier.clone(), &gate);
                s.spawn(move || {
                    let report = copier.copy(&job.reqs, &JobControl::new(), Some(&Gated::new(gate, None))).unwrap();
                    assert_eq!(report.backend, Backend::Uring);
                    job.check(&report);
                });
            }
        });
        assert!(copier.stats().jobs_on_ring_max >= 2, "{name}: {:?}", copier.stats());
        assert_idle(&copier);
    }
}
