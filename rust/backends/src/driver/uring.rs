//! STUB (lead's compile stub; replaced by the drv-uring branch)
#![allow(missing_docs, unused)]
use super::*;
pub enum UringSetupError {
    EventFd(io::Error),
    Ring(io::Error),
}
pub struct UringDriver<E: Entry>(std::marker::PhantomData<fn(E)>, InFlight<E>);
impl<E: Entry> UringDriver<E> {
    pub fn new(max_requests: u32, sqpoll: bool) -> Result<Self, UringSetupError> {
        todo!()
    }
    pub fn sqpoll(&self) -> bool {
        todo!()
    }
    pub fn ring_fd(&self) -> std::os::fd::RawFd {
        todo!()
    }
    pub fn flush(&self, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        todo!()
    }
}
impl<E: Entry> Driver<E> for UringDriver<E> {
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
