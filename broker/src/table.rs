//! The directory's compact tables: a paged [`Slab`] of records addressed by `u32` slots, a
//! reference-counted [`Interner`] for repeated values, and [`SortedIds`], a set of slots kept in
//! the order of a text key that lives elsewhere (a socket's id, a room's name).
//!
//! They exist so the directory stores each string once: indexes hold `u32`s and find the text
//! through the slab. They own no text of the keys they order and never read a clock or do I/O.
//!
//! Invariants: a slab slot is live until removed and is then reused (callers drop every index
//! entry of a slot before removing it); an interned value lives exactly while its reference
//! count is above zero and is dropped when it reaches zero; a [`SortedIds`] is strictly ascending
//! by its key, which must not change while the slot is in the set. Containers give their memory
//! back when they become empty (a churned directory returns to ~nothing).

use std::borrow::Borrow;
use std::hash::{BuildHasher as _, Hash};
use std::ops::Bound;

use hashbrown::HashTable;

/// The hasher of every directory table.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// Slots per slab page: a page is allocated whole, so a slab wastes at most one page.
const PAGE: usize = 1024;

/// Records addressed by `u32` slots, in pages of [`PAGE`], freed slots reused first.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    pages: Vec<Vec<Option<T>>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            pages: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`, returning its slot.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(slot) = self.free.pop()
            && let Some(cell) = self.cell_mut(slot)
        {
            *cell = Some(value);
            return slot;
        }
        let last_full = self.pages.last().is_none_or(|page| page.len() == PAGE);
        if last_full {
            self.pages.push(Vec::with_capacity(PAGE));
        }
        let pages = self.pages.len() - 1;
        let page = self.pages.last_mut().expect("a page was just ensured");
        page.push(Some(value));
        u32::try_from(pages * PAGE + page.len() - 1).expect("fewer than 2^32 records")
    }

    /// Removes and returns the record of `slot`.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        let value = self.cell_mut(slot)?.take()?;
        self.len -= 1;
        if self.len == 0 {
            *self = Self::default();
        } else {
            self.free.push(slot);
        }
        Some(value)
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        self.pages.get(slot / PAGE)?.get(slot % PAGE)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.cell_mut(slot)?.as_mut()
    }

    fn cell_mut(&mut self, slot: u32) -> Option<&mut Option<T>> {
        let slot = slot as usize;
        self.pages.get_mut(slot / PAGE)?.get_mut(slot % PAGE)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every record with its slot, by slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter().enumerate().filter_map(move |(i, cell)| {
                let slot = u32::try_from(p * PAGE + i).expect("fewer than 2^32 records");
                cell.as_ref().map(|value| (slot, value))
            })
        })
    }
}

/// Values stored once with a reference count, addressed by `u32` ids; a value is dropped when its
/// last reference is released.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    slots: Slab<(T, u32)>,
    table: HashTable<u32>,
    hasher: Hasher,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            slots: Slab::default(),
            table: HashTable::new(),
            hasher: Hasher::default(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The id of `value`, if interned (takes no reference).
    pub(crate) fn get<Q>(&self, value: &Q) -> Option<u32>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(value);
        let slots = &self.slots;
        self.table
            .find(hash, |&id| {
                slots.get(id).is_some_and(|(v, _)| v.borrow() == value)
            })
            .copied()
    }

    /// Takes a reference on `value`, interning it (as `make(value)`) if new.
    pub(crate) fn intern<Q>(&mut self, value: &Q, make: impl FnOnce(&Q) -> T) -> u32
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(id) = self.get(value) {
            self.retain(id);
            return id;
        }
        let hash = self.hasher.hash_one(value);
        let id = self.slots.insert((make(value), 1));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table.insert_unique(hash, id, |&other| {
            slots
                .get(other)
                .map_or(0, |(v, _)| hasher.hash_one(v.borrow()))
        });
        id
    }

    /// Takes another reference on `id`.
    pub(crate) fn retain(&mut self, id: u32) {
        if let Some((_, refs)) = self.slots.get_mut(id) {
            *refs += 1;
        }
    }

    /// Releases a reference on `id`, dropping the value with its last one.
    pub(crate) fn release(&mut self, id: u32) {
        let Some((value, refs)) = self.slots.get_mut(id) else {
            return;
        };
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        let hash = self.hasher.hash_one(&*value);
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.slots.remove(id);
        shrink(&mut self.table, &self.slots, &self.hasher);
    }

    /// The value of `id`.
    pub(crate) fn resolve(&self, id: u32) -> Option<&T> {
        self.slots.get(id).map(|(value, _)| value)
    }

    /// How many distinct values are interned.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every value with its id and reference count.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T, u32)> + '_ {
        self.slots
            .iter()
            .map(|(id, (value, refs))| (id, value, *refs))
    }

    /// Panics unless the lookup table and the values agree.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check(&self) {
        assert_eq!(self.table.len(), self.slots.len(), "interner table size");
        for (id, value, refs) in self.iter() {
            assert!(refs > 0, "interned value without references kept");
            assert_eq!(self.get::<T>(value), Some(id), "interned value not found");
        }
    }
}

