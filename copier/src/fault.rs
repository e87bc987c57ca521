//! Test only: a fault hook in the io_uring backend's completion handler, and what the backend's guard did when the
//! panic it makes unwound the job.
//!
//! Compiled only with the feature `fault-injection`, which nothing but this crate's own tests turns on (the crate
//! lists itself as a dev-dependency with it): `cargo build` and `cargo build --release` of Backset, and every
//! dependent's normal build, do not have it. Arm it with [`crate::SmCopier::panic_at_completion`]; read what
//! happened with [`crate::SmCopier::take_unwound`].

/// What the io_uring backend found and did when a job ended by a panic of its own code (caught on the ring thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwound {
    /// Operations the kernel still owned when the panic reached the guard (their memory must not be freed yet).
    pub in_flight: usize,
    /// Operations in flight once the guard was done: zero, or the process would have aborted.
    pub in_flight_after: usize,
    /// Buffers the hashing thread had not answered for once the guard was done.
    pub hashes_outstanding_after: usize,
}

/// The hook's state, one per job on the ring.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    /// Panic while handling this completion (1 for the first) of the job.
    pub(crate) panic_at: Option<u64>,
    /// Completions of the job handled so far.
    pub(crate) handled: u64,
}

impl FaultState {
    /// Called by the completion handler for each completion: panics at the armed one.
    pub(crate) fn completion(&mut self) {
        self.handled += 1;
        if self.panic_at == Some(self.handled) {
            self.panic_at = None;
            panic!("fault injection: panic in the handler of completion {}", self.handled);
        }
    }
}
