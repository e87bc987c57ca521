//! nuoadmin's paging of list endpoints, as nuocmd uses it (`GET /processes`): the query names `offset`, `limit`,
//! `filterBy` (field names, each repeated or comma-separated, whose values are query parameters of the same name),
//! `orderBy` and `descendingFields` (comma-separated field names); the answer carries `data` (the page), `hasNext`
//! (more follow) and `maxLimit` ([`MAX_PAGE_LIMIT`]). See docs/CLI.md.

use std::cmp::Ordering;

use serde_json::Value;

use crate::api::MAX_PAGE_LIMIT;

/// One page of a list, and whether more follow it.
#[derive(Debug)]
pub struct Page {
    /// The items of the page, in order.
    pub data: Vec<Value>,
    /// Whether items follow the page.
    pub has_next: bool,
}

/// The text a field is compared as: a string as it is, a number or a boolean as written in JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numbers (and strings of them, as nuoadmin's `startId`) compare as numbers, everything else as text.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (a, b) = (a.map(text).unwrap_or_default(), b.map(text).unwrap_or_default());
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(&b),
    }
}

/// The comma-separated names of every `key` parameter, in order, empty ones left out.
fn names<'q>(query: &'q [(String, String)], key: &str) -> Vec<&'q str> {
    query
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
}

fn whole(query: &[(String, String)], key: &str) -> Result<Option<usize>, String> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().parse().map_err(|_| format!("{key}={v:?} is not a whole number, zero or more")))
        .transpose()
}

/// Filters, orders and pages `items` (JSON objects whose names are `fields`) as `query` asks. Without `limit` the
/// page runs to the end of the list; a `limit` above [`MAX_PAGE_LIMIT`] is that. An unknown field name, a `filterBy`
/// field without its value, or a malformed `offset` or `limit` is an error naming it.
pub fn page(mut items: Vec<Value>, fields: &[&str], query: &[(String, String)]) -> Result<Page, String> {
    let known = |name: &str| -> Result<(), String> {
        if fields.contains(&name) {
            Ok(())
        } else {
            Err(format!("unknown field {name:?}; fields: {}", fields.join(", ")))
        }
    };
    for name in names(query, "filterBy") {
        known(name).map_err(|e| format!("filterBy: {e}"))?;
        let Some((_, want)) = query.iter().rev().find(|(k, _)| k == name) else {
            return Err(format!("filterBy names {name} but the query has no {name}=VALUE"));
        };
        items.retain(|item| item.get(name).map(text).as_deref() == Some(want.as_str()));
    }
    let order = names(query, "orderBy");
    let descending = names(query, "descendingFields");
    for name in order.iter().chain(&descending) {
        known(name).map_err(|e| format!("orderBy/descendingFields: {e}"))?;
    }
    let mut keys: Vec<&str> = order.clone();
    keys.extend(descending.iter().filter(|d| !order.contains(d)));
    if !keys.is_empty() {
        // A stable sort: items equal on every key keep the list's own order.
        items.sort_by(|a, b| {
            keys.iter()
                .map(|k| {
                    let o = compare(a.get(*k), b.get(*k));
                    if descending.contains(k) {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    let offset = whole(query, "offset")?.unwrap_or(0);
    let limit = whole(query, "limit")?.map(|l| l.min(MAX_PAGE_LIMIT));
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).collect();
    let has_next = offset.saturating_add(data.len()) < total;
    Ok(Page { data, has_next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn items(n: usize) -> Vec<Value> {
        (1..=n).map(|i| json!({"startId": i.to_string(), "dbName": if i % 2 == 0 { "even" } else { "odd" }})).collect()
    }

    fn ids(p: &Page) -> Vec<String> {
        p.data.iter().map(|v| v["startId"].as_str().unwrap().to_string()).collect()
    }

    const FIELDS: [&str; 2] = ["startId", "dbName"];

    #[test]
    fn pages_follow_offset_and_limit_up_to_the_max_limit() {
        let all = items(MAX_PAGE_LIMIT + 5);
        let p = page(all.clone(), &FIELDS, &q(&[("offset", "0"), ("limit", "20")])).unwrap();
        assert_eq!((p.data.len(), p.has_next), (20, true));
        // At the edge: a limit of exactly the maximum, and one past it, both give MAX_PAGE_LIMIT items.
        for limit in [MAX_PAGE_LIMIT, MAX_PAGE_LIMIT + 1] {
            let p = page(all.clone(), &FIELDS, &q(&[("limit", &limit.to_string())])).unwrap();
            assert_eq!((p.data.len(), p.has_next), (MAX_PAGE_LIMIT, true), "limit {limit}");
        }
        let p = page(all.clone(), &FIELDS, &q(&[("offset", &MAX_PAGE_LIMIT.to_string()), ("limit", "20")])).unwrap();
        assert_eq!((p.data.len(), p.has_next), (5, false));
        // The last page ends exactly at the end: nothing follows.
        let p = page(items(40), &FIELDS, &q(&[("offset", "20"), ("limit", "20")])).unwrap();
        assert_eq!((p.data.len(), p.has_next), (20, false));
        let p = page(items(3), &FIELDS, &q(&[("offset", "7")])).unwrap();
        assert_eq!((p.data.len(), p.has_next), (0, false));
        // No limit: to the end.
        assert_eq!(page(all, &FIELDS, &[]).unwrap().data.len(), MAX_PAGE_LIMIT + 5);
    }

    #[test]
    fn filters_and_orders_as_nuocmd_asks() {
        // nuocmd: filterBy repeated, each value in its own parameter; orderBy=startId (numbers, not text).
        let query = q(&[("filterBy", "dbName"), ("dbName", "odd"), ("orderBy", "startId")]);
        assert_eq!(ids(&page(items(12), &FIELDS, &query).unwrap()), ["1", "3", "5", "7", "9", "11"]);
        let query = q(&[("orderBy", "dbName,startId"), ("descendingFields", "startId"), ("limit", "3")]);
        assert_eq!(ids(&page(items(5), &FIELDS, &query).unwrap()), ["4", "2", "5"]);
        assert_eq!(ids(&page(items(3), &FIELDS, &q(&[("filterBy", "dbName"), ("dbName", "none")])).unwrap()), [""; 0]);
    }

    #[test]
    fn bad_queries_name_what_is_wrong() {
        for (query, needle) in [
            (q(&[("filterBy", "nope"), ("nope", "x")]), "unknown field \"nope\""),
            (q(&[("filterBy", "dbName")]), "no dbName=VALUE"),
            (q(&[("orderBy", "x")]), "unknown field \"x\""),
            (q(&[("offset", "-1")]), "offset=\"-1\""),
            (q(&[("limit", "ten")]), "limit=\"ten\""),
        ] {
            let e = page(items(2), &FIELDS, &query).unwrap_err();
            assert!(e.contains(needle), "{query:?}: {e}");
        }
    }
}
