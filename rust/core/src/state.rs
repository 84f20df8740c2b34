use std::sync::atomic::{AtomicU8, Ordering};

const NEW: u8 = 0;
const CLAIMED: u8 = 1;
const DONE: u8 = 2;

/// Where an operation is in its one-shot life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Built, never accepted by a context (or rolled back before dispatch).
    New,
    /// Accepted by a context; the kernel or a worker may be using its buffer.
    InFlight,
    /// Completed; its result is final and its buffer belongs to Python again.
    Done,
}

/// The state of one operation.
///
/// A claim is won at most once: a claimed op can only go back to [`Phase::New`] through
/// [`OpState::rollback`] (it never reached the kernel) or forward to [`Phase::Done`].
#[derive(Debug, Default)]
pub struct OpState(AtomicU8);

impl OpState {
    /// A fresh, unclaimed state.
    pub const fn new() -> Self {
        Self(AtomicU8::new(NEW))
    }

    /// Claims the operation for dispatch. Returns `false` if it was ever claimed before
    /// (in flight, done, or claimed earlier in the same batch).
    pub fn try_claim(&self) -> bool {
        self.0
            .compare_exchange(NEW, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Undoes a claim for an op that never reached the kernel or a worker.
    ///
    /// # Panics
    /// If the op is not claimed: rolling back a dispatched or finished op is a logic error.
    pub fn rollback(&self) {
        let was = self.0.swap(NEW, Ordering::AcqRel);
        assert_eq!(was, CLAIMED, "rollback of an op that was not claimed");
    }

    /// Marks a claimed op done. The release store publishes the result fields written before it.
    ///
    /// # Panics
    /// If the op was not claimed: a completion for an op nobody dispatched is a logic error.
    pub fn finish(&self) {
        let was = self.0.swap(DONE, Ordering::AcqRel);
        assert_eq!(was, CLAIMED, "completion of an op that was not in flight");
    }

    /// The current phase (acquire load, pairs with [`OpState::finish`]).
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            NEW => Phase::New,
            CLAIMED => Phase::InFlight,
            _ => Phase::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_won_once() {
        let s = OpState::new();
        assert!(s.try_claim());
        assert!(!s.try_claim());
        assert_eq!(s.phase(), Phase::InFlight);
    }

    #[test]
    fn a_rolled_back_op_can_be_claimed_again() {
        let s = OpState::new();
        assert!(s.try_claim());
        s.rollback();
        assert_eq!(s.phase(), Phase::New);
        assert!(s.try_claim());
    }

    #[test]
    fn a_finished_op_is_never_claimed_again() {
        let s = OpState::new();
        assert!(s.try_claim());
        s.finish();
        assert_eq!(s.phase(), Phase::Done);
        assert!(!s.try_claim());
    }

    #[test]
    #[should_panic(expected = "not in flight")]
    fn finishing_an_unclaimed_op_is_a_bug() {
        OpState::new().finish();
    }

    #[test]
    fn racing_claims_have_exactly_one_winner() {
        let s = std::sync::Arc::new(OpState::new());
        let winners: usize = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.try_claim() as usize)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
    }
}
