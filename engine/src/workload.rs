//! Workload generator (todo).
