//! NuoDB's process filter expressions (LBQuery filters), as `--process-filter` and `filterQuery` take them:
//!
//! ```text
//! filter := any | start_id(P) | hostname(P) | address(P) | label(KEY P) | option(KEY P)
//!         | not(filter) | and(filter filter ...) | or(filter filter ...) | first(filter filter ...)
//! P      := * | value | value* | *value | P,P
//! ```
//! `first(f1 f2 ...)` admits what the first of its filters that admits any process admits. A parse error names the
//! byte position where the input stops making sense. The input is untrusted (it comes over HTTP): its length and
//! nesting are bounded ([`MAX_FILTER_BYTES`], [`MAX_FILTER_DEPTH`]), so parsing is linear and never overflows the
//! stack. A filter prints ([`Display`](fmt::Display)) as the shortest text that parses back to it. The fuzz target
//! `process_filter` (`fuzz/`, body in [`fuzz::process_filter`]) parses arbitrary bytes: an error within the input, or
//! a filter that prints and parses back equal, never a panic; `tests/process_filter_corpus.rs` replays its corpus.
//!
//! This module uses nothing but `std` (processes are seen through [`Selectable`]), so that the fuzz crate compiles
//! it alone (`#[path]`) without the server's dependencies.

use std::fmt;

/// Longest filter expression accepted, bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of `not`, `and`, `or`, `first` accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

/// What a filter looks at in a process.
pub trait Selectable {
    /// Start id.
    fn start_id(&self) -> u64;
    /// Host name.
    fn hostname(&self) -> &str;
    /// Address.
    fn address(&self) -> &str;
    /// The value of label `key`, if it has one.
    fn label(&self, key: &str) -> Option<&str>;
    /// The value of option `key`, if it has one.
    fn option(&self, key: &str) -> Option<&str>;
}

/// A parsed filter. It prints as the shortest expression that parses to it: one space only between two words,
/// `label(k v)`, `and(any label(k v)not(any))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessFilter {
    /// Every process.
    Any,
    /// Start id matches.
    StartId(Pattern),
    /// Host name matches.
    Hostname(Pattern),
    /// Address matches.
    Address(Pattern),
    /// The label exists and its value matches.
    Label(String, Pattern),
    /// The option exists and its value matches.
    Option(String, Pattern),
    /// The filter does not admit the process.
    Not(Box<ProcessFilter>),
    /// Every filter admits it.
    And(Vec<ProcessFilter>),
    /// Some filter admits it.
    Or(Vec<ProcessFilter>),
    /// What the first filter that admits any process admits.
    First(Vec<ProcessFilter>),
}

