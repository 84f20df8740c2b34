//! STUB (lead's compile stub; replaced by the drv-aio branch)
#![allow(missing_docs, unused)]
use super::*;
pub enum AioSetupError {
    EventFd(io::Error),
    Context(io::Error),
}
pub struct AioDriver<E: Entry>(std::marker::PhantomData<fn(E)>, InFlight<E>);
impl<E: Entry> AioDriver<E> {
    pub fn new(max_requests: u32) -> Result<Self, AioSetupError> {
        todo!()
    }
}
impl<E: Entry> Driver<E> for AioDriver<E> {
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
