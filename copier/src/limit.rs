//! Per-SM and per-job rate limiting (being written).
