//! Rate limits: one budget per storage manager (SM), shared by all its jobs, and an optional cap per job.
//!
//! Rates are bytes per second of **reading from the source** (the live archive: that is what competes with the
//! running database). [`mb_per_sec`] converts NuoDB's `--max-rate` unit (MB/s, MB = 10^6 bytes).
//!
//! - [`SmLimiter`]: one per SM, cheap to clone, shared by every job of that SM, so that two jobs together never
//!   exceed the SM's budget. Its rate can change while jobs run ([`SmLimiter::set_rate`]).
//! - [`JobLimiter`]: one per job, made from its SM's limiter and the job's own cap (NuoDB's `--max-rate` is per
//!   job). A job's bytes pass its cap first, then the SM budget. It implements [`Throttle`], which the copy loop
//!   asks before each read, and counts the time the job waited ([`JobLimiter::waited`]).
//!
//! # Cells and periods: the arithmetic
//!
//! Each budget is a governor GCRA limiter. governor keeps the time that replenishes one cell in whole nanoseconds
//! and truncates: with one cell per byte, 100 MiB/s needs 9.537 ns per cell, gets 9 ns and lets 6% too much
//! through; from 1 GB/s on the period is 1 ns or less and nothing is limited. So a cell here is worth about a KiB,
//! and the period is chosen **first**, as a whole number of nanoseconds, and the cell's worth derived from it:
//!
//! ```text
//! period_ns = ceil(CELL_BYTES_MIN * 10^9 / rate)           whole nanoseconds: governor truncates nothing
//! cell      = period_ns * rate / 10^9 bytes                 exact, kept as period_ns * rate nanobytes (u128)
//! ```
//!
//! One cell per `period_ns` is then exactly `rate` bytes per second: the truncation error is **zero** at every
//! rate, not merely under 0.1%. The cell is worth at least [`CELL_BYTES_MIN`] and less than `CELL_BYTES_MIN +
//! rate / 10^9` bytes: 1 MB/s: 1,024,000 ns, 1024 B; 100 MiB/s: 9,766 ns, 1024.04 B; 1 GB/s: 1,024 ns, 1024 B;
//! 10 GB/s: 103 ns, 1030 B; from 1.024 TB/s on: 1 ns, rate / 10^9 B. (The usual alternative, a power-of-two cell
//! and a truncated period, errs by up to 1 ns per period and needs periods of 1 µs or more for 0.1%.)
//!
//! A request of `b` bytes costs `b * 10^9` nanobytes. A job pays whole cells, `ceil((cost - credit) / cell)`, and
//! keeps the overpayment, less than one cell, as **credit** for its next request (one credit per level: cap and
//! SM). Bytes admitted = cells paid x cell - credit, with 0 <= credit < 1 cell after every admission, so no
//! rounding accumulates. A limiter starts **empty** (also when [`SmLimiter::set_rate`] or [`JobLimiter::set_rate`]
//! rebuilds it): no burst at the start or at a rate change. Hence, for one job asking greedily from an otherwise
//! idle limiter of rate `r` started (or restarted) at time 0, with requests of at most `q` bytes, the bytes
//! admitted by time `t` satisfy
//!
//! ```text
//! r * t - (q + cell) < admitted(t) <= r * t
//! ```
//!
//! (at most `t / period_ns` cells are paid by `t`; the next request's `n` cells, `n * cell < q - credit + cell`,
//! are not yet available; the credit is below one cell), and any window of length `w` admits `r * w` within
//! `q + cell`. After a rate change the jobs' credits carried over (under one old cell each) come on top.
//!
//! The copier keeps `q` small next to the rate: it asks for at most [`JobLimiter::grain`] bytes at a time
//! ([`THROTTLE_GRAIN`] of the rate, 10 ms), so a one-second window is within about 1% of the rate plus a cell, at
//! 5 MB/s as at 500 MB/s, where 1 MiB requests would make it 21% at 5 MB/s.
//!
//! The burst (the most a limiter holds after an idle spell) is `max(rate * BURST_DURATION, BURST_BYTES_MIN)`
//! rounded up to whole cells: about 100 ms of traffic and at least one largest read (1 MiB). A request bigger
//! than the burst is paid in installments of at most one burst each, over several calls; it is admitted once
//! fully paid, so the bound above holds for it too. With both a cap and an SM budget such a request pays the two
//! levels one after the other (the cap first), so it waits longer than the slower level alone would make it; the
//! copier's reads (at most [`BUFFER_BYTES`]) never exceed a burst, so they do not.
//!
//! # Fairness
//!
//! Jobs waiting on the SM budget are served in FIFO order: a job that is refused takes a ticket, and only the
//! ticket at the head of the queue may take cells from the SM budget. So every waiting job gets its turn, one
//! request per turn: a job making requests of `s` bytes next to jobs making requests of at most `S` bytes each
//! (`n` jobs in all) gets at least `rate * s / (s + (n - 1) * S)` when it wants that much, give or take one round
//! of requests (the journal copy beside an atom copy: 64 KiB against 1 MiB gets 5.9% of the budget, whatever the
//! atom copy asks). A job is queued at the SM only once its own cap has admitted its request, so a capped job
//! never holds up the others.
//! A job that stops asking loses its place: when it is dropped, when `acquire` is cancelled, or when it has not
//! come back [`TICKET_GRACE`] after the time it was told to.
//!
//! # Clocks
//!
//! Both limiters are generic over governor's [`Clock`]; the default is governor's `DefaultClock` (quanta). Tests
//! use `governor::clock::FakeRelativeClock` to check the arithmetic exactly without sleeping.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering::Acquire};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::job::Throttle;
use crate::limits::{BUFFER_BYTES, CANCEL_POLL_MS, DIRECT_ALIGN, THROTTLE_GRAIN};

