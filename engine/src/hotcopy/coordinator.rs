//! The coordination of one hot copy's participants: stage barriers, the choice of the end point E, cancel and
//! failure propagation, and the storage group coverage rule.
//!
//! Barriers:
//! 1. **End point.** Every participant arrives after its atoms are copied (a journal hot copy at once) with its R'
//!    and the highest LSN it copied. The last to arrive picks `E = max(D, every R', every highest LSN)`, D being the
//!    durable watermark of the one archive, or of the whole database for several (the smallest durable txn of all
//!    its archives: every txn `<= D` is durable on every SM). Every copied atom then has LSN `<= E`, and every
//!    participant waits until E is durable on its own archive (an LSN or R' above D is a txn already assigned, so
//!    this terminates).
//! 2. **Commit.** Every participant arrives once its element is complete and durable in `tmp/`; when the last one
//!    arrives and nothing failed or was cancelled, the commit is decided and every participant moves its element
//!    into place. From that moment a cancel is refused. A failure before it stops every participant (their copies
//!    are cancelled through the copier's job controls; barriers and durability waits poll the abort flag every
//!    `HOTCOPY_CANCEL_POLL`), and each removes its element, so every set is as valid as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use backset_copier::JobControl;

use crate::archive::{Archive, ArchiveError, ArchiveIdentity};
use crate::hotcopy::HotCopyError;
use crate::limits::{HOTCOPY_CANCEL_POLL, HOTCOPY_DURABLE_TIMEOUT};

/// How a job ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Cancelled by a user.
    Cancelled,
    /// A participant failed: the cause, as the status message shows it after `Hot copy failed: `.
    Failed(String),
}

/// What a participant brings to the end point barrier.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Arrival {
    /// `R' = min(R, durable txn at the pin)`: E must not be below it (a full or incremental's range starts there).
    pub r_prime: Option<u64>,
    /// Highest LSN among the atom files it copied: E must not be below it.
    pub max_lsn: u64,
}

#[derive(Debug)]
struct State {
    outcome: Option<Outcome>,
    arrivals: Vec<Option<Arrival>>,
    end_point: Option<u64>,
    prepared: usize,
    committed: bool,
}

/// The shared state of one job's participants.
pub(crate) struct Coordinator {
    state: Mutex<State>,
    cv: Condvar,
    aborted: AtomicBool,
    controls: Mutex<Vec<Arc<JobControl>>>,
    durable_base: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("state", &*lock(&self.state)).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Coordinator {
    /// A coordinator of `participants` participants; `durable_base` gives D when E is chosen.
    pub fn new(participants: usize, durable_base: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            state: Mutex::new(State {
                outcome: None,
                arrivals: vec![None; participants],
                end_point: None,
                prepared: 0,
                committed: false,
            }),
            cv: Condvar::new(),
            aborted: AtomicBool::new(false),
            controls: Mutex::new(Vec::new()),
            durable_base: Box::new(durable_base),
        }
    }

    fn abort_all(&self) {
        self.aborted.store(true, Ordering::Release);
        for c in lock(&self.controls).iter() {
            c.cancel();
        }
        self.cv.notify_all();
    }

    /// Cancels the job. Returns false (and does nothing) once the commit is decided: the elements are going into
    /// place and the job will complete.
    pub fn cancel(&self) -> bool {
        let mut s = lock(&self.state);
        if s.committed {
            return false;
        }
        if s.outcome.is_none() {
            s.outcome = Some(Outcome::Cancelled);
        }
        drop(s);
        self.abort_all();
        true
    }

    /// Records a participant's failure (the first one wins) and stops the others.
    pub fn fail(&self, cause: String) {
        let mut s = lock(&self.state);
        if s.outcome.is_none() {
            s.outcome = Some(Outcome::Failed(cause));
        }
        drop(s);
        self.abort_all();
    }

    /// How the job ended early, if it did.
    pub fn outcome(&self) -> Option<Outcome> {
        lock(&self.state).outcome.clone()
    }

    fn stopped(outcome: &Outcome) -> HotCopyError {
        HotCopyError::Stopped {
            reason: match outcome {
                Outcome::Cancelled => "cancelled".into(),
                Outcome::Failed(cause) => format!("a participant failed: {cause}"),
            },
        }
    }

