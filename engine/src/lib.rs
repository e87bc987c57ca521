//! `backset-engine`: the `Archive` trait, the reference store, hot copy jobs, restore and check.
//!
//! Skeleton: the engine arrives with its own issue (see DESIGN.md, "Hot copy: the consistency rule").
