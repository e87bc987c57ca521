//! Rate limits: one budget per storage manager shared by all its jobs, and a cap per job.
//!
//! Rates are bytes per second of reading from the source (`mb_per_sec` converts NuoDB's MB/s, MB = 10^6 bytes).
//! Each budget is a governor GCRA limiter counting **cells** of `cell_bytes(rate)` bytes:
//!
//! - governor keeps its replenish period in whole nanoseconds, truncating. With one cell per byte that truncation
//!   lets ~6% too much through at 100 MiB/s and limits nothing at 1 GB/s. The cell size is chosen so that one
//!   cell's period is at least `MIN_PERIOD_NS` = 10 µs: `cell = max(1 KiB, ceil(rate * 10 µs))`, so the truncation
//!   (under 1 ns per period) errs by less than 1 / 10,000 = 0.01% at any rate up to 10 GB/s and beyond.
//! - A request of `b` bytes takes `ceil((b - credit) / cell)` cells and keeps the rounding as credit for the next
//!   request, so over a run the bytes admitted equal the cells admitted times the cell size, exactly, give or take
//!   one cell.
//! - The burst is about `BURST_MS` (100 ms) of traffic and never less than one largest request, and every limiter
//!   starts **empty**: no burst at the start of a job or at a rate change; the bytes admitted by time `t` after a
//!   (re)start are at most `rate * t + one request`.
//!
//! Jobs of one SM wait their turn in FIFO order at the SM budget, so a job making large requests cannot starve one
//! making small requests (the journal copy beside an atom copy).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::job::Throttle;
use crate::limits::{BUFFER_BYTES, CANCEL_POLL_MS};

/// Smallest cell, bytes.
pub const CELL_BYTES_MIN: u64 = 1024;
/// Shortest replenish period of one cell, nanoseconds: bounds governor's nanosecond truncation to 0.01%.
pub const MIN_PERIOD_NS: u64 = 10_000;
/// Burst: this many milliseconds of traffic (at least one largest request).
pub const BURST_MS: u64 = 100;
/// Largest request one `try_acquire` may make: the copier's buffer size.
pub const MAX_REQUEST_BYTES: u64 = BUFFER_BYTES as u64;
/// How long a job that is not at the head of the SM queue is told to wait before asking again.
pub const QUEUE_RETRY: Duration = Duration::from_micros(500);

/// NuoDB's `--max-rate` unit (MB/s, MB = 10^6 bytes) in bytes per second.
pub const fn mb_per_sec(mb: u64) -> u64 {
    mb.saturating_mul(1_000_000)
}

/// Cell size for `rate` bytes per second (see the module docs).
pub const fn cell_bytes(rate: u64) -> u64 {
    let c = (rate as u128 * MIN_PERIOD_NS as u128).div_ceil(1_000_000_000) as u64;
    if c < CELL_BYTES_MIN {
        CELL_BYTES_MIN
    } else {
        c
    }
}

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One budget: a rate (None = unlimited), its governor limiter, and the sub-cell credit.
struct Bucket<C: Clock> {
    rate: Option<u64>,
    cell: u64,
    gcra: Option<Gcra<C>>,
    credit: u64,
}

impl<C: Clock + Clone> Bucket<C> {
    fn new(rate: Option<u64>, clock: &C) -> Self {
        let rate = rate.filter(|&r| r > 0);
        let Some(r) = rate else {
            return Self {
                rate: None,
                cell: 1,
                gcra: None,
                credit: 0,
            };
        };
        let cell = cell_bytes(r);
        let period_ns = (cell as u128 * 1_000_000_000 / r as u128).max(1) as u64;
        let burst_bytes =
            (r as u128 * BURST_MS as u128 / 1000).max(MAX_REQUEST_BYTES as u128) as u64;
        let burst = burst_bytes.div_ceil(cell).clamp(1, u32::MAX as u64) as u32;
        let quota = Quota::with_period(Duration::from_nanos(period_ns))
            .expect("period is at least 1 ns")
            .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
        let gcra = RateLimiter::direct_with_clock(quota, clock.clone());
        // Start empty: no burst at the start or at a rate change.
        let _ = gcra.check_n(NonZeroU32::new(burst).expect("burst >= 1"));
        Self {
            rate,
            cell,
            gcra: Some(gcra),
            credit: 0,
        }
    }

    /// Cells for `bytes`, using and refilling the credit; not committed until `commit`.
    fn cells_for(&self, bytes: u64) -> (u64, u64) {
        let need = bytes.saturating_sub(self.credit);
        let cells = need.div_ceil(self.cell);
        let credit = self.credit.saturating_sub(bytes) + (cells * self.cell - need);
        (cells, credit)
    }

    /// Admits `bytes` now, or says how long to wait.
    fn try_take(&mut self, bytes: u64, clock: &C) -> Result<(), Duration> {
        let Some(gcra) = &self.gcra else {
            return Ok(());
        };
        let (cells, credit) = self.cells_for(bytes);
        if cells == 0 {
            self.credit = credit;
            return Ok(());
        }
        let n = NonZeroU32::new(cells.min(u32::MAX as u64) as u32).expect("cells > 0");
        match gcra.check_n(n) {
            Ok(Ok(())) => {
                self.credit = credit;
                Ok(())
            }
            Ok(Err(not_until)) => Err(not_until
                .wait_time_from(clock.now())
                .max(Duration::from_nanos(1))),
            // More cells than the burst: only a request above MAX_REQUEST_BYTES can get here; callers split.
            Err(_) => Err(Duration::from_millis(CANCEL_POLL_MS)),
        }
    }
}

