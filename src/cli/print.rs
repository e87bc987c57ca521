//! What the client verbs print, as nuocmd prints it: `HotCopyResponse(...)` with its fields sorted by name,
//! `HotCopyDatabaseStatuses(...)`, `Process(...)`, and the lines of `show hotcopy-info` filled from its
//! `--process-format` and `--hotcopy-format` (Python's `str.format`, the part nuocmd's formats use).

use std::collections::BTreeMap;

use anyhow::Result;

use crate::api::{HotCopyInfo, HotCopyResponse, Process};
use crate::usage::usage;

/// `HotCopyResponse(coordinator_start_id=2, id=..)`: what `hotcopy database` prints without `--timeout`.
pub(super) fn short(coordinator_start_id: u64, hot_copy_id: &str) -> String {
    format!("HotCopyResponse(coordinator_start_id={coordinator_start_id}, id={hot_copy_id})")
}

/// What the wait's progress bar shows beside the bytes: the stage, the files, and the time left when known
/// (`Stage1: Copy atoms, 12/40 files, ETA 1m05s`).
pub(super) fn progress_note(r: &HotCopyResponse) -> String {
    let mut note = r.message.clone();
    if r.files_total > 0 {
        note.push_str(&format!(", {}/{} files", r.files_done, r.files_total));
    }
    if let Some(eta) = r.eta_sec {
        note.push_str(&format!(", ETA {}", eta_text(eta)));
    }
    note
}

/// Seconds left as `45s`, `1m05s`, `2h03m`.
fn eta_text(secs: f64) -> String {
    let s = secs.max(0.0).ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `HotCopyResponse(begin_timestamp=.., coordinator_start_id=.., end_timestamp=.., id=.., message=.., status=..,
/// timestamp_range=..)`: nuocmd's fields (pynuoadmin 2.7's, `timestamp_range` included), sorted by name
/// (end_timestamp once ended).
pub fn full(r: &HotCopyResponse) -> String {
    let mut fields = vec![
        format!("begin_timestamp={}", r.begin_timestamp),
        format!("coordinator_start_id={}", r.coordinator_start_id),
    ];
    if let Some(end) = &r.end_timestamp {
        fields.push(format!("end_timestamp={end}"));
    }
    fields.push(format!("id={}", r.hot_copy_id));
    fields.push(format!("message={}", r.message));
    fields.push(format!("status={}", r.status));
    fields.push(format!("timestamp_range={}", timestamp_range(r)));
    format!("HotCopyResponse({})", fields.join(", "))
}

