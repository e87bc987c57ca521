//! Test-only fault points, so a crash test can SIGKILL the server at moments too short to hit by polling, and a log
//! test can make a hot copy fail on purpose.
//!
//! `BACKSET_FAULT_PAUSE=<point>` or `<type>:<point>` (read once, at the first hot copy of the process) makes every
//! hot copy job (of that type: `simple`, `full`, `incremental`, `journal`) that reaches `<point>` block there; with
//! `BACKSET_FAULT_PAUSE_MARK=<file>` it first writes `<file>` (holding the hot copy id and the point) so the test
//! knows the job is there; with `BACKSET_FAULT_PAUSE_DEST=<dir>` only jobs writing into `<dir>` (as the request named
//! it) pause. Points:
//! - `begun`: stage 1 done (journal pinned, set initialised or element begun in `tmp/`, or the `.incomplete`
//!   directories of a simple hot copy created), before any atom or journal is copied;
//! - `before-move`: everything copied and durable, control files written, just before the element (or the simple
//!   copy) is moved into place;
//! - `mid-move`: a backup set element renamed from `tmp/<id>` to its name but the state not yet saying it is
//!   completed; a simple hot copy with a separate journal directory whose journal directory is renamed but the
//!   archive directory not yet.
//!
//! - `before-control` (a set on object storage only): every data object of the element uploaded, none of its control
//!   objects yet; the job blocks until the process dies or, with a mark, until the test removes the mark (so a test
//!   can stop the store there and let the job go on).
//!
//! A job blocked at `begun` or `before-move` still ends on a cancel; at `mid-move` it blocks until the process dies.
//!
//! `BACKSET_FAULT_FAIL=<point>` or `<type>:<point>` (`begun` or `before-move`) makes every job (of that type) that
//! reaches `<point>` fail there with an injected I/O error naming the variable; it leaves its set as before, as any
//! failure does.
//!
//! `BACKSET_FAULT_RESTORE_PAUSE=created` makes a restore block once its destination and the destination's
//! `journal/` and `atoms/` are created, before anything is written into them; with `BACKSET_FAULT_PAUSE_MARK=<file>`
//! it first writes `<file>` and goes on once the test removes it (without a mark it goes on at once), so a test can
//! swap a path component for a symbolic link at that moment. `BACKSET_FAULT_RESTORE_PAUSE=records:<N>` makes a
//! restore block once it has written N journal records and made them durable, until it is cancelled (SIGINT or
//! SIGTERM to `backset restore`); with the mark variable it first writes the mark. A test kills it there or signals
//! it.
//!
//! `BACKSET_FAULT_STATUS_FAIL=<file>` makes writing a hot copy's final status fail while `<file>` exists (the status
//! written when a job starts is not affected); each failure it injects is logged (`final status write <n> failed`),
//! so a test counts the attempts. `BACKSET_FAULT_STATUS_RETRIES=<N>` makes the manager retry a final status N times
//! instead of `HOTCOPY_STATUS_RETRIES` (600), so a test reaches that limit in seconds.
//!
//! The reference store has one more (`BACKSET_FAULT_JOURNAL_CREATE`, in `backset_refstore::fault`).
//!
//! Never set these variables outside tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::Duration;

use uuid::Uuid;

use crate::hotcopy::{HotCopyError, HotCopyType};
use crate::limits::HOTCOPY_STATUS_RETRIES;

/// The environment variable naming the pause point.
pub const FAULT_PAUSE_ENV: &str = "BACKSET_FAULT_PAUSE";
/// The environment variable naming the file written when a job blocks.
pub const FAULT_PAUSE_MARK_ENV: &str = "BACKSET_FAULT_PAUSE_MARK";

/// The environment variable restricting the pause to one destination directory.
pub const FAULT_PAUSE_DEST_ENV: &str = "BACKSET_FAULT_PAUSE_DEST";

/// The environment variable naming the failure point.
pub const FAULT_FAIL_ENV: &str = "BACKSET_FAULT_FAIL";

/// The environment variable naming the restore's pause point.
pub const FAULT_RESTORE_PAUSE_ENV: &str = "BACKSET_FAULT_RESTORE_PAUSE";

/// The restore's pause points.
pub const RESTORE_PAUSE_POINTS: [&str; 1] = ["created"];

/// The prefix of the restore's other pause: `records:<N>`, after N journal records.
pub const RESTORE_PAUSE_RECORDS: &str = "records:";

/// The pause points, in the order a job reaches them.
pub const FAULT_POINTS: [&str; 4] = ["begun", "before-control", "before-move", "mid-move"];
/// The failure points.
pub const FAIL_POINTS: [&str; 2] = ["begun", "before-move"];