/// Shrinks a slot table to fit once it is under a quarter full (amortised O(1)), so churn does
/// not leave the memory of its peak behind.
fn shrink<T: Hash>(table: &mut HashTable<u32>, slots: &Slab<(T, u32)>, hasher: &Hasher) {
    if table.len() * 4 < table.capacity() && table.capacity() > 64 {
        table.shrink_to_fit(|&id| slots.get(id).map_or(0, |(v, _)| hasher.hash_one(v)));
    }
}

/// Chunks of a large [`SortedIds`] split at this many ids; the set turns flat again below
/// [`FLAT_MAX`] / 4.
const CHUNK: usize = 128;
/// The largest flat [`SortedIds`].
const FLAT_MAX: usize = 2 * CHUNK;
/// Flat sets up to this size grow one slot at a time (most rooms and users are tiny).
const TIGHT: usize = 8;

/// A set of `u32` slots in ascending order of a text key looked up through `key`. Small sets are
/// one sorted vector; large ones a vector of sorted chunks, each with a copy of its first key (a
/// fence), so a search compares against the fences (few, and hot in cache) and then within one
/// chunk, and an insertion moves at most one chunk.
#[derive(Debug)]
pub(crate) enum SortedIds {
    /// One sorted vector (at most [`FLAT_MAX`] ids).
    Flat(Vec<u32>),
    /// Sorted chunks.
    Chunked(Box<Chunks>),
}

/// The chunks of a large [`SortedIds`]: non-empty, ascending, at most [`CHUNK`] ids each, with
/// their first keys and their total length.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: Vec<Vec<u32>>,
    fences: Vec<Box<str>>,
    len: usize,
}

impl Chunks {
    /// The chunk that holds or would hold `target`.
    fn chunk_of(&self, target: &str) -> usize {
        self.fences
            .partition_point(|fence| &**fence <= target)
            .saturating_sub(1)
    }
}

impl Default for SortedIds {
    fn default() -> Self {
        Self::Flat(Vec::new())
    }
}

/// Where `target` is or would go in a sorted slice.
fn search<'k>(ids: &[u32], target: &str, key: &impl Fn(u32) -> &'k str) -> Result<usize, usize> {
    ids.binary_search_by(|&id| key(id).cmp(target))
}

impl SortedIds {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Flat(ids) => ids.len(),
            Self::Chunked(c) => c.len,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts `id` (whose key is `key(id)`); false if an id with that key is present.
    pub(crate) fn insert<'k>(&mut self, id: u32, key: impl Fn(u32) -> &'k str) -> bool {
        let target = key(id);
        match self {
            Self::Flat(ids) => {
                let Err(at) = search(ids, target, &key) else {
                    return false;
                };
                if ids.len() < TIGHT {
                    ids.reserve_exact(1);
                }
                ids.insert(at, id);
                if ids.len() > FLAT_MAX {
                    let chunks: Vec<Vec<u32>> = ids.chunks(CHUNK).map(<[u32]>::to_vec).collect();
                    let fences = chunks.iter().map(|c| Box::from(key(c[0]))).collect();
                    let len = ids.len();
                    *self = Self::Chunked(Box::new(Chunks {
                        chunks,
                        fences,
                        len,
                    }));
                }
                true
            }
            Self::Chunked(c) => {
                let n = c.chunk_of(target);
                let chunk = &mut c.chunks[n];
                let Err(at) = search(chunk, target, &key) else {
                    return false;
                };
                chunk.insert(at, id);
                c.len += 1;
                if at == 0 {
                    c.fences[n] = Box::from(target);
                }
                if chunk.len() > CHUNK {
                    let tail = chunk.split_off(CHUNK / 2);
                    c.fences.insert(n + 1, Box::from(key(tail[0])));
                    c.chunks.insert(n + 1, tail);
                }
                true
            }
        }
    }

    /// Removes `id` (whose key is `key(id)`); false if absent.
    pub(crate) fn remove<'k>(&mut self, id: u32, key: impl Fn(u32) -> &'k str) -> bool {
        let target = key(id);
        match self {
            Self::Flat(ids) => {
                let Ok(at) = search(ids, target, &key) else {
                    return false;
                };
                if ids[at] != id {
                    return false;
                }
                ids.remove(at);
                if ids.is_empty() || ids.len() * 4 < ids.capacity() {
                    ids.shrink_to_fit();
                }
                true
            }
            Self::Chunked(c) => {
                let n = c.chunk_of(target);
                let chunk = &mut c.chunks[n];
                let Ok(at) = search(chunk, target, &key) else {
                    return false;
                };
                if chunk[at] != id {
                    return false;
                }
                chunk.remove(at);
                c.len -= 1;
                match chunk.first() {
                    None => {
                        c.chunks.remove(n);
                        c.fences.remove(n);
                    }
                    Some(&first) if at == 0 => c.fences[n] = Box::from(key(first)),
                    Some(_) => {}
                }
                if c.len < FLAT_MAX / 4 {
                    *self = Self::Flat(c.chunks.concat());
                }
                true
            }
        }
    }

    /// The id whose key is `target`, if present.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn find<'k>(&self, target: &str, key: impl Fn(u32) -> &'k str) -> Option<u32> {
        let ids = match self {
            Self::Flat(ids) => ids,
            Self::Chunked(c) => &c.chunks[c.chunk_of(target)],
        };
        search(ids, target, &key).ok().map(|at| ids[at])
    }

    /// The ids whose keys are past `lower`, ascending.
    pub(crate) fn range<'a, 'k>(
        &'a self,
        lower: Bound<&str>,
        key: impl Fn(u32) -> &'k str,
    ) -> Iter<'a> {
        let before = |id: u32| match lower {
            Bound::Unbounded => false,
            Bound::Included(b) => key(id) < b,
            Bound::Excluded(b) => key(id) <= b,
        };
        match self {
            Self::Flat(ids) => {
                let at = ids.partition_point(|&id| before(id));
                Iter {
                    head: ids[at..].iter(),
                    rest: &[],
                }
            }
            Self::Chunked(c) => {
                let n = match lower {
                    Bound::Unbounded => 0,
                    Bound::Included(b) | Bound::Excluded(b) => c.chunk_of(b),
                };
                let chunk = &c.chunks[n];
                let at = chunk.partition_point(|&id| before(id));
                Iter {
                    head: chunk[at..].iter(),
                    rest: &c.chunks[n + 1..],
                }
            }
        }
    }

    /// Every id, ascending.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range(Bound::Unbounded, |_| "")
    }

    /// Panics unless the ids are strictly ascending by key and the chunks well formed.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check<'k>(&self, key: impl Fn(u32) -> &'k str) {
        if let Self::Chunked(c) = self {
            assert!(!c.chunks.is_empty(), "a chunked set without chunks");
            assert_eq!(c.chunks.len(), c.fences.len(), "one fence per chunk");
            for (chunk, fence) in c.chunks.iter().zip(&c.fences) {
                assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "chunk size");
                assert_eq!(key(chunk[0]), &**fence, "stale fence");
            }
            assert_eq!(c.len, c.chunks.iter().map(Vec::len).sum::<usize>());
        }
        let ids: Vec<u32> = self.iter().collect();
        assert_eq!(ids.len(), self.len());
        for pair in ids.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "sorted ids out of order");
        }
    }
}