/// nuocmd's one line: `HotCopyDatabaseStatuses(errors={..}, hotcopy_statuses={1: [HotCopyResponse(..), ..], 2: []})`.
pub(super) fn info_line(info: &HotCopyInfo) -> String {
    let errors: Vec<String> = info.errors.iter().map(|(sm, e)| format!("{sm}: {e}")).collect();
    let statuses: Vec<String> = info
        .hot_copy_statuses
        .iter()
        .map(|(sm, list)| format!("{sm}: [{}]", list.iter().map(full).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("HotCopyDatabaseStatuses(errors={{{}}}, hotcopy_statuses={{{}}})", errors.join(", "), statuses.join(", "))
}

/// nuocmd's default `--process-format`.
pub(super) const PROCESS_FORMAT: &str =
    "[{engine_type}] {address::<UNKNOWN ADDRESS>} [start_id = {start_id}] [server_id = \
                              {server_id}] [pid = {pid::}] [node_id = {node_id::}] [last_ack = {last_ack:5.2f:>60}] \
                              {durable_state}:{engine_state}";

/// A value of a format field (`None` where nuocmd's is `None`: no value, the field's default is printed).
#[derive(Debug, Clone)]
pub(super) enum Val {
    Text(String),
    Int(i128),
    Float(f64),
}

/// A Python format spec, the part nuocmd's formats use: `[[fill]align][width][.precision][type]`, type `s`, `d` or
/// `f`.
#[derive(Debug, Default)]
struct Spec {
    fill: Option<char>,
    align: Option<char>,
    width: usize,
    precision: Option<usize>,
    kind: Option<char>,
}

impl Spec {
    fn parse(spec: &str) -> Option<Spec> {
        let chars: Vec<char> = spec.chars().collect();
        let mut out = Spec::default();
        let mut i = 0;
        let is_align = |c: &char| matches!(c, '<' | '>' | '^');
        if chars.len() >= 2 && is_align(&chars[1]) {
            (out.fill, out.align, i) = (Some(chars[0]), Some(chars[1]), 2);
        } else if chars.first().is_some_and(is_align) {
            (out.align, i) = (Some(chars[0]), 1);
        }
        let digits = |i: &mut usize| {
            let from = *i;
            while chars.get(*i).is_some_and(char::is_ascii_digit) {
                *i += 1;
            }
            chars[from..*i].iter().collect::<String>().parse::<usize>().ok()
        };
        out.width = digits(&mut i).unwrap_or(0);
        if chars.get(i) == Some(&'.') {
            i += 1;
            out.precision = Some(digits(&mut i)?);
        }
        if let Some(&c) = chars.get(i) {
            if !matches!(c, 's' | 'd' | 'f') {
                return None;
            }
            out.kind = Some(c);
            i += 1;
        }
        (i == chars.len()).then_some(out)
    }

    fn apply(&self, v: &Val) -> Option<String> {
        let (body, number) = match (v, self.kind) {
            (Val::Text(t), None | Some('s')) => {
                (self.precision.map_or(t.clone(), |p| t.chars().take(p).collect()), false)
            }
            (Val::Int(n), None | Some('d')) if self.precision.is_none() => (n.to_string(), true),
            (Val::Int(n), Some('f')) => (format!("{:.*}", self.precision.unwrap_or(6), *n as f64), true),
            (Val::Float(f), Some('f')) => (format!("{:.*}", self.precision.unwrap_or(6), f), true),
            (Val::Float(f), None) if self.precision.is_none() => (py_float(*f), true),
            _ => return None,
        };
        let pad = self.width.saturating_sub(body.chars().count());
        let fill = self.fill.unwrap_or(' ').to_string();
        Some(match self.align.unwrap_or(if number { '>' } else { '<' }) {
            '>' => format!("{}{body}", fill.repeat(pad)),
            '^' => format!("{}{body}{}", fill.repeat(pad / 2), fill.repeat(pad - pad / 2)),
            _ => format!("{body}{}", fill.repeat(pad)),
        })
    }
}

/// Fills the fields of `format` from `fields` as nuocmd does (Python's `str.format`, with `{name:spec:default}` for a
/// field without a value; `<NO VALUE>` without a default); `{{` and `}}` are braces. An unknown field or a spec
/// Backset does not take is a usage error.
pub(super) fn render(format: &str, fields: &BTreeMap<&str, Option<Val>>, option: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = format;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let here = format.len() - rest.len() + at;
        if rest[at..].starts_with("{{") || rest[at..].starts_with("}}") {
            out.push_str(&rest[at..=at]);
            rest = &rest[at + 2..];
            continue;
        }
        if rest[at..].starts_with('}') {
            return Err(usage(format!("{option}: '}}' at byte {here} closes no field (write '}}}}' for a brace)")));
        }
        let after = &rest[at + 1..];
        let Some(close) = after.find('}') else {
            return Err(usage(format!("{option}: '{{' at byte {here} is not closed")));
        };
        let inner = &after[..close];
        let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
        let (spec, default) = spec.rsplit_once(':').unwrap_or((spec, "<NO VALUE>"));
        let Some(value) = fields.get(name) else {
            let known: Vec<&str> = fields.keys().copied().collect();
            return Err(usage(format!("{option}: unknown field {{{name}}}; fields: {}", known.join(", "))));
        };
        let bad_spec = || usage(format!("{option}: {{{inner}}}: the format spec {spec:?} does not fit the field"));
        let parsed = Spec::parse(spec).ok_or_else(bad_spec)?;
        match value {
            None => out.push_str(default),
            Some(v) => out.push_str(&parsed.apply(v).ok_or_else(bad_spec)?),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `begin..end` (end shortened to its time on the same date), or `begin...` while running.
fn timestamp_range(r: &HotCopyResponse) -> String {
    match &r.end_timestamp {
        None => format!("{}...", r.begin_timestamp),
        Some(end) => {
            let same_day = end.get(..10).is_some_and(|d| r.begin_timestamp.get(..10) == Some(d));
            format!("{}..{}", r.begin_timestamp, if same_day { &end[11..] } else { end.as_str() })
        }
    }
}

/// The fields of `--process-format`.
pub(super) const PROCESS_FIELDS: [&str; 14] = [
    "engine_type",
    "address",
    "start_id",
    "server_id",
    "pid",
    "node_id",
    "last_ack",
    "durable_state",
    "engine_state",
    "archive_id",
    "db_name",
    "hostname",
    "type",
    "state",
];
/// The fields of `--hotcopy-format`.
pub(super) const HOTCOPY_FIELDS: [&str; 17] = [
    "id",
    "status",
    "timestamp_range",
    "message",
    "stage",
    "type",
    "coordinator_start_id",
    "begin_timestamp",
    "end_timestamp",
    "destination_directory",
    "bytes_done",
    "bytes_total",
    "files_done",
    "files_total",
    "rate",
    "eta",
    "eta_text",
];

/// Checks a format against its fields (unknown field, unclosed `{`) before anything is fetched or printed.
pub(super) fn check_format(format: &str, fields: &[&'static str], option: &str) -> Result<()> {
    render(format, &fields.iter().map(|&f| (f, None)).collect(), option).map(drop)
}

pub(super) fn hotcopy_fields(r: &HotCopyResponse) -> BTreeMap<&'static str, Option<Val>> {
    let text = |t: &str| Some(Val::Text(t.to_string()));
    BTreeMap::from([
        ("id", text(&r.hot_copy_id)),
        ("status", text(&r.status)),
        ("timestamp_range", text(&timestamp_range(r))),
        ("message", text(&r.message)),
        ("stage", Some(Val::Int(r.stage.into()))),
        ("type", text(&r.kind)),
        ("coordinator_start_id", Some(Val::Int(r.coordinator_start_id.into()))),
        ("begin_timestamp", text(&r.begin_timestamp)),
        ("end_timestamp", r.end_timestamp.as_deref().and_then(text)),
        ("destination_directory", text(&r.destination_directory)),
        ("bytes_done", Some(Val::Int(r.bytes_done.into()))),
        ("bytes_total", Some(Val::Int(r.bytes_total.into()))),
        ("files_done", Some(Val::Int(r.files_done.into()))),
        ("files_total", Some(Val::Int(r.files_total.into()))),
        ("rate", Some(Val::Float(r.rate_bytes_per_sec / 1e6))),
        ("eta", r.eta_sec.map(Val::Float)),
        ("eta_text", r.eta_sec.map(|e| Val::Text(eta_text(e)))),
    ])
}

/// A process's fields: nuocmd's names (pynuoadmin's `Process`), and Backset's earlier `type` and `state`.
pub(super) fn process_fields(p: &Process) -> BTreeMap<&'static str, Option<Val>> {
    let text = |t: &str| Some(Val::Text(t.to_string()));
    BTreeMap::from([
        ("engine_type", text(&p.kind)),
        ("type", text(&p.kind)),
        ("address", text(&nuocmd_address(p))),
        ("hostname", text(&p.hostname)),
        ("start_id", Some(Val::Int(p.start_id.into()))),
        ("server_id", text(&p.host)),
        ("pid", Some(Val::Int(p.pid.into()))),
        ("node_id", None),
        ("last_ack", Some(Val::Float(p.last_heard_from as f64 / 1e3))),
        ("durable_state", text(&p.durable_state)),
        ("engine_state", text(&p.state)),
        ("state", text(&p.state)),
        ("archive_id", Some(Val::Int(p.archive_id.into()))),
        ("db_name", text(&p.db_name)),
    ])
}

/// nuocmd's address of a process: `hostname/address:port`, or `hostname:port` when the two are the same.
fn nuocmd_address(p: &Process) -> String {
    if p.hostname == p.address {
        format!("{}:{}", p.hostname, p.port)
    } else {
        format!("{}/{}:{}", p.hostname, p.address, p.port)
    }
}

/// A float as Python prints it (`0.0`, `1.5`).
fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// `Process(address=.., archive_id=.., ...)`: nuocmd's fields (pynuoadmin's `Process`), sorted by name.
pub(super) fn process_line(p: &Process) -> String {
    let map = |m: &BTreeMap<String, String>| {
        format!("{{{}}}", m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
    };
    let ip_version = p.options.get("ip-version").map_or("v4", String::as_str);
    format!(
        "Process(address={}, archive_id={}, db_name={}, durable_state={}, engine_state={}, engine_type={}, \
         ipVersion={ip_version}, labels={}, last_ack={}, options={}, pid={}, server_id={}, start_id={})",
        nuocmd_address(p),
        p.archive_id,
        p.db_name,
        p.durable_state,
        p.state,
        p.kind,
        map(&p.labels),
        py_float(p.last_heard_from as f64 / 1e3),
        map(&p.options),
        p.pid,
        p.host,
        p.start_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageError;

    fn response(end: Option<&str>) -> HotCopyResponse {
        HotCopyResponse {
            hot_copy_id: "832c7a5f-11c2-44ed-8802-00237c347c4e".into(),
            coordinator_start_id: 2,
            begin_timestamp: "2022-04-18 22:53:32".into(),
            end_timestamp: end.map(str::to_string),
            status: if end.is_some() { "completed" } else { "running" }.into(),
            message: if end.is_some() { "Hot copy successfully completed" } else { "Stage1: Copy atoms" }.into(),
            stage: 1,
            destination_directory: "/b".into(),
            uri: String::new(),
            kind: "full".into(),
            bytes_done: 0,
            bytes_total: 0,
            files_done: 0,
            files_total: 0,
            rate_bytes_per_sec: 0.0,
            eta_sec: None,
            max_rate: None,
            participants: Vec::new(),
        }
    }

    #[test]
    fn responses_print_as_nuocmd_does() {
        assert_eq!(
            full(&response(Some("2022-04-18 22:53:33"))),
            "HotCopyResponse(begin_timestamp=2022-04-18 22:53:32, coordinator_start_id=2, end_timestamp=2022-04-18 \
             22:53:33, id=832c7a5f-11c2-44ed-8802-00237c347c4e, message=Hot copy successfully completed, \
             status=completed, timestamp_range=2022-04-18 22:53:32..22:53:33)"
        );
        assert_eq!(
            full(&response(None)),
            "HotCopyResponse(begin_timestamp=2022-04-18 22:53:32, coordinator_start_id=2, \
             id=832c7a5f-11c2-44ed-8802-00237c347c4e, message=Stage1: Copy atoms, status=running, \
             timestamp_range=2022-04-18 22:53:32...)"
        );
        assert_eq!(
            short(2, "832c7a5f-11c2-44ed-8802-00237c347c4e"),
            "HotCopyResponse(coordinator_start_id=2, id=832c7a5f-11c2-44ed-8802-00237c347c4e)"
        );
    }

    #[test]
    fn the_wait_shows_files_and_time_left() {
        let mut r = response(None);
        assert_eq!(progress_note(&r), "Stage1: Copy atoms");
        (r.files_done, r.files_total, r.eta_sec) = (12, 40, Some(64.2));
        assert_eq!(progress_note(&r), "Stage1: Copy atoms, 12/40 files, ETA 1m05s");
        assert_eq!(eta_text(0.0), "0s");
        assert_eq!(eta_text(59.5), "1m00s");
        assert_eq!(eta_text(7380.0), "2h03m");
    }

    #[test]
    fn timestamp_ranges_shorten_the_same_day() {
        assert_eq!(timestamp_range(&response(None)), "2022-04-18 22:53:32...");
        assert_eq!(timestamp_range(&response(Some("2022-04-18 22:53:33"))), "2022-04-18 22:53:32..22:53:33");
        assert_eq!(timestamp_range(&response(Some("2022-04-19 00:00:01"))), "2022-04-18 22:53:32..2022-04-19 00:00:01");
    }

    #[test]
    fn formats_fill_fields_and_name_unknown_ones() {
        let f = BTreeMap::from([
            ("id", Some(Val::Text("x".into()))),
            ("stage", Some(Val::Int(2))),
            ("ack", Some(Val::Float(0.25))),
            ("node", None),
        ]);
        assert_eq!(render("{id} ({stage}) {id}", &f, "--f").unwrap(), "x (2) x");
        let e = render("{id} {nope}", &f, "--f").unwrap_err();
        assert!(e.to_string().contains("unknown field {nope}"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(render("{id", &f, "--f").is_err());
        // nuocmd's (Python's) specs and defaults: {f:spec}, {f::default}, {f:spec:default}, {{ }}.
        assert_eq!(render("[{ack:5.2f:>60}] [{node:5.2f:>60}]", &f, "--f").unwrap(), "[ 0.25] [>60]");
        assert_eq!(render("[{node::}] [{node}] [{id::-}]", &f, "--f").unwrap(), "[] [<NO VALUE>] [x]");
        assert_eq!(
            render("[{stage:>4}] [{id:*^5}] [{id:<3}] [{ack}] {{x}}", &f, "--f").unwrap(),
            "[   2] [**x**] [x  ] [0.25] {x}"
        );
        assert_eq!(render("{stage:.1f}", &f, "--f").unwrap(), "2.0");
        for bad in ["{id:5.2f}", "{stage:q}", "{id:>x}", "a } b"] {
            let e = render(bad, &f, "--f").unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad}: {e}");
        }
    }

    #[test]
    fn the_format_checks_know_every_field_the_lines_fill() {
        let p = Process {
            start_id: 1,
            archive_id: 0,
            db_name: "demo".into(),
            kind: "SM".into(),
            state: "RUNNING".into(),
            hostname: "h".into(),
            address: "a".into(),
            port: 8888,
            host: "h".into(),
            pid: 1,
            durable_state: "MONITORED".into(),
            last_heard_from: 0,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            message: None,
        };
        let mut filled: Vec<&str> = process_fields(&p).into_keys().collect();
        let mut known = PROCESS_FIELDS.to_vec();
        filled.sort_unstable();
        known.sort_unstable();
        assert_eq!(filled, known);
        let mut filled: Vec<&str> = hotcopy_fields(&response(None)).into_keys().collect();
        let mut known = HOTCOPY_FIELDS.to_vec();
        filled.sort_unstable();
        known.sort_unstable();
        assert_eq!(filled, known);
    }
}