struct Pause {
    kind: Option<HotCopyType>,
    point: String,
    mark: Option<PathBuf>,
    dest: Option<PathBuf>,
}

/// `<point>` or `<type>:<point>` from the variable `name`, the point one of `points`; `None` (with a warning for a
/// value that does not parse) otherwise.
fn point_of(name: &str, points: &[&str]) -> Option<(Option<HotCopyType>, String)> {
    let value = std::env::var(name).ok().filter(|p| !p.is_empty())?;
    let (kind, point) = match value.split_once(':') {
        Some((k, p)) => (Some(k.parse::<HotCopyType>()), p.to_string()),
        None => (None, value.clone()),
    };
    let kind = match kind.transpose() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("{name}={value}: {e}; ignored");
            return None;
        }
    };
    if !points.contains(&point.as_str()) {
        tracing::warn!("{name}={value} names none of the points {}; ignored", points.join(", "));
        return None;
    }
    Some((kind, point))
}

fn config() -> Option<&'static Pause> {
    static CONFIG: OnceLock<Option<Pause>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let (kind, point) = point_of(FAULT_PAUSE_ENV, &FAULT_POINTS)?;
            let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
            Some(Pause { kind, point, mark: var(FAULT_PAUSE_MARK_ENV), dest: var(FAULT_PAUSE_DEST_ENV) })
        })
        .as_ref()
}

/// Fails with an injected I/O error at `point` when the test-only `BACKSET_FAULT_FAIL` names it.
pub(crate) fn fail(point: &str, kind: HotCopyType, dest: &Path) -> Result<(), HotCopyError> {
    static CONFIG: OnceLock<Option<(Option<HotCopyType>, String)>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| point_of(FAULT_FAIL_ENV, &FAIL_POINTS));
    match config {
        Some((k, p)) if p == point && k.is_none_or(|k| k == kind) => Err(HotCopyError::Io {
            op: "write",
            path: dest.to_path_buf(),
            source: std::io::Error::other(format!("test-only {FAULT_FAIL_ENV}: failure injected at {point}")),
        }),
        _ => Ok(()),
    }
}