/// The ids of a [`SortedIds`] from some point on, ascending.
#[derive(Clone, Debug)]
pub(crate) struct Iter<'a> {
    head: std::slice::Iter<'a, u32>,
    rest: &'a [Vec<u32>],
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if let Some(&id) = self.head.next() {
                return Some(id);
            }
            let (first, rest) = self.rest.split_first()?;
            self.head = first.iter();
            self.rest = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_ids_stay_ordered_through_splits_and_merges() {
        let names: Vec<String> = (0..5000u32)
            .map(|i| format!("k{:08}", i.wrapping_mul(2_654_435_761) % 100_000))
            .collect();
        let key = |id: u32| names[id as usize].as_str();
        let mut set = SortedIds::default();
        for id in 0..5000 {
            set.insert(id, key);
        }
        set.check(key);
        assert!(matches!(set, SortedIds::Chunked(_)));
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(set.len(), all.len());
        let listed: Vec<&str> = set.iter().map(key).collect();
        assert_eq!(listed, all);
        let after: Vec<&str> = set.range(Bound::Excluded(all[100]), key).map(key).collect();
        assert_eq!(after, all[101..]);
        let from: Vec<&str> = set.range(Bound::Included(all[100]), key).map(key).collect();
        assert_eq!(from, all[100..]);
        for id in 0..5000 {
            set.remove(id, key);
            if id % 500 == 0 {
                set.check(key);
            }
        }
        assert!(set.is_empty());
        assert!(matches!(set, SortedIds::Flat(ref v) if v.capacity() == 0));
    }

    #[test]
    fn interned_values_are_dropped_with_their_last_reference() {
        let mut names: Interner<Box<str>> = Interner::default();
        let a = names.intern("a", |s| Box::from(s));
        let b = names.intern("b", |s| Box::from(s));
        assert_eq!(names.intern("a", |s| Box::from(s)), a);
        assert_eq!(names.len(), 2);
        names.release(a);
        assert_eq!(names.resolve(a).map(|v| &**v), Some("a"));
        names.release(a);
        assert_eq!(names.get("a"), None);
        names.release(b);
        assert_eq!(names.len(), 0);
        names.check();
    }

    #[test]
    fn slab_reuses_slots_and_frees_everything_when_empty() {
        let mut slab = Slab::default();
        let slots: Vec<u32> = (0..3000).map(|i| slab.insert(i)).collect();
        assert_eq!(slab.get(slots[2500]), Some(&2500));
        slab.remove(slots[7]);
        assert_eq!(slab.insert(99), slots[7]);
        for &slot in &slots {
            slab.remove(slot);
        }
        assert_eq!(slab.len(), 0);
        assert!(slab.pages.is_empty());
    }
}
