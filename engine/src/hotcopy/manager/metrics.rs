//! [`HotCopyManager::record_metrics`]: the manager's state as metrics, through the `metrics` facade.
//!
//! Everything is read from the manager when asked (a scrape), never counted on a job's copy path: the recorder
//! installed (or given with `metrics::with_local_recorder`) gets absolute values, counters included. Counters count
//! what ended since the manager started; the last success of each archive and type comes from the statuses kept
//! (they survive restarts). docs/OPERATIONS.md lists every metric.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use super::{lock, HotCopyManager, Job};
use crate::hotcopy::{HotCopyType, JobState};

/// Every hot copy type, in the order the metrics list them.
const TYPES: [HotCopyType; 4] =
    [HotCopyType::Full, HotCopyType::Incremental, HotCopyType::Journal, HotCopyType::Simple];

/// The newest completed hot copy of an archive and type: end and begin (microseconds since the epoch) and bytes.
#[derive(Clone, Copy)]
struct Success {
    end: u64,
    begin: u64,
    bytes: u64,
}

fn describe() {
    describe_gauge!(
        "backset_hot_copy_last_success_timestamp_seconds",
        Unit::Seconds,
        "End of the newest completed hot copy of the archive and type (Unix time)."
    );
    describe_gauge!(
        "backset_hot_copy_last_success_duration_seconds",
        Unit::Seconds,
        "How long the newest completed hot copy of the archive and type ran."
    );
    describe_gauge!(
        "backset_hot_copy_last_success_bytes",
        Unit::Bytes,
        "Bytes the newest completed hot copy of the archive and type copied."
    );
    describe_counter!(
        "backset_hot_copy_copied_bytes_total",
        Unit::Bytes,
        "Bytes copied by the hot copies of the archive and type that ended since the server started."
    );
    describe_counter!(
        "backset_hot_copy_failures_total",
        "Hot copies of the archive and type that failed since the server started."
    );
    describe_counter!(
        "backset_hot_copy_cancellations_total",
        "Hot copies of the archive and type that were cancelled since the server started."
    );
    describe_gauge!("backset_hot_copy_running", "Hot copies of the archive and type running now.");
    describe_gauge!(
        "backset_hot_copy_job_done_bytes",
        Unit::Bytes,
        "Bytes a running hot copy has copied from the archive so far."
    );
    describe_gauge!(
        "backset_hot_copy_job_total_bytes",
        Unit::Bytes,
        "Bytes a running hot copy copies from the archive in all (planned before the copy starts)."
    );
    describe_gauge!(
        "backset_hot_copy_job_start_timestamp_seconds",
        Unit::Seconds,
        "When a running hot copy started (Unix time)."
    );
    describe_gauge!(
        "backset_sm_max_rate_bytes_per_second",
        "The SM's configured hot copy rate, bytes per second (absent when unlimited)."
    );
    describe_gauge!(
        "backset_sm_copy_rate_bytes_per_second",
        "The rate the SM's running hot copies copy at now, bytes per second."
    );
    describe_gauge!(
        "backset_hot_copy_limiter_waited_seconds",
        Unit::Seconds,
        "Time the hot copies of the archive and type waited on the rate limiter since the server started (only grows)."
    );
    describe_gauge!(
        "backset_backup_set_restorable_timestamp_seconds",
        Unit::Seconds,
        "End of the newest completed hot copy into the backup set (Unix time): its newest restorable transaction \
         committed at the latest then."
    );
    describe_gauge!(
        "backset_backup_set_restorable_txn",
        "The newest restorable transaction id of the backup set (the end point of its newest element)."
    );
}

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

