use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one in-flight request. Ids come from one process-wide counter and are never
/// reused, so a stale, duplicated or foreign id (say, a cancel aimed at another context's
/// request) finds nothing instead of someone else's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// In-flight requests, each holding a `T` (the bridge keeps its strong reference there).
#[derive(Debug)]
pub struct Registry<T> {
    entries: HashMap<u64, T>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RequestId {
    /// An id no request will ever have (cancel sentinels and "no such request").
    pub const NONE: RequestId = RequestId(u64::MAX);

    /// A fresh id, unique in this process.
    pub fn fresh() -> Self {
        RequestId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Registry<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    /// Stores `value` under a fresh id.
    pub fn insert(&mut self, value: T) -> RequestId {
        let id = RequestId::fresh();
        self.entries.insert(id.0, value);
        id
    }

    /// Registers `value` under `id`, which the caller took from [`RequestId::fresh`] (and
    /// may have recorded elsewhere first, e.g. where a cancel finds it).
    ///
    /// # Panics
    /// If `id` is already registered (a fresh id never is).
    pub fn insert_at(&mut self, id: RequestId, value: T) {
        match self.entries.entry(id.0) {
            // Checked before inserting: the entry already there must not be dropped (its
            // buffer may be in the kernel's hands).
            Entry::Occupied(_) => panic!("request id {} registered twice", id.0),
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
    }

    /// Takes the request out; `None` for an unknown or already completed id.
    pub fn remove(&mut self, id: RequestId) -> Option<T> {
        self.entries.remove(&id.0)
    }

    /// The request stored under `id`, to update it in place.
    pub fn get_mut(&mut self, id: RequestId) -> Option<&mut T> {
        self.entries.get_mut(&id.0)
    }

    /// How many requests are in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The requests in flight, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.values()
    }

    /// Removes every entry and hands them out (used to leak what can no longer complete).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.entries.drain().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused() {
        let mut r = Registry::new();
        let a = r.insert("a");
        assert_eq!(r.remove(a), Some("a"));
        let b = r.insert("b");
        assert_ne!(a, b);
        assert_eq!(r.remove(a), None, "a stale id must find nothing");
        assert_eq!(r.remove(b), Some("b"));
    }

    #[test]
    fn ids_are_unique_across_registries() {
        let mut a = Registry::new();
        let mut b = Registry::new();
        let ia = a.insert(1);
        let ib = b.insert(2);
        assert_ne!(ia, ib);
        assert_eq!(
            a.remove(ib),
            None,
            "another registry's id must find nothing"
        );
        assert_ne!(ia, RequestId::NONE);
    }

    #[test]
    fn an_id_registered_twice_panics_and_keeps_the_first_value() {
        let mut r = Registry::new();
        let id = RequestId::fresh();
        r.insert_at(id, "first");
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.insert_at(id, "second");
        }));
        assert!(again.is_err());
        assert_eq!(r.remove(id), Some("first"));
    }

    #[test]
    fn a_completion_is_taken_at_most_once() {
        let mut r = Registry::new();
        let id = r.insert(1);
        assert_eq!(r.len(), 1);
        assert_eq!(r.remove(id), Some(1));
        assert_eq!(r.remove(id), None);
        assert!(r.is_empty());
    }
}
