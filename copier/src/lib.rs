//! `backset-copier`: the io_uring copy engine with BLAKE3 on the fly and a per-SM rate limit.
//!
//! Skeleton: the engine arrives with its own issue (see DESIGN.md, "The copier").
