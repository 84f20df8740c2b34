use std::collections::HashMap;

/// Identifies one in-flight request. Ids are never reused within a [`Registry`], so a stale
/// or duplicated completion finds nothing instead of someone else's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// In-flight requests, each holding a `T` (the bridge keeps its strong reference there).
#[derive(Debug)]
pub struct Registry<T> {
    next: u64,
    entries: HashMap<u64, T>,
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
            next: 1,
            entries: HashMap::new(),
        }
    }

    /// Stores `value` under a fresh id.
    pub fn insert(&mut self, value: T) -> RequestId {
        let id = self.next;
        self.next += 1;
        self.entries.insert(id, value);
        RequestId(id)
    }

    /// Takes the request out; `None` for an unknown or already completed id.
    pub fn remove(&mut self, id: RequestId) -> Option<T> {
        self.entries.remove(&id.0)
    }

    /// How many requests are in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn a_completion_is_taken_at_most_once() {
        let mut r = Registry::new();
        let id = r.insert(1);
        assert_eq!(r.len(), 1);
        assert_eq!(r.remove(id), Some(1));
        assert_eq!(r.remove(id), None);
        assert!(r.is_empty());
    }
}