struct SmInner<C: Clock> {
    bucket: Mutex<Bucket<C>>,
    queue: Mutex<VecDeque<u64>>,
    next_job: AtomicU64,
    clock: C,
}

/// The budget of one storage manager, shared by every job it runs. Cheap to clone.
#[derive(Clone)]
pub struct SmLimiter<C: Clock = DefaultClock> {
    inner: Arc<SmInner<C>>,
}

impl<C: Clock> std::fmt::Debug for SmLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmLimiter")
            .field("rate", &self.inner.bucket.lock().unwrap().rate)
            .finish()
    }
}

impl SmLimiter<DefaultClock> {
    /// A budget of `rate` bytes per second (None: unlimited), on the real clock.
    pub fn new(rate: Option<u64>) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> SmLimiter<C> {
    /// A budget on the given clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(rate: Option<u64>, clock: C) -> Self {
        let bucket = Mutex::new(Bucket::new(rate, &clock));
        Self {
            inner: Arc::new(SmInner {
                bucket,
                queue: Mutex::default(),
                next_job: AtomicU64::new(0),
                clock,
            }),
        }
    }

    /// Changes the budget while jobs run; the new rate holds from now on, with no burst at the switch.
    pub fn set_rate(&self, rate: Option<u64>) {
        *self.inner.bucket.lock().unwrap() = Bucket::new(rate, &self.inner.clock);
    }

    /// The budget, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        self.inner.bucket.lock().unwrap().rate
    }
}

/// The limiter of one job: its own cap, then its SM's budget, taken in FIFO turn with the SM's other jobs.
pub struct JobLimiter<C: Clock = DefaultClock> {
    sm: SmLimiter<C>,
    id: u64,
    cap: Mutex<Bucket<C>>,
    /// Bytes of the pending request the cap already admitted, so that waiting on the SM does not charge it twice.
    cap_granted: Mutex<Option<u64>>,
    waited_ns: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for JobLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLimiter")
            .field("id", &self.id)
            .field("cap", &self.cap.lock().unwrap().rate)
            .finish()
    }
}

/// The job was cancelled while it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled while waiting on the rate limiter")]
pub struct Cancelled;

impl<C: Clock + Clone> JobLimiter<C> {
    /// A job of `sm` with its own cap of `cap` bytes per second (None: only the SM budget applies).
    pub fn new(sm: &SmLimiter<C>, cap: Option<u64>) -> Self {
        Self {
            id: sm.inner.next_job.fetch_add(1, Relaxed),
            cap: Mutex::new(Bucket::new(cap, &sm.inner.clock)),
            sm: sm.clone(),
            cap_granted: Mutex::new(None),
            waited_ns: AtomicU64::new(0),
        }
    }

    /// Changes the job's cap while it runs, with no burst at the switch.
    pub fn set_rate(&self, cap: Option<u64>) {
        *self.cap.lock().unwrap() = Bucket::new(cap, &self.sm.inner.clock);
        *self.cap_granted.lock().unwrap() = None;
    }

    /// The job's cap, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        self.cap.lock().unwrap().rate
    }

    /// Admits `bytes` (at most `MAX_REQUEST_BYTES`) now, or says how long to wait before asking again.
    pub fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        assert!(
            bytes <= MAX_REQUEST_BYTES,
            "request of {bytes} bytes; split requests above {MAX_REQUEST_BYTES}"
        );
        let clock = &self.sm.inner.clock;
        {
            let mut granted = self.cap_granted.lock().unwrap();
            let already = granted.unwrap_or(0);
            if bytes > already {
                self.cap.lock().unwrap().try_take(bytes - already, clock)?;
                *granted = Some(bytes);
            }
        }
        let mut queue = self.sm.inner.queue.lock().unwrap();
        if !queue.contains(&self.id) {
            queue.push_back(self.id);
        }
        if queue.front() != Some(&self.id) {
            return Err(QUEUE_RETRY);
        }
        self.sm
            .inner
            .bucket
            .lock()
            .unwrap()
            .try_take(bytes, clock)?;
        queue.pop_front();
        *self.cap_granted.lock().unwrap() = None;
        Ok(())
    }

    /// Blocks until `bytes` are admitted, in sleeps of at most `CANCEL_POLL_MS`, returning the time waited; returns
    /// `Cancelled` promptly once `cancel` is set.
    pub fn acquire(&self, bytes: u64, cancel: &AtomicBool) -> Result<Duration, Cancelled> {
        let mut waited = Duration::ZERO;
        loop {
            if cancel.load(Relaxed) {
                return Err(Cancelled);
            }
            match self.try_acquire(bytes) {
                Ok(()) => return Ok(waited),
                Err(wait) => {
                    let wait = wait.min(Duration::from_millis(CANCEL_POLL_MS));
                    std::thread::sleep(wait);
                    waited += wait;
                    self.waited_ns.fetch_add(wait.as_nanos() as u64, Relaxed);
                }
            }
        }
    }

    /// Time this job spent in `acquire`.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Relaxed))
    }
}

impl<C: Clock> Drop for JobLimiter<C> {
    fn drop(&mut self) {
        // A job that ends while queued must not hold up the others.
        self.sm
            .inner
            .queue
            .lock()
            .unwrap()
            .retain(|&id| id != self.id);
    }
}

impl<C> Throttle for JobLimiter<C>
where
    C: Clock + Clone + Send + Sync,
    C::Instant: Reference + Send + Sync,
{
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        JobLimiter::try_acquire(self, bytes)
    }
}
