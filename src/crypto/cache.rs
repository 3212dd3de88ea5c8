//! The bounded cache of unwrapped stream keys (and of shredded streams), so that no read or
//! append unwraps a key more than once while it stays cached. Evicted and replaced keys are
//! dropped, which wipes them (see `aead`).

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;
use foldhash::HashMapExt;

use crate::cipher::StreamKey;
use crate::types::StreamId;

/// What the cache knows about a stream.
#[derive(Clone)]
pub(crate) enum Slot {
    Key(Arc<StreamKey>),
    Shredded,
}

/// A map with first-in, first-out eviction once `capacity` streams are held. Hashed with
/// foldhash (seeded per process), not SipHash: an encrypted scan looks a key up per record.
/// The generation changes with every shred, so that a lookup that started before a shred cannot
/// put the destroyed key back (see [`Cache::insert_if`]).
pub(crate) struct Cache {
    slots: HashMap<u128, Slot>,
    order: VecDeque<u128>,
    capacity: usize,
    generation: u64,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            slots: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    pub(crate) fn get(&mut self, stream: StreamId) -> Option<Slot> {
        self.slots.get(&stream.0).cloned()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Caches `slot` unless a shred happened since `generation` was read.
    pub(crate) fn insert_if(&mut self, generation: u64, stream: StreamId, slot: Slot) {
        if generation == self.generation {
            self.insert(stream, slot);
        }
    }

    fn insert(&mut self, stream: StreamId, slot: Slot) {
        if self.slots.insert(stream.0, slot).is_none() {
            self.order.push_back(stream.0);
            while self.slots.len() > self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.slots.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    /// Forgets `stream`'s key (dropping, so wiping, the cached copy) and remembers it shredded.
    pub(crate) fn shred(&mut self, stream: StreamId) {
        self.generation += 1;
        self.insert(stream, Slot::Shredded);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Slot {
        Slot::Key(Arc::new(StreamKey::from_bytes(&[1; 32], 1)))
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut c = Cache::new(3);
        for s in 0..10u128 {
            c.insert_if(0, StreamId(s), key());
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(StreamId(6)).is_none());
        assert!(c.get(StreamId(9)).is_some());
    }

    #[test]
    fn a_lookup_older_than_a_shred_cannot_restore_the_key() {
        let mut c = Cache::new(10);
        let g = c.generation();
        c.shred(StreamId(1));
        c.insert_if(g, StreamId(1), key());
        assert!(matches!(c.get(StreamId(1)), Some(Slot::Shredded)));
        // A dropped key is freed: no other reference keeps it alive.
        let k = Arc::new(StreamKey::from_bytes(&[2; 32], 1));
        c.insert_if(c.generation(), StreamId(2), Slot::Key(Arc::clone(&k)));
        c.shred(StreamId(2));
        assert_eq!(Arc::strong_count(&k), 1);
    }
}
