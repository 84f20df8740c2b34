//! STUB (lead's compile stub; replaced by the drv-thread branch)
#![allow(missing_docs, unused)]
use super::*;
pub enum ThreadSetupError {
    EventFd(io::Error),
    Threads(io::Error),
}
pub struct ThreadDriver<E: Entry>(std::marker::PhantomData<fn(E)>, InFlight<E>);
impl<E: Entry> ThreadDriver<E> {
    pub fn new(
        pool_size: usize,
        queue_limit: usize,
        delivery: Delivery<E>,
    ) -> Result<Self, ThreadSetupError> {
        todo!()
    }
    pub fn pool_size(&self) -> usize {
        todo!()
    }
}
impl<E: Entry> Driver<E> for ThreadDriver<E> {
    fn dispatch(&self, batch: Vec<Submission<E>>) -> Dispatched<E> {
        todo!()
    }
    fn wait(
        &self,
        min: usize,
        timeout: Option<Duration>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        todo!()
    }
    fn take(&self, max: usize, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        todo!()
    }
    fn cancel(&self, id: RequestId) -> io::Result<CancelOutcome<E>> {
        todo!()
    }
    fn shutdown(&self) {
        todo!()
    }
    fn eventfd(&self) -> Option<&EventFd> {
        todo!()
    }
    fn in_flight(&self) -> usize {
        todo!()
    }
    fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()> {
        todo!()
    }
}
