//! Bulk loader (todo).