/// Smallest worth of one governor cell, bytes. Counting KiB rather than bytes keeps the replenish period of a cell
/// at 1 ns or more up to 1.024 TB/s (governor cannot express less), and bounds the cells of one 1 MiB read to
/// 1024. The period is a whole number of nanoseconds by construction (see the module docs), so the cell's worth
/// is this or slightly more, never rounded.
pub const CELL_BYTES_MIN: u64 = 1024;

/// Burst of a limiter: this much traffic at its rate (but at least [`BURST_BYTES_MIN`]). Long enough to absorb the
/// copy loop's polling ([`SLEEP_SLICE_MAX`]) without losing budget, short enough that the database sees no
/// noticeable surge after the copier idled.
pub const BURST_DURATION: Duration = Duration::from_millis(100);

/// Smallest burst, bytes: one largest read of the copier ([`BUFFER_BYTES`]), so that at low rates a full-buffer
/// read is admitted in one piece. Bigger requests are paid in installments of one burst.
pub const BURST_BYTES_MIN: u64 = BUFFER_BYTES as u64;

/// Longest single sleep of [`JobLimiter::acquire`], and the longest wait a refused job is told when the budget is
/// paused (rate 0) or when it is queued behind other jobs: cancellation is noticed within this.
pub const SLEEP_SLICE_MAX: Duration = Duration::from_millis(CANCEL_POLL_MS);

/// How long after the time it was told to come back a job queued at the head of the SM queue keeps its place.
/// A job that has not asked again by then is taken out of the queue (it rejoins at the back when it asks again),
/// so a job that stops asking cannot block its SM. At most this long, after the burst has filled, is lost.
pub const TICKET_GRACE: Duration = Duration::from_millis(100);

/// Nanobytes per byte: credits and cell worths are counted in 10^-9 bytes so that `period_ns * rate` is exact.
const NANOBYTES_PER_BYTE: u128 = 1_000_000_000;

