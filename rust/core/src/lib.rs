//! The safe core of caio: what every backend shares, with no Python and no kernel in sight.
//!
//! - [`OpState`]: the one-shot life of an operation (new → claimed → done).
//! - [`Registry`]: in-flight requests keyed by never-reused [`RequestId`]s.
//! - [`Completion`] and [`CompletionQueue`]: finished requests waiting to be delivered.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod completion;
mod registry;
mod state;

pub use completion::{Completion, CompletionQueue, WaitOutcome, Waiter};
pub use registry::{Registry, RequestId};
pub use state::{OpState, Phase};