    /// Fails when the job is being stopped (cancel, or another participant failed) and the commit is not decided.
    pub fn check(&self) -> Result<(), HotCopyError> {
        if !self.aborted.load(Ordering::Acquire) {
            return Ok(());
        }
        let s = lock(&self.state);
        match &s.outcome {
            Some(o) if !s.committed => Err(Self::stopped(o)),
            _ => Ok(()),
        }
    }

    /// Registers a copier job control, so that a cancel or failure cancels the copy (at once if already stopped).
    pub fn register(&self, ctl: &Arc<JobControl>) {
        lock(&self.controls).push(Arc::clone(ctl));
        if self.aborted.load(Ordering::Acquire) {
            ctl.cancel();
        }
    }

    /// Forgets a finished copy's control.
    pub fn unregister(&self, ctl: &Arc<JobControl>) {
        lock(&self.controls).retain(|c| !Arc::ptr_eq(c, ctl));
    }

    /// The end point barrier: participant `index` arrives; returns E once every participant has arrived.
    pub fn arrive_end_point(&self, index: usize, arrival: Arrival) -> Result<u64, HotCopyError> {
        let mut s = lock(&self.state);
        s.arrivals[index] = Some(arrival);
        if s.end_point.is_none() && s.arrivals.iter().all(Option::is_some) {
            let base = (self.durable_base)();
            let e = s.arrivals.iter().flatten().fold(base, |e, a| e.max(a.max_lsn).max(a.r_prime.unwrap_or(0)));
            s.end_point = Some(e);
            self.cv.notify_all();
        }
        loop {
            if let Some(o) = &s.outcome {
                return Err(Self::stopped(o));
            }
            if let Some(e) = s.end_point {
                return Ok(e);
            }
            s = self.cv.wait_timeout(s, HOTCOPY_CANCEL_POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// The commit barrier: a participant whose element is durable in `tmp/` arrives; returns once every participant
    /// has (the commit is decided then), or fails when the job is stopped first.
    pub fn arrive_commit(&self) -> Result<(), HotCopyError> {
        let mut s = lock(&self.state);
        s.prepared += 1;
        if s.prepared == s.arrivals.len() && s.outcome.is_none() {
            s.committed = true;
            self.cv.notify_all();
        }
        loop {
            if s.committed {
                return Ok(());
            }
            if let Some(o) = &s.outcome {
                return Err(Self::stopped(o));
            }
            s = self.cv.wait_timeout(s, HOTCOPY_CANCEL_POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Waits until `txn` is durable on `archive`, at most `HOTCOPY_DURABLE_TIMEOUT`, noticing a stop within
    /// `HOTCOPY_CANCEL_POLL`.
    pub fn wait_durable(&self, archive: &dyn Archive, txn: u64) -> Result<(), HotCopyError> {
        let deadline = Instant::now() + HOTCOPY_DURABLE_TIMEOUT;
        loop {
            self.check()?;
            match archive.wait_durable(txn, HOTCOPY_CANCEL_POLL) {
                Ok(()) => return Ok(()),
                Err(ArchiveError::NotDurable { archive_id, txn, durable, .. }) => {
                    if Instant::now() >= deadline {
                        return Err(ArchiveError::NotDurable {
                            archive_id,
                            txn,
                            durable,
                            timeout: HOTCOPY_DURABLE_TIMEOUT,
                        }
                        .into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Refuses participants that together do not serve every storage group of the database (NuoDB's
/// `checkContainsAllSgs`). `all` are the identities of every archive of the database.
pub(crate) fn check_storage_groups(
    database: &str,
    all: &[ArchiveIdentity],
    participants: &[ArchiveIdentity],
) -> Result<(), HotCopyError> {
    let covered: std::collections::BTreeSet<u32> =
        participants.iter().flat_map(|p| p.storage_groups.iter().map(|(id, _)| *id)).collect();
    let mut missing: Vec<String> = all
        .iter()
        .flat_map(|a| a.storage_groups.iter())
        .filter(|(id, _)| !covered.contains(id))
        .map(|(_, name)| name.clone())
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HotCopyError::MissingStorageGroups { database: database.to_string(), missing })
    }
}