const _: () = assert!(CELL_BYTES_MIN >= 1024);
const _: () = assert!(BURST_BYTES_MIN >= CELL_BYTES_MIN);
const _: () = assert!(SLEEP_SLICE_MAX.as_millis() <= 10);
const _: () = assert!(TICKET_GRACE.as_nanos() > SLEEP_SLICE_MAX.as_nanos());
// The most cells a burst can take (see `CellPlan::for_rate`) fits governor's u32 burst.
const _: () = assert!(BURST_DURATION.as_nanos() <= u32::MAX as u128);
const _: () = assert!(BURST_BYTES_MIN / CELL_BYTES_MIN <= u32::MAX as u64);

/// Bytes per second for NuoDB's `--max-rate` unit, MB/s with MB = 10^6 bytes (saturating).
pub const fn mb_per_sec(mb: u64) -> u64 {
    mb.saturating_mul(1_000_000)
}

/// How a limiter of one rate counts: the governor period of one cell, the cell's exact worth and the burst.
/// See the module docs for the arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellPlan {
    /// The rate, bytes per second (never 0).
    pub rate_bytes_per_sec: u64,
    /// Time that replenishes one cell, whole nanoseconds (at least 1).
    pub period_ns: u64,
    /// Worth of one cell in 10^-9 bytes: exactly `period_ns * rate_bytes_per_sec`.
    pub cell_nanobytes: u128,
    /// Cells the limiter holds when full.
    pub burst_cells: u32,
}

impl CellPlan {
    /// The plan for `rate_bytes_per_sec`; `None` for 0 (a paused limiter has no plan).
    pub fn for_rate(rate_bytes_per_sec: u64) -> Option<CellPlan> {
        if rate_bytes_per_sec == 0 {
            return None;
        }
        let rate = u128::from(rate_bytes_per_sec);
        // At most 1024 * 10^9 (rate 1 B/s): fits u64.
        let period_ns = (u128::from(CELL_BYTES_MIN) * NANOBYTES_PER_BYTE).div_ceil(rate) as u64;
        let cell_nanobytes = u128::from(period_ns) * rate;
        let burst_nanobytes = (rate * BURST_DURATION.as_nanos()).max(u128::from(BURST_BYTES_MIN) * NANOBYTES_PER_BYTE);
        // A cell is worth at least CELL_BYTES_MIN and at least rate * 1 ns, so this is at most
        // max(BURST_BYTES_MIN / CELL_BYTES_MIN, BURST_DURATION in ns) + 1 (checked at compile time above).
        let burst_cells = burst_nanobytes.div_ceil(cell_nanobytes);
        Some(CellPlan {
            rate_bytes_per_sec,
            period_ns,
            cell_nanobytes,
            burst_cells: u32::try_from(burst_cells).unwrap_or(u32::MAX),
        })
    }

    /// Worth of one cell in bytes, rounded up.
    pub fn cell_bytes_ceil(&self) -> u64 {
        u64::try_from(self.cell_nanobytes.div_ceil(NANOBYTES_PER_BYTE)).unwrap_or(u64::MAX)
    }

    /// Worth of a full burst in bytes, rounded down.
    pub fn burst_bytes(&self) -> u64 {
        u64::try_from(u128::from(self.burst_cells) * self.cell_nanobytes / NANOBYTES_PER_BYTE).unwrap_or(u64::MAX)
    }
}

/// A wait on the limiter was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled while waiting on the rate limiter")]
pub struct Cancelled;

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One budget (an SM's or a job's cap).
enum Level<C: Clock> {
    /// No limit.
    Unlimited,
    /// Rate 0: nothing is admitted until the rate changes.
    Paused,
    /// A governor limiter counting cells of `plan`.
    Limited { plan: CellPlan, gcra: Gcra<C> },
}