/// A value pattern: alternatives separated by commas, each `*`, `value`, `value*` or `*value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Alt>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Alt {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    /// Whether `value` matches one of the alternatives.
    pub fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|a| match a {
            Alt::Any => true,
            Alt::Exact(s) => value == s,
            Alt::Prefix(s) => value.starts_with(s.as_str()),
            Alt::Suffix(s) => value.ends_with(s.as_str()),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, alt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match alt {
                Alt::Any => f.write_str("*")?,
                Alt::Exact(s) => f.write_str(s)?,
                Alt::Prefix(s) => write!(f, "{s}*")?,
                Alt::Suffix(s) => write!(f, "*{s}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for ProcessFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::StartId(p) => write!(f, "start_id({p})"),
            Self::Hostname(p) => write!(f, "hostname({p})"),
            Self::Address(p) => write!(f, "address({p})"),
            Self::Label(k, p) => write!(f, "label({k} {p})"),
            Self::Option(k, p) => write!(f, "option({k} {p})"),
            Self::Not(x) => write!(f, "not({x})"),
            Self::And(list) | Self::Or(list) | Self::First(list) => {
                let name = match self {
                    Self::And(_) => "and",
                    Self::Or(_) => "or",
                    _ => "first",
                };
                write!(f, "{name}(")?;
                for (i, x) in list.iter().enumerate() {
                    // Only `any` ends in a word; after a `)` the next filter needs no space.
                    if i > 0 && list[i - 1] == Self::Any {
                        f.write_str(" ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A filter that does not parse: what was expected, and where (byte offset into the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterParseError {
    /// Byte offset where the error is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
    input: String,
}

impl fmt::Display for FilterParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid process filter at position {}: {}", self.position, self.message)?;
        if self.input.len() <= 200 && !self.input.contains(['\n', '\r']) {
            write!(f, "\n  {}\n  {}^", self.input, " ".repeat(self.input[..self.position].chars().count()))?;
        }
        Ok(())
    }
}

impl std::error::Error for FilterParseError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Open,
    Close,
    End,
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, position: usize, message: impl Into<String>) -> FilterParseError {
        FilterParseError { position, message: message.into(), input: self.input.to_string() }
    }

    /// The next token and its position, without consuming it.
    fn peek(&self) -> (usize, Tok<'a>) {
        let rest = &self.input[self.pos..];
        let start = self.pos + (rest.len() - rest.trim_start().len());
        let rest = &self.input[start..];
        match rest.chars().next() {
            None => (start, Tok::End),
            Some('(') => (start, Tok::Open),
            Some(')') => (start, Tok::Close),
            Some(_) => {
                let len = rest.find(|c: char| c.is_whitespace() || c == '(' || c == ')').unwrap_or(rest.len());
                (start, Tok::Word(&rest[..len]))
            }
        }
    }

    fn next(&mut self) -> (usize, Tok<'a>) {
        let (at, tok) = self.peek();
        self.pos = at
            + match tok {
                Tok::Word(w) => w.len(),
                Tok::Open | Tok::Close => 1,
                Tok::End => 0,
            };
        (at, tok)
    }

    fn expect(&mut self, want: Tok<'static>, what: &str) -> Result<(), FilterParseError> {
        let (at, tok) = self.next();
        if tok == want {
            Ok(())
        } else {
            Err(self.err(at, format!("expected {what}, found {}", describe(tok))))
        }
    }

    fn word(&mut self, what: &str) -> Result<(usize, &'a str), FilterParseError> {
        match self.next() {
            (at, Tok::Word(w)) => Ok((at, w)),
            (at, tok) => Err(self.err(at, format!("expected {what}, found {}", describe(tok)))),
        }
    }

    fn pattern(&mut self) -> Result<Pattern, FilterParseError> {
        let (at, w) = self.word("a value pattern (*, value, value*, *value, or several joined by commas)")?;
        let mut alts = Vec::new();
        let mut offset = at;
        for part in w.split(',') {
            let alt = match part {
                "" => return Err(self.err(offset, "empty value in the pattern")),
                "*" => Alt::Any,
                _ => {
                    // One '*' at most, at the start or at the end.
                    let (lead, rest) = part.strip_prefix('*').map_or((false, part), |r| (true, r));
                    let (trail, inner) = rest.strip_suffix('*').map_or((false, rest), |r| (true, r));
                    if inner.contains('*') || (lead && trail) || inner.is_empty() {
                        let star =
                            part.char_indices().skip(1).find(|&(_, c)| c == '*').map_or(offset, |(i, _)| offset + i);
                        return Err(self.err(star, "'*' may only stand alone, or at the start or the end of a value"));
                    }
                    if lead {
                        Alt::Suffix(inner.to_string())
                    } else if trail {
                        Alt::Prefix(inner.to_string())
                    } else {
                        Alt::Exact(inner.to_string())
                    }
                }
            };
            alts.push(alt);
            offset += part.len() + 1;
        }
        Ok(Pattern(alts))
    }

    fn filter(&mut self, depth: usize) -> Result<ProcessFilter, FilterParseError> {
        let (at, name) =
            self.word("a filter (any, start_id, hostname, address, label, option, not, and, or, first)")?;
        if name == "any" {
            return Ok(ProcessFilter::Any);
        }
        let known = ["start_id", "hostname", "address", "label", "option", "not", "and", "or", "first"];
        if !known.contains(&name) {
            return Err(self.err(
                at,
                format!(
                    "unknown filter {name:?}; use any, start_id, hostname, address, label, option, not, and, or, first"
                ),
            ));
        }
        if depth >= MAX_FILTER_DEPTH {
            return Err(self.err(at, format!("filters nest deeper than {MAX_FILTER_DEPTH} levels")));
        }
        self.expect(Tok::Open, &format!("'(' after {name}"))?;
        let f = match name {
            "start_id" => ProcessFilter::StartId(self.pattern()?),
            "hostname" => ProcessFilter::Hostname(self.pattern()?),
            "address" => ProcessFilter::Address(self.pattern()?),
            "label" | "option" => {
                let (_, key) = self.word(&format!("the {name}'s key"))?;
                let p = self.pattern()?;
                if name == "label" {
                    ProcessFilter::Label(key.to_string(), p)
                } else {
                    ProcessFilter::Option(key.to_string(), p)
                }
            }
            "not" => ProcessFilter::Not(Box::new(self.filter(depth + 1)?)),
            _ => {
                let mut list = vec![self.filter(depth + 1)?];
                while !matches!(self.peek().1, Tok::Close | Tok::End) {
                    list.push(self.filter(depth + 1)?);
                }
                match name {
                    "and" => ProcessFilter::And(list),
                    "or" => ProcessFilter::Or(list),
                    _ => ProcessFilter::First(list),
                }
            }
        };
        self.expect(Tok::Close, &format!("')' closing {name}"))?;
        Ok(f)
    }
}

fn describe(tok: Tok<'_>) -> String {
    match tok {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::End => "the end of the filter".into(),
    }
}

impl ProcessFilter {
    /// Parses a filter expression.
    pub fn parse(input: &str) -> Result<Self, FilterParseError> {
        let mut p = Parser { input, pos: 0 };
        if input.len() > MAX_FILTER_BYTES {
            // At the first character that does not fit (a position is always a character boundary).
            let at = (0..=MAX_FILTER_BYTES).rev().find(|&i| input.is_char_boundary(i)).unwrap_or(0);
            return Err(p.err(at, format!("longer than {MAX_FILTER_BYTES} bytes")));
        }
        let f = p.filter(0)?;
        match p.next() {
            (_, Tok::End) => Ok(f),
            (at, tok) => Err(p.err(at, format!("expected the end of the filter, found {}", describe(tok)))),
        }
    }

    /// Which of `processes` the filter admits (one flag per process, in order).
    pub fn admits<P: Selectable>(&self, processes: &[P]) -> Vec<bool> {
        let each = |test: &dyn Fn(&P) -> bool| processes.iter().map(test).collect();
        match self {
            Self::Any => vec![true; processes.len()],
            Self::StartId(p) => each(&|x| p.matches(&x.start_id().to_string())),
            Self::Hostname(p) => each(&|x| p.matches(x.hostname())),
            Self::Address(p) => each(&|x| p.matches(x.address())),
            Self::Label(k, p) => each(&|x| x.label(k).is_some_and(|v| p.matches(v))),
            Self::Option(k, p) => each(&|x| x.option(k).is_some_and(|v| p.matches(v))),
            Self::Not(f) => f.admits(processes).into_iter().map(|b| !b).collect(),
            Self::And(fs) | Self::Or(fs) => {
                let and = matches!(self, Self::And(_));
                let mut out = vec![and; processes.len()];
                for f in fs {
                    for (o, b) in out.iter_mut().zip(f.admits(processes)) {
                        *o = if and { *o && b } else { *o || b };
                    }
                }
                out
            }
            Self::First(fs) => fs
                .iter()
                .map(|f| f.admits(processes))
                .find(|v| v.iter().any(|&b| b))
                .unwrap_or_else(|| vec![false; processes.len()]),
        }
    }
}

/// The fuzz target's body, shared by `fuzz/fuzz_targets/process_filter.rs` and by the test that replays
/// `fuzz/corpus/process_filter/` and `fuzz/artifacts/process_filter/` (`tests/process_filter_corpus.rs`).
pub mod fuzz {
    use super::{ProcessFilter, Selectable};

    struct Sm {
        start_id: u64,
        hostname: &'static str,
        address: &'static str,
        labels: &'static [(&'static str, &'static str)],
        options: &'static [(&'static str, &'static str)],
    }

    fn get<'a>(pairs: &'a [(&str, &'a str)], key: &str) -> Option<&'a str> {
        pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    impl Selectable for Sm {
        fn start_id(&self) -> u64 {
            self.start_id
        }
        fn hostname(&self) -> &str {
            self.hostname
        }
        fn address(&self) -> &str {
            self.address
        }
        fn label(&self, key: &str) -> Option<&str> {
            get(self.labels, key)
        }
        fn option(&self, key: &str) -> Option<&str> {
            get(self.options, key)
        }
    }

    const PROCESSES: [Sm; 3] = [
        Sm {
            start_id: 1,
            hostname: "db-0",
            address: "127.0.0.1:8888",
            labels: &[("archive-id", "0"), ("role", "hotcopy")],
            options: &[("journal-hot-copy", "enable")],
        },
        Sm {
            start_id: 2,
            hostname: "db-1",
            address: "127.0.0.1:8888",
            labels: &[("archive-id", "1"), ("storage-groups", "SG2")],
            options: &[("archive-dir", "/var/lib/backset/database/1")],
        },
        Sm { start_id: 10, hostname: "h\u{f4}te", address: "[::1]:48004", labels: &[], options: &[] },
    ];

    /// Parses `data` as a filter (invalid UTF-8 replaced by U+FFFD) and asserts what holds for any input: an error
    /// points at a character boundary within the input and prints; a filter prints as text no longer than the input,
    /// which parses back to an equal filter printing the same, and it selects among processes. Never a panic.
    pub fn process_filter(data: &[u8]) {
        let input = String::from_utf8_lossy(data);
        match ProcessFilter::parse(&input) {
            Err(e) => {
                assert!(e.position <= input.len() && input.is_char_boundary(e.position), "{input:?}: {e}");
                let _ = e.to_string();
            }
            Ok(filter) => {
                let printed = filter.to_string();
                assert!(printed.len() <= input.len(), "{input:?} prints longer, as {printed:?}");
                let again = ProcessFilter::parse(&printed)
                    .unwrap_or_else(|e| panic!("{input:?} prints as {printed:?}, which does not parse: {e}"));
                assert_eq!(again, filter, "{input:?} prints as {printed:?}");
                assert_eq!(again.to_string(), printed);
                let admitted = filter.admits(&PROCESSES);
                assert_eq!(admitted.len(), PROCESSES.len());
                let negated = ProcessFilter::Not(Box::new(filter)).admits(&PROCESSES);
                assert!(admitted.iter().zip(&negated).all(|(a, n)| a != n), "{input:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Process {
        start_id: u64,
        hostname: String,
        address: String,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    }

    impl Selectable for Process {
        fn start_id(&self) -> u64 {
            self.start_id
        }
        fn hostname(&self) -> &str {
            &self.hostname
        }
        fn address(&self) -> &str {
            &self.address
        }
        fn label(&self, key: &str) -> Option<&str> {
            self.labels.get(key).map(String::as_str)
        }
        fn option(&self, key: &str) -> Option<&str> {
            self.options.get(key).map(String::as_str)
        }
    }

    fn sm(start_id: u64, labels: &[(&str, &str)]) -> Process {
        Process {
            start_id,
            hostname: format!("host-{start_id}"),
            address: "127.0.0.1:8888".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            options: BTreeMap::from([("journal-hot-copy".into(), "enable".into())]),
        }
    }

    fn admitted(filter: &str, ps: &[Process]) -> Vec<u64> {
        let f = ProcessFilter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        f.admits(ps).iter().zip(ps).filter(|(b, _)| **b).map(|(_, p)| p.start_id).collect()
    }

    #[test]
    fn filters_print_as_their_shortest_form_and_parse_back() {
        for (input, printed) in [
            ("any", "any"),
            ("  label( role   * )  ", "label(role *)"),
            (
                "and(label(backup cluster0) label(pod-name *-hotcopy-0))",
                "and(label(backup cluster0)label(pod-name *-hotcopy-0))",
            ),
            ("first(any any not( any ))", "first(any any not(any))"),
            (
                "or(start_id(1,3) hostname(*-3) address(127.0.0.1:*) option(k v))",
                "or(start_id(1,3)hostname(*-3)address(127.0.0.1:*)option(k v))",
            ),
        ] {
            let f = ProcessFilter::parse(input).unwrap();
            assert_eq!(f.to_string(), printed);
            assert_eq!(ProcessFilter::parse(printed).unwrap(), f);
            fuzz::process_filter(input.as_bytes());
        }
    }

    #[test]
    fn filters_select_as_nuodb_documents() {
        let ps = [
            sm(1, &[("role", "hotcopy"), ("pod-name", "db-hotcopy-0")]),
            sm(2, &[("role", "serving"), ("backup", "cluster0")]),
            sm(3, &[("backup", "cluster0"), ("pod-name", "sm-hotcopy-0")]),
        ];
        assert_eq!(admitted("any", &ps), [1, 2, 3]);
        assert_eq!(admitted("label(role hotcopy)", &ps), [1]);
        assert_eq!(admitted("and(label(backup cluster0) label(pod-name *-hotcopy-0))", &ps), [3]);
        assert_eq!(admitted("start_id(1,3)", &ps), [1, 3]);
        assert_eq!(admitted("not(start_id(2))", &ps), [1, 3]);
        assert_eq!(admitted("or(label(role serv*) hostname(*-3))", &ps), [2, 3]);
        assert_eq!(admitted("first(label(role nothing) label(backup *) any)", &ps), [2, 3]);
        assert_eq!(admitted("first(label(role nothing))", &ps), Vec::<u64>::new());
        assert_eq!(admitted("option(journal-hot-copy enable)", &ps), [1, 2, 3]);
        assert_eq!(admitted("  label( role   * )  ", &ps), [1, 2]);
        assert_eq!(admitted("address(127.0.0.1:*)", &ps), [1, 2, 3]);
    }

    #[test]
    fn errors_point_at_the_position() {
        let cases = [
            ("", 0, "expected a filter"),
            ("labl(role x)", 0, "unknown filter \"labl\""),
            ("label role x)", 6, "expected '(' after label"),
            ("label(role)", 10, "expected a value pattern"),
            ("label(role x", 12, "expected ')' closing label"),
            ("label(role x) any", 14, "expected the end of the filter"),
            ("start_id(1,,2)", 11, "empty value"),
            ("start_id(a*b)", 10, "'*' may only stand alone"),
            ("start_id(a**)", 10, "'*' may only stand alone"),
            ("start_id(**a)", 10, "'*' may only stand alone"),
            ("start_id(**)", 10, "'*' may only stand alone"),
            ("and()", 4, "expected a filter"),
            ("not(any any)", 8, "expected ')' closing not"),
            (")", 0, "found ')'"),
        ];
        for (input, position, message) in cases {
            let e = ProcessFilter::parse(input).expect_err(input);
            assert_eq!(e.position, position, "{input:?}: {e}");
            assert!(e.message.contains(message), "{input:?}: {e}");
            assert!(e.to_string().contains(&format!("at position {position}")));
        }
        let e = ProcessFilter::parse("label(role x").unwrap_err().to_string();
        assert!(e.ends_with("\n  label(role x\n              ^"), "{e}");
    }

    #[test]
    fn token_soup_never_panics_and_errors_stay_in_the_input() {
        // The fuzz target's body on a deterministic token soup (the fuzzer takes it further): strings of grammar
        // tokens and odd characters, each an error within the input or a filter that prints and parses back.
        let pieces = [
            "any", "not", "and", "or", "first", "label", "option", "start_id", "hostname", "(", ")", " ", "*", ",",
            "k", "v*", "*v", "\u{e9}", "\t", "",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for i in 0..(x % 12) {
                s.push_str(pieces[((x >> (i * 5)) % pieces.len() as u64) as usize]);
            }
            fuzz::process_filter(s.as_bytes());
        }
    }

    #[test]
    fn length_and_depth_are_bounded() {
        let deep = format!("{}any{}", "not(".repeat(MAX_FILTER_DEPTH + 1), ")".repeat(MAX_FILTER_DEPTH + 1));
        let e = ProcessFilter::parse(&deep).unwrap_err();
        assert!(e.message.contains("nest deeper"), "{e}");
        let ok = format!("{}any{}", "not(".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH));
        assert!(ProcessFilter::parse(&ok).is_ok());
        let long = format!("start_id({})", "1,".repeat(MAX_FILTER_BYTES));
        assert!(ProcessFilter::parse(&long).unwrap_err().message.contains("longer than"));
        // A multi-byte character across the length limit: the error points at its start.
        let e = ProcessFilter::parse(&format!("{}\u{e9}", "a".repeat(MAX_FILTER_BYTES - 1))).unwrap_err();
        assert_eq!(e.position, MAX_FILTER_BYTES - 1, "{e}");
        for s in ["\u{e9}(", "not(\u{e9}", "label(\u{e9} *\u{e9})", "first(any", "*", "(((", "label(k *,*)"] {
            fuzz::process_filter(s.as_bytes());
        }
    }
}
