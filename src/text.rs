//! Words around numbers in what the binary prints: `1 defect`, `2 defects`; `[8, 12]` for a transaction range.

/// `n` and the noun in its number: `one` for 1, `many` otherwise (`0 defects`, `1 defect`, `2 defects`).
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `n` and a noun whose plural adds `s`: `counted(1, "defect")` is `1 defect`.
pub fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A transaction range as every command prints it: `[8, 12]`.
pub fn txn_range(first: u64, last: u64) -> String {
    format!("[{first}, {last}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_noun_in_their_number() {
        assert_eq!(counted(0u64, "defect"), "0 defects");
        assert_eq!(counted(1u64, "defect"), "1 defect");
        assert_eq!(counted(2u64, "journal segment"), "2 journal segments");
        assert_eq!(plural(1u64, "hot copy", "hot copies"), "1 hot copy");
        assert_eq!(plural(3u64, "hot copy", "hot copies"), "3 hot copies");
        assert_eq!(txn_range(8, 12), "[8, 12]");
    }
}