impl<C: Clock + Clone> Level<C> {
    /// A level of `rate` bytes per second, **empty**: the first bytes wait their share.
    fn new(rate: Option<u64>, clock: &C) -> Self {
        let Some(rate) = rate else {
            return Level::Unlimited;
        };
        let Some(plan) = CellPlan::for_rate(rate) else {
            return Level::Paused;
        };
        let burst = NonZeroU32::new(plan.burst_cells).expect("a burst holds at least one cell");
        let quota = Quota::with_period(Duration::from_nanos(plan.period_ns))
            .expect("the period is at least 1 ns")
            .allow_burst(burst);
        let gcra = RateLimiter::direct_with_clock(quota, clock.clone());
        // A fresh limiter is full; take it all so that no burst goes through at the start or at a rate change.
        let emptied = gcra.check_n(burst);
        debug_assert!(matches!(emptied, Ok(Ok(()))), "a fresh limiter holds its burst");
        Level::Limited { plan, gcra }
    }
}

impl<C: Clock> Level<C> {
    fn rate(&self) -> Option<u64> {
        match self {
            Level::Unlimited => None,
            Level::Paused => Some(0),
            Level::Limited { plan, .. } => Some(plan.rate_bytes_per_sec),
        }
    }

    fn is_unlimited(&self) -> bool {
        matches!(self, Level::Unlimited)
    }

    /// Pays cells until `credit` covers `need` nanobytes, or says how long to wait for the next installment.
    /// Cells paid stay in `credit` either way; the caller deducts `need` when the request is admitted.
    fn pay(&self, credit: &mut u128, need: u128, now: C::Instant) -> Result<(), Duration> {
        let (plan, gcra) = match self {
            Level::Unlimited => return Ok(()),
            Level::Paused => return if *credit >= need { Ok(()) } else { Err(SLEEP_SLICE_MAX) },
            Level::Limited { plan, gcra } => (plan, gcra),
        };
        while *credit < need {
            let owed_cells = (need - *credit).div_ceil(plan.cell_nanobytes);
            let cells = owed_cells.min(u128::from(plan.burst_cells)) as u32;
            let n = NonZeroU32::new(cells).expect("owing at least one cell");
            match gcra.check_n(n) {
                Ok(Ok(())) => *credit += u128::from(cells) * plan.cell_nanobytes,
                Ok(Err(not_until)) => return Err(not_until.wait_time_from(now).max(Duration::from_nanos(1))),
                Err(_) => {
                    debug_assert!(false, "asked for {cells} cells, more than the burst");
                    return Err(SLEEP_SLICE_MAX);
                }
            }
        }
        Ok(())
    }
}

/// A job waiting at the SM budget.
struct Waiter<I> {
    ticket: u64,
    /// Nanobytes the job still owes for its pending request (for the wait estimates of the jobs behind it).
    owed_nanobytes: u128,
    /// When the job was told to ask again.
    retry_at: I,
}

struct SmState<C: Clock> {
    level: Level<C>,
    queue: VecDeque<Waiter<C::Instant>>,
    next_ticket: u64,
}

impl<C: Clock> SmState<C> {
    fn position(&self, ticket: u64) -> Option<usize> {
        self.queue.iter().position(|w| w.ticket == ticket)
    }

    fn remove(&mut self, ticket: u64) {
        self.queue.retain(|w| w.ticket != ticket);
    }

    /// Drops head waiters that did not come back within `TICKET_GRACE` of their retry time (never `keep`).
    fn expire_stale(&mut self, now: C::Instant, keep: Option<u64>) {
        let grace = Nanos::from(TICKET_GRACE);
        while let Some(head) = self.queue.front() {
            if Some(head.ticket) == keep || now <= head.retry_at + grace {
                break;
            }
            self.queue.pop_front();
        }
    }

