//! The rate limiter's arithmetic on a simulated clock (exact, no sleeping), sharing, fairness, rate changes, and
//! cancellation on the real clock.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use backset_copier::limit::*;
use governor::clock::FakeRelativeClock;

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;

/// Drives `jobs` (request sizes) for `seconds` of simulated time in steps of `step`, each job asking as soon as it
/// may; returns the bytes each job got admitted and, per simulated second, the bytes admitted in all.
fn drive(
    clock: &FakeRelativeClock,
    jobs: &[(&JobLimiter<FakeRelativeClock>, u64)],
    seconds: u64,
    step: Duration,
) -> (Vec<u64>, Vec<u64>) {
    let mut got = vec![0u64; jobs.len()];
    let mut per_second = vec![0u64; seconds as usize];
    let steps = seconds * 1_000_000_000 / step.as_nanos() as u64;
    for s in 0..steps {
        let second = (s * step.as_nanos() as u64 / 1_000_000_000) as usize;
        // Each job asks until refused at this instant.
        let mut progress = true;
        while progress {
            progress = false;
            for (i, (job, req)) in jobs.iter().enumerate() {
                if job.try_acquire(*req).is_ok() {
                    got[i] += req;
                    per_second[second] += req;
                    progress = true;
                }
            }
        }
        clock.advance(step);
    }
    (got, per_second)
}

#[test]
fn simulated_rates_are_exact_over_10s_and_within_5_percent_each_second() {
    for rate in [
        5 * MIB,
        50 * MIB,
        100 * MIB,
        mb_per_sec(200),
        mb_per_sec(500),
        mb_per_sec(1000),
        mb_per_sec(10_000),
    ] {
        for req in [64 * KIB, MIB] {
            let clock = FakeRelativeClock::default();
            let sm = SmLimiter::with_clock(Some(rate), clock.clone());
            let job = JobLimiter::new(&sm, None);
            let (got, per_second) = drive(&clock, &[(&job, req)], 10, Duration::from_micros(100));
            let expected = rate * 10;
            // Starting empty, the admitted bytes never exceed rate * t + one request, and lag by at most two
            // requests (the first one's wait, the last one cut by the window), one cell, and one simulated step.
            let slack = 2 * req + cell_bytes(rate) + rate / 10_000;
            assert!(
                got[0] <= expected + req && got[0] + slack >= expected,
                "rate {rate} req {req}: {} vs {expected}",
                got[0]
            );
            // Within 2% over 10 s wherever one request is under 2% of 10 s of traffic; at 5 MiB/s with 1 MiB
            // requests one request is exactly 2%, the granularity of the reads themselves.
            if req * 50 < expected {
                assert!(
                    (got[0] as f64 / expected as f64 - 1.0).abs() < 0.02,
                    "rate {rate} req {req}: {} over 10 s",
                    got[0]
                );
            }
            for (s, &b) in per_second.iter().enumerate() {
                let err = b as f64 / rate as f64 - 1.0;
                // At 5 MiB/s a second holds only 5 requests of 1 MiB: granularity alone is one request.
                let bound = 0.05f64.max((req as f64 + cell_bytes(rate) as f64) / rate as f64);
                assert!(
                    err.abs() <= bound,
                    "rate {rate} req {req}: second {s} admitted {b} ({:+.2}%)",
                    err * 100.0
                );
            }
        }
    }
}

#[test]
fn cell_size_keeps_nanosecond_truncation_under_a_hundredth_of_a_percent() {
    for rate in [
        1,
        1000,
        mb_per_sec(5),
        100 * MIB,
        mb_per_sec(1000),
        mb_per_sec(10_000),
        mb_per_sec(100_000),
    ] {
        let cell = cell_bytes(rate);
        assert!(cell >= CELL_BYTES_MIN);
        let period_ns = cell as f64 * 1e9 / rate as f64;
        let error = (period_ns - period_ns.floor()) / period_ns;
        assert!(
            error < 1e-4,
            "rate {rate}: cell {cell}, period {period_ns} ns, error {error}"
        );
    }
}

#[test]
fn three_jobs_share_one_sm_budget_and_each_cap_holds() {
    let clock = FakeRelativeClock::default();
    let rate = mb_per_sec(100);
    let sm = SmLimiter::with_clock(Some(rate), clock.clone());
    let a = JobLimiter::new(&sm, None);
    let b = JobLimiter::new(&sm, None);
    let c = JobLimiter::new(&sm, Some(mb_per_sec(10)));
    let (got, _) = drive(
        &clock,
        &[(&a, MIB), (&b, 256 * KIB), (&c, 64 * KIB)],
        10,
        Duration::from_micros(100),
    );
    let total: u64 = got.iter().sum();
    assert!(
        total <= rate * 10 + 3 * MIB,
        "together {total} exceed the SM budget"
    );
    assert!(
        total as f64 >= rate as f64 * 10.0 * 0.98,
        "together {total} fall short of the budget"
    );
    assert!(
        got[2] <= mb_per_sec(10) * 10 + 64 * KIB,
        "cap exceeded: {}",
        got[2]
    );
    // Turns at the SM budget are FIFO per request (not per byte): each job gets one request per round, so the
    // 64 KiB job gets 64 KiB per round of 1 MiB + 256 KiB + 64 KiB, and none is starved.
    let round = (MIB + 256 * KIB + 64 * KIB) as f64;
    for (i, req) in [MIB, 256 * KIB, 64 * KIB].into_iter().enumerate() {
        let fair = req as f64 / round * (rate * 10) as f64;
        assert!(
            got[i] as f64 >= fair * 0.95,
            "job {i} got {} of its turn share {fair}: {got:?}",
            got[i]
        );
    }
}