/// Blocks at `point` when the test-only pause names it: until `check` fails (a cancel), or with `check` `None`
/// until the process dies.
pub(crate) fn pause(
    point: &str,
    kind: HotCopyType,
    dest: &Path,
    id: Uuid,
    check: Option<&dyn Fn() -> Result<(), HotCopyError>>,
) -> Result<(), HotCopyError> {
    let applies = |p: &&Pause| {
        p.point == point && p.kind.is_none_or(|k| k == kind) && p.dest.as_deref().is_none_or(|d| d == dest)
    };
    let Some(p) = config().filter(applies) else { return Ok(()) };
    tracing::warn!("test-only {FAULT_PAUSE_ENV}: hot copy {id} blocks at {point}");
    if let Some(mark) = &p.mark {
        if let Err(e) = std::fs::write(mark, format!("{id} {point}\n")) {
            tracing::warn!("test-only {FAULT_PAUSE_ENV}: cannot write the mark {}: {e}", mark.display());
        }
    }
    loop {
        if let Some(check) = check {
            check()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `before-control` point of an element of `kind` (element id `id`) sealed on object storage: blocks when the
/// test-only pause names it, until the test removes the mark (without a mark, until the process dies).
pub(crate) fn pause_before_control(kind: backset_format::ElementKind, id: Uuid) {
    const POINT: &str = "before-control";
    let kind = match kind {
        backset_format::ElementKind::Full => HotCopyType::Full,
        backset_format::ElementKind::Incremental => HotCopyType::Incremental,
        backset_format::ElementKind::Journal => HotCopyType::Journal,
    };
    let Some(p) = config().filter(|p| p.point == POINT && p.kind.is_none_or(|k| k == kind)) else { return };
    tracing::warn!("test-only {FAULT_PAUSE_ENV}: element {id} blocks at {POINT}");
    if let Some(mark) = &p.mark {
        if let Err(e) = std::fs::write(mark, format!("{id} {POINT}\n")) {
            tracing::warn!("test-only {FAULT_PAUSE_ENV}: cannot write the mark {}: {e}", mark.display());
        }
    }
    while p.mark.as_ref().is_none_or(|m| m.exists()) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Blocks a restore at `point` when the test-only `BACKSET_FAULT_RESTORE_PAUSE` names it: writes the mark
/// (`BACKSET_FAULT_PAUSE_MARK`) and waits until the test removes it.
pub(crate) fn restore_pause(point: &str) {
    let value = std::env::var(FAULT_RESTORE_PAUSE_ENV).unwrap_or_default();
    if value.is_empty() || value != point {
        if !value.is_empty() && !RESTORE_PAUSE_POINTS.contains(&value.as_str()) && restore_pause_after().is_none() {
            tracing::warn!(
                "{FAULT_RESTORE_PAUSE_ENV}={value} names none of the points {}, nor {RESTORE_PAUSE_RECORDS}<N>; \
                 ignored",
                RESTORE_PAUSE_POINTS.join(", ")
            );
        }
        return;
    }
    let Some(mark) = std::env::var_os(FAULT_PAUSE_MARK_ENV).filter(|v| !v.is_empty()).map(PathBuf::from) else {
        return;
    };
    tracing::warn!(
        "test-only {FAULT_RESTORE_PAUSE_ENV}: the restore blocks at {point} until {} is removed",
        mark.display()
    );
    if let Err(e) = std::fs::write(&mark, format!("restore {point}\n")) {
        tracing::warn!("test-only {FAULT_RESTORE_PAUSE_ENV}: cannot write the mark {}: {e}", mark.display());
        return;
    }
    while mark.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number of journal records after which a restore blocks, when the test-only [`FAULT_RESTORE_PAUSE_ENV`] is
/// `records:<N>` (N above 0).
pub(crate) fn restore_pause_after() -> Option<u64> {
    static CONFIG: OnceLock<Option<u64>> = OnceLock::new();
    *CONFIG.get_or_init(|| {
        let value = std::env::var(FAULT_RESTORE_PAUSE_ENV).ok()?;
        value.strip_prefix(RESTORE_PAUSE_RECORDS)?.parse::<u64>().ok().filter(|&n| n > 0)
    })
}

/// Blocks a restore into `dest` that has written (and made durable) `records` journal records: writes the mark
/// (`BACKSET_FAULT_PAUSE_MARK`, holding the destination and the count) and waits until `cancelled` holds (SIGINT or
/// SIGTERM to `backset restore`); a SIGKILL meanwhile leaves the destination as a killed restore would.
pub(crate) fn restore_pause_records(dest: &Path, records: u64, cancelled: &dyn Fn() -> bool) {
    tracing::warn!(
        "test-only {FAULT_RESTORE_PAUSE_ENV}: the restore into {} blocks after {records} records",
        dest.display()
    );
    if let Some(mark) = std::env::var_os(FAULT_PAUSE_MARK_ENV).filter(|v| !v.is_empty()).map(PathBuf::from) {
        if let Err(e) = std::fs::write(&mark, format!("{} {records}\n", dest.display())) {
            tracing::warn!("test-only {FAULT_RESTORE_PAUSE_ENV}: cannot write the mark {}: {e}", mark.display());
        }
    }
    while !cancelled() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The environment variable naming a file: while it exists, writing a hot copy's final status fails (test-only, as
/// the others), so a test sees the live status and the log say so, then removes the file and sees the retry save it.
pub const FAULT_STATUS_FAIL_ENV: &str = "BACKSET_FAULT_STATUS_FAIL";

/// Fails with an injected I/O error while the file the test-only [`FAULT_STATUS_FAIL_ENV`] names exists.
pub(crate) fn final_status_write(path: &Path) -> Result<(), HotCopyError> {
    static CONFIG: OnceLock<Option<PathBuf>> = OnceLock::new();
    static INJECTED: AtomicU64 = AtomicU64::new(0);
    let file =
        CONFIG.get_or_init(|| std::env::var_os(FAULT_STATUS_FAIL_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
    match file {
        Some(f) if f.exists() => {
            let n = INJECTED.fetch_add(1, Relaxed) + 1;
            tracing::warn!("test-only {FAULT_STATUS_FAIL_ENV}: final status write {n} failed ({})", path.display());
            Err(HotCopyError::Persist {
                path: path.to_path_buf(),
                reason: format!("test-only {FAULT_STATUS_FAIL_ENV}: failure injected while {} exists", f.display()),
            })
        }
        _ => Ok(()),
    }
}

/// The environment variable that sets how many times a final status is retried (test-only).
pub const FAULT_STATUS_RETRIES_ENV: &str = "BACKSET_FAULT_STATUS_RETRIES";

/// How many times the manager retries a final status it could not write: [`HOTCOPY_STATUS_RETRIES`], unless the
/// test-only [`FAULT_STATUS_RETRIES_ENV`] says otherwise.
pub(crate) fn status_retries() -> u32 {
    static CONFIG: OnceLock<u32> = OnceLock::new();
    *CONFIG.get_or_init(|| {
        std::env::var(FAULT_STATUS_RETRIES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(HOTCOPY_STATUS_RETRIES)
    })
}