    /// How long the waiter at `pos` (not the head) should wait: until the head's retry time, plus the time the
    /// budget takes to produce what the waiters from the second up to `pos` owe; at most `SLEEP_SLICE_MAX`.
    fn estimate(&self, pos: usize, now: C::Instant) -> Duration {
        let Some(rate) = self.level.rate().filter(|&r| r > 0) else {
            return SLEEP_SLICE_MAX;
        };
        let head_ns = u128::from(self.queue[0].retry_at.duration_since(now).as_u64());
        let owed: u128 = self.queue.range(1..=pos).map(|w| w.owed_nanobytes).sum();
        // nanobytes / (bytes per second) = nanoseconds.
        let wait_ns = head_ns + owed.div_ceil(u128::from(rate));
        let wait_ns = wait_ns.clamp(1, SLEEP_SLICE_MAX.as_nanos());
        Duration::from_nanos(wait_ns as u64)
    }
}

struct SmShared<C: Clock> {
    clock: C,
    state: Mutex<SmState<C>>,
}

/// Locks `m`, ignoring poisoning: every critical section here leaves the state consistent before it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The budget of one storage manager, shared by all its jobs ([`JobLimiter::new`]). Cheap to clone: clones share
/// the budget.
pub struct SmLimiter<C: Clock = DefaultClock> {
    shared: Arc<SmShared<C>>,
}

impl<C: Clock> Clone for SmLimiter<C> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<C: Clock> fmt::Debug for SmLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("SmLimiter")
            .field("rate_bytes_per_sec", &state.level.rate())
            .field("queued_jobs", &state.queue.len())
            .finish()
    }
}

impl SmLimiter<DefaultClock> {
    /// A budget of `rate` bytes per second on the real clock: `None` is unlimited, `Some(0)` admits nothing until
    /// the rate is raised. It starts empty.
    pub fn new(rate: Option<u64>) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> SmLimiter<C> {
    /// A budget of `rate` bytes per second on `clock` (tests use `governor::clock::FakeRelativeClock`). Jobs of
    /// this SM use the same clock.
    pub fn with_clock(rate: Option<u64>, clock: C) -> Self {
        let level = Level::new(rate, &clock);
        Self {
            shared: Arc::new(SmShared {
                clock,
                state: Mutex::new(SmState { level, queue: VecDeque::new(), next_ticket: 0 }),
            }),
        }
    }

    /// Changes the budget while jobs run. The new rate holds from now on; the limiter restarts empty, so no
    /// burst goes through at the switch. Waiting jobs keep their order.
    pub fn set_rate(&self, rate: Option<u64>) {
        let now = self.shared.clock.now();
        let mut state = lock(&self.shared.state);
        state.level = Level::new(rate, &self.shared.clock);
        if state.level.is_unlimited() {
            state.queue.clear();
        } else {
            // Waits told under the old rate no longer hold: each waiter has `TICKET_GRACE` from now to ask again.
            for w in &mut state.queue {
                w.retry_at = now;
            }
        }
    }
}

impl<C: Clock> SmLimiter<C> {
    /// The budget in bytes per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        lock(&self.shared.state).level.rate()
    }

    /// Jobs waiting for their turn at this budget.
    pub fn queued_jobs(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }
}

struct JobState<C: Clock> {
    cap: Level<C>,
    /// Nanobytes paid to the cap and not yet spent.
    cap_credit_nanobytes: u128,
    /// Nanobytes paid to the SM budget and not yet spent.
    sm_credit_nanobytes: u128,
    /// This job's place in the SM queue, if it holds one.
    ticket: Option<u64>,
    /// Since when a refused request has been waiting, and the last refusal.
    blocked: Option<(C::Instant, C::Instant)>,
    /// Total of the finished waits.
    waited: Duration,
}

/// The limiter of one job: its own cap, then its SM's budget, taken in FIFO turn with the SM's other jobs.
///
/// Share it between the job's threads by reference (it is `Sync`); dropping it gives up the job's place in the
/// SM queue.
pub struct JobLimiter<C: Clock = DefaultClock> {
    sm: Arc<SmShared<C>>,
    state: Mutex<JobState<C>>,
}

impl<C: Clock> fmt::Debug for JobLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("JobLimiter")
            .field("cap_bytes_per_sec", &state.cap.rate())
            .field("ticket", &state.ticket)
            .field("waited", &state.waited)
            .finish()
    }
}