#[test]
fn a_small_request_job_gets_its_turns_beside_a_big_one() {
    let clock = FakeRelativeClock::default();
    let sm = SmLimiter::with_clock(Some(mb_per_sec(50)), clock.clone());
    let atoms = JobLimiter::new(&sm, None);
    let journal = JobLimiter::new(&sm, None);
    let (got, _) = drive(
        &clock,
        &[(&atoms, MIB), (&journal, 32 * KIB)],
        10,
        Duration::from_micros(100),
    );
    // Turns alternate, so the journal job completes about as many requests as the atom job.
    let (atom_reqs, journal_reqs) = (got[0] / MIB, got[1] / (32 * KIB));
    assert!(
        journal_reqs + 2 >= atom_reqs,
        "atom requests {atom_reqs}, journal requests {journal_reqs}"
    );
}

#[test]
fn a_rate_change_applies_from_the_switch_without_a_burst() {
    let clock = FakeRelativeClock::default();
    let sm = SmLimiter::with_clock(Some(mb_per_sec(10)), clock.clone());
    let job = JobLimiter::new(&sm, None);
    let (before, _) = drive(&clock, &[(&job, 64 * KIB)], 5, Duration::from_micros(100));
    sm.set_rate(Some(mb_per_sec(100)));
    assert_eq!(sm.rate(), Some(mb_per_sec(100)));
    // Right after the switch nothing is admitted at once: the new budget starts empty.
    assert!(job.try_acquire(64 * KIB).is_err());
    let (after, per_second) = drive(&clock, &[(&job, 64 * KIB)], 5, Duration::from_micros(100));
    assert!(
        (before[0] as f64 / (mb_per_sec(10) * 5) as f64 - 1.0).abs() < 0.02,
        "{}",
        before[0]
    );
    assert!(
        (after[0] as f64 / (mb_per_sec(100) * 5) as f64 - 1.0).abs() < 0.02,
        "{}",
        after[0]
    );
    assert!(
        per_second[0] <= mb_per_sec(100) + 128 * KIB,
        "burst at the switch: {}",
        per_second[0]
    );
    // The job's own cap can change too.
    job.set_rate(Some(mb_per_sec(1)));
    let (capped, _) = drive(&clock, &[(&job, 64 * KIB)], 5, Duration::from_micros(100));
    assert!(
        (capped[0] as f64 / (mb_per_sec(1) * 5) as f64 - 1.0).abs() < 0.03,
        "{}",
        capped[0]
    );
}

#[test]
fn unlimited_never_waits() {
    let sm = SmLimiter::new(None);
    let job = JobLimiter::new(&sm, None);
    for _ in 0..100_000 {
        assert_eq!(job.try_acquire(MIB), Ok(()));
    }
    assert_eq!(
        job.acquire(MIB, &AtomicBool::new(false)),
        Ok(Duration::ZERO)
    );
}

#[test]
fn edges_zero_bytes_one_byte_per_second_and_huge_rates() {
    let clock = FakeRelativeClock::default();
    let sm = SmLimiter::with_clock(Some(1), clock.clone());
    let job = JobLimiter::new(&sm, None);
    assert_eq!(job.try_acquire(0), Ok(()));
    let wait = job.try_acquire(1).unwrap_err();
    // 1 byte/s with 1 KiB cells: the first cell comes after 1024 s.
    assert!(
        wait > Duration::from_secs(1000) && wait <= Duration::from_secs(1024),
        "{wait:?}"
    );
    clock.advance(Duration::from_secs(1024));
    assert_eq!(job.try_acquire(1), Ok(()));
    // The rest of that cell is credit: 1023 more bytes pass without a new cell.
    assert_eq!(job.try_acquire(1023), Ok(()));
    assert!(job.try_acquire(1).is_err());
    let huge = SmLimiter::with_clock(Some(u64::MAX / 4), clock.clone());
    let job = JobLimiter::new(&huge, None);
    clock.advance(Duration::from_millis(1));
    assert_eq!(job.try_acquire(MAX_REQUEST_BYTES), Ok(()));
}

#[test]
fn a_queued_job_that_ends_does_not_block_the_others() {
    let clock = FakeRelativeClock::default();
    let sm = SmLimiter::with_clock(Some(mb_per_sec(10)), clock.clone());
    let first = JobLimiter::new(&sm, None);
    let second = JobLimiter::new(&sm, None);
    assert!(
        first.try_acquire(MIB).is_err(),
        "the budget starts empty, so the first job queues at the head"
    );
    drop(first);
    clock.advance(Duration::from_secs(1));
    assert_eq!(second.try_acquire(MIB), Ok(()));
}

#[test]
fn acquire_returns_within_100ms_of_a_cancel() {
    let sm = SmLimiter::new(Some(1));
    let job = JobLimiter::new(&sm, None);
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| job.acquire(MIB, &cancel));
        std::thread::sleep(Duration::from_millis(50));
        let asked = Instant::now();
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(waiter.join().unwrap(), Err(Cancelled));
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "{:?}",
            asked.elapsed()
        );
    });
    assert!(job.waited() >= Duration::from_millis(40));
}