impl HotCopyManager {
    /// Records the manager's metrics now with the `metrics` recorder in effect (docs/OPERATIONS.md lists them):
    /// per database, archive and hot copy type the last success, bytes copied, failures, cancellations, jobs
    /// running and the time waited on the limiter; per running job its bytes done and in all and its start; per
    /// archive its SM's configured and measured rate; per backup set written its newest restorable transaction.
    /// Call it before each export (a scrape): it reads the jobs' state, nothing is counted while they copy.
    pub fn record_metrics(&self) {
        describe();
        let inner = &self.inner;
        let db = inner.database_name.clone();
        let jobs: Vec<Arc<Job>> = lock(&inner.jobs).values().cloned().collect();
        let mut last: BTreeMap<(u64, HotCopyType), Success> = BTreeMap::new();
        let mut running: BTreeMap<(u64, HotCopyType), u64> = BTreeMap::new();
        let mut rate: BTreeMap<u64, f64> = BTreeMap::new();
        let mut waited: BTreeMap<(u64, HotCopyType), f64> = BTreeMap::new();
        let mut sets: BTreeMap<(u64, PathBuf), (u64, u64)> = BTreeMap::new();
        for job in &jobs {
            let status = job.snapshot(&db);
            match status.status {
                JobState::Running => {
                    let Some(run) = &job.running else { continue };
                    for (p, rp) in status.participants.iter().zip(&run.participants) {
                        let labels = [
                            ("database", db.clone()),
                            ("archive", p.archive_id.to_string()),
                            ("type", status.kind.name().to_string()),
                            ("hot_copy_id", status.id.to_string()),
                        ];
                        gauge!("backset_hot_copy_job_done_bytes", &labels).set(p.bytes_done as f64);
                        gauge!("backset_hot_copy_job_total_bytes", &labels).set(p.bytes_total as f64);
                        gauge!("backset_hot_copy_job_start_timestamp_seconds", &labels).set(secs(status.begin_micros));
                        *running.entry((p.archive_id, status.kind)).or_default() += 1;
                        *rate.entry(p.archive_id).or_default() += p.rate_bytes_per_sec;
                        *waited.entry((p.archive_id, status.kind)).or_default() += rp.limiter.waited().as_secs_f64();
                    }
                }
                JobState::Completed => {
                    let end = status.end_micros.unwrap_or(status.begin_micros);
                    for p in &status.participants {
                        let s = Success { end, begin: status.begin_micros, bytes: p.bytes_done };
                        let slot = last.entry((p.archive_id, status.kind)).or_insert(s);
                        if s.end >= slot.end {
                            *slot = s;
                        }
                        if let (Some(_), Some((_, e))) = (&p.element, p.txn_range) {
                            let set = sets.entry((p.archive_id, p.destination.clone())).or_insert((end, e));
                            if end >= set.0 {
                                *set = (end, e);
                            }
                        }
                    }
                }
                JobState::Failed | JobState::Cancelled => {}
            }
        }
        let ended = lock(&inner.ended).clone();
        for (&archive, limiter) in &inner.limiters {
            let a = archive.to_string();
            let sm = [("database", db.clone()), ("archive", a.clone())];
            if let Some(r) = limiter.rate() {
                gauge!("backset_sm_max_rate_bytes_per_second", &sm).set(r as f64);
            }
            gauge!("backset_sm_copy_rate_bytes_per_second", &sm).set(rate.get(&archive).copied().unwrap_or(0.0));
            for kind in TYPES {
                let labels = [("database", db.clone()), ("archive", a.clone()), ("type", kind.name().to_string())];
                let e = ended.get(&(archive, kind)).copied().unwrap_or_default();
                counter!("backset_hot_copy_copied_bytes_total", &labels).absolute(e.bytes);
                counter!("backset_hot_copy_failures_total", &labels).absolute(e.failures);
                counter!("backset_hot_copy_cancellations_total", &labels).absolute(e.cancellations);
                gauge!("backset_hot_copy_running", &labels)
                    .set(running.get(&(archive, kind)).copied().unwrap_or(0) as f64);
                let wait = e.waited.as_secs_f64() + waited.get(&(archive, kind)).copied().unwrap_or(0.0);
                // The facade's counters are whole numbers, and whole seconds would hide short waits: a gauge that
                // only grows while the server runs.
                gauge!("backset_hot_copy_limiter_waited_seconds", &labels).set(wait);
                if let Some(s) = last.get(&(archive, kind)) {
                    gauge!("backset_hot_copy_last_success_timestamp_seconds", &labels).set(secs(s.end));
                    gauge!("backset_hot_copy_last_success_duration_seconds", &labels)
                        .set(secs(s.end.saturating_sub(s.begin)));
                    gauge!("backset_hot_copy_last_success_bytes", &labels).set(s.bytes as f64);
                }
            }
        }
        for ((archive, dir), (end, e)) in sets {
            let labels =
                [("database", db.clone()), ("archive", archive.to_string()), ("set", dir.display().to_string())];
            gauge!("backset_backup_set_restorable_timestamp_seconds", &labels).set(secs(end));
            gauge!("backset_backup_set_restorable_txn", &labels).set(e as f64);
        }
    }
}