impl<C: Clock + Clone> JobLimiter<C> {
    /// A job of `sm` with its own cap of `cap` bytes per second: `None` leaves only the SM budget, `Some(0)`
    /// admits nothing until the cap is raised. The cap starts empty.
    pub fn new(sm: &SmLimiter<C>, cap: Option<u64>) -> Self {
        Self {
            state: Mutex::new(JobState {
                cap: Level::new(cap, &sm.shared.clock),
                cap_credit_nanobytes: 0,
                sm_credit_nanobytes: 0,
                ticket: None,
                blocked: None,
                waited: Duration::ZERO,
            }),
            sm: Arc::clone(&sm.shared),
        }
    }

    /// Changes the job's cap while it runs. The new cap holds from now on; it restarts empty, so no burst goes
    /// through at the switch.
    pub fn set_rate(&self, cap: Option<u64>) {
        let level = Level::new(cap, &self.sm.clock);
        lock(&self.state).cap = level;
    }
}

impl<C: Clock> JobLimiter<C> {
    /// The job's cap in bytes per second (`None`: only the SM budget applies).
    pub fn rate(&self) -> Option<u64> {
        lock(&self.state).cap.rate()
    }

    /// The fastest this job may copy now: the slower of its cap and its SM's budget, bytes per second (`None` when
    /// neither limits it). The SM's budget is shared: with other jobs of the SM running, the job gets less.
    pub fn limit(&self) -> Option<u64> {
        match (self.rate(), lock(&self.sm.state).level.rate()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(r), None) | (None, Some(r)) => Some(r),
            (None, None) => None,
        }
    }

    /// Largest read this job should ask for at once: [`THROTTLE_GRAIN`] of the slower of its cap and its SM's
    /// budget, rounded down to [`DIRECT_ALIGN`] and at least that; `u64::MAX` when neither limits it.
    pub fn grain(&self) -> u64 {
        let Some(rate) = self.limit() else { return u64::MAX };
        let bytes = u128::from(rate) * THROTTLE_GRAIN.as_nanos() / 1_000_000_000;
        let align = DIRECT_ALIGN as u128;
        u64::try_from((bytes / align * align).max(align)).unwrap_or(u64::MAX)
    }

    /// Whether its cap or its SM's budget limits this job (a paused one does).
    pub fn is_limited(&self) -> bool {
        self.rate().is_some() || lock(&self.sm.state).level.rate().is_some()
    }

    /// Total time this job's requests waited on the limiter: from each first refusal to the admission, as the
    /// limiter's clock measures it (a wait still going on counts up to its last refusal).
    pub fn waited(&self) -> Duration {
        let state = lock(&self.state);
        let open = state.blocked.map_or(Duration::ZERO, |(since, last)| last.duration_since(since).into());
        state.waited + open
    }

    /// Admits `bytes` of reading now, or returns how long to wait before asking again. Never blocks (beyond a
    /// short lock). Zero bytes are always admitted. A request bigger than the burst is paid in installments
    /// over several calls; ask again with the same size.
    pub fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        if bytes == 0 {
            return Ok(());
        }
        let mut state = lock(&self.state);
        let now = self.sm.clock.now();
        let result = self.admit(&mut state, u128::from(bytes) * NANOBYTES_PER_BYTE, now);
        match result {
            Ok(()) => {
                if let Some((since, _)) = state.blocked.take() {
                    state.waited += Duration::from(now.duration_since(since));
                }
            }
            Err(_) => {
                let since = state.blocked.map_or(now, |(since, _)| since);
                state.blocked = Some((since, now));
            }
        }
        result
    }

    /// Blocks until `bytes` are admitted, sleeping in slices of at most [`SLEEP_SLICE_MAX`], and returns the time
    /// waited (on the limiter's clock). Returns `Cancelled` once `cancel` is set (checked before each attempt),
    /// giving up the job's place in the SM queue.
    pub fn acquire(&self, bytes: u64, cancel: &AtomicBool) -> Result<Duration, Cancelled> {
        self.acquire_with_sleep(bytes, cancel, std::thread::sleep)
    }

    /// [`acquire`](Self::acquire) with the given sleep: called with slices of at most [`SLEEP_SLICE_MAX`]. Tests
    /// on a fake clock pass one that advances the clock.
    pub fn acquire_with_sleep(
        &self,
        bytes: u64,
        cancel: &AtomicBool,
        mut sleep: impl FnMut(Duration),
    ) -> Result<Duration, Cancelled> {
        let start = self.sm.clock.now();
        loop {
            if cancel.load(Acquire) {
                self.leave_queue();
                return Err(Cancelled);
            }
            match self.try_acquire(bytes) {
                Ok(()) => return Ok(self.sm.clock.now().duration_since(start).into()),
                Err(wait) => sleep(wait.min(SLEEP_SLICE_MAX)),
            }
        }
    }

    /// Gives up the job's place in the SM queue, if it holds one.
    fn leave_queue(&self) {
        let mut state = lock(&self.state);
        if let Some(ticket) = state.ticket.take() {
            lock(&self.sm.state).remove(ticket);
        }
    }

    fn admit(&self, job: &mut JobState<C>, need: u128, now: C::Instant) -> Result<(), Duration> {
        // 1. The job's cap. A job is queued at the SM only once its cap admits the request, so that a job waiting
        // on its own cap never holds up the SM's other jobs.
        if let Err(wait) = job.cap.pay(&mut job.cap_credit_nanobytes, need, now) {
            if let Some(ticket) = job.ticket.take() {
                lock(&self.sm.state).remove(ticket);
            }
            return Err(wait);
        }
        // 2. The SM budget, in FIFO turn.
        let mut sm = lock(&self.sm.state);
        let sm_limited = !sm.level.is_unlimited();
        if sm_limited && job.sm_credit_nanobytes < need {
            sm.expire_stale(now, job.ticket);
            let pos = match job.ticket.and_then(|t| sm.position(t)) {
                Some(pos) => pos,
                None => {
                    let ticket = sm.next_ticket;
                    sm.next_ticket += 1;
                    job.ticket = Some(ticket);
                    sm.queue.push_back(Waiter { ticket, owed_nanobytes: 0, retry_at: now });
                    sm.queue.len() - 1
                }
            };
            let wait = if pos == 0 {
                sm.level.pay(&mut job.sm_credit_nanobytes, need, now).err()
            } else {
                Some(sm.estimate(pos, now))
            };
            if let Some(wait) = wait {
                let waiter = &mut sm.queue[pos];
                waiter.owed_nanobytes = need.saturating_sub(job.sm_credit_nanobytes);
                waiter.retry_at = now + Nanos::from(wait);
                return Err(wait);
            }
            sm.queue.pop_front();
            job.ticket = None;
        } else if let Some(ticket) = job.ticket.take() {
            // Unlimited, or already paid for: no turn needed.
            sm.remove(ticket);
        }
        drop(sm);
        // 3. Admitted: spend what was paid.
        if !job.cap.is_unlimited() {
            job.cap_credit_nanobytes -= need;
        }
        if sm_limited {
            job.sm_credit_nanobytes -= need;
        }
        Ok(())
    }
}

impl<C: Clock> Drop for JobLimiter<C> {
    fn drop(&mut self) {
        // A job that ends while queued must not hold up the others.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(ticket) = state.ticket.take() {
            lock(&self.sm.state).remove(ticket);
        }
    }
}

impl<C> Throttle for JobLimiter<C>
where
    C: Clock + Send + Sync,
{
    fn try_acquire(&self, bytes: u64) -> Result<(), Duration> {
        JobLimiter::try_acquire(self, bytes)
    }

    fn grain(&self) -> u64 {
        JobLimiter::grain(self)
    }

    fn is_limited(&self) -> bool {
        JobLimiter::is_limited(self)
    }
}
