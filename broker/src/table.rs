//! The directory's compact tables: a paged [`Slab`] of records addressed by `u32` slots, a
//! reference-counted [`Interner`] for repeated values, and [`SortedIds`], a set of slots kept in
//! the order of a text key that lives elsewhere (a socket's id, a room's name).
//!
//! They exist so the directory stores each string once: indexes hold `u32`s and find the text
//! through the slab. A large [`SortedIds`] keeps 4 bytes of each key and its chunks' first keys
//! (fences) inline, so its searches read the text only on ties; it never reads a clock or does
//! I/O.
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

/// Bytes per slab page: a page is allocated whole, so a slab wastes at most one page. A size
/// class of the allocator (jemalloc's 80 KiB), so that a page of records whose size does not
/// divide it still fills its allocation: 1 024 slots of 80 bytes, 1 137 of 72.
const PAGE_BYTES: usize = 80 * 1024;

/// Records addressed by `u32` slots, in pages of [`Slab::PAGE`] slots, freed slots reused first.
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
    /// Slots per page: as many as [`PAGE_BYTES`] hold, at least one.
    const PAGE: usize = {
        let n = PAGE_BYTES / std::mem::size_of::<Option<T>>();
        if n == 0 { 1 } else { n }
    };

    /// Stores `value`, returning its slot.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(slot) = self.free.pop()
            && let Some(cell) = self.cell_mut(slot)
        {
            *cell = Some(value);
            return slot;
        }
        let last_full = self
            .pages
            .last()
            .is_none_or(|page| page.len() == Self::PAGE);
        if last_full {
            self.pages.push(Vec::with_capacity(Self::PAGE));
        }
        let pages = self.pages.len() - 1;
        let page = self.pages.last_mut().expect("a page was just ensured");
        page.push(Some(value));
        u32::try_from(pages * Self::PAGE + page.len() - 1).expect("fewer than 2^32 records")
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
        self.pages
            .get(slot / Self::PAGE)?
            .get(slot % Self::PAGE)?
            .as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.cell_mut(slot)?.as_mut()
    }

    fn cell_mut(&mut self, slot: u32) -> Option<&mut Option<T>> {
        let slot = slot as usize;
        self.pages
            .get_mut(slot / Self::PAGE)?
            .get_mut(slot % Self::PAGE)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every record with its slot, by slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter().enumerate().filter_map(move |(i, cell)| {
                let slot = u32::try_from(p * Self::PAGE + i).expect("fewer than 2^32 records");
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

/// Chunks of a large [`SortedIds`] hold at most this many ids; the set turns flat again below
/// [`FLAT_MAX`] / 4.
const CHUNK: usize = 128;
/// A full chunk's vector grows by this many ids (128 bytes: jemalloc's size classes are 128
/// bytes apart there), so a chunk wastes less than 16 slots.
const GROW: usize = 16;
/// Ids a chunk gets when a bulk load builds it (room to grow before it splits).
const FILL: usize = CHUNK * 3 / 4;
/// The largest flat [`SortedIds`].
const FLAT_MAX: usize = 2 * CHUNK;
/// Flat sets up to this size grow one slot at a time (most rooms and users are tiny).
const TIGHT: usize = 8;

/// A set of `u32` slots in ascending order of a text key looked up through `key`.
///
/// Small sets are one sorted vector of slots, searched through `key` (a few comparisons). Large
/// ones are a vector of sorted chunks, each with a copy of its first key (a fence, with its first
/// 16 bytes inline for the search over fences), the length of the prefix all its keys share
/// (`skip`), and per id the 4 bytes of its key after that prefix, inline next to the slot: a
/// search compares inline bytes and reads a key through `key` (two dependent cache misses) only
/// when they tie, so an insertion into a million-id set reads ~1 key instead of ~20.
#[derive(Debug)]
pub(crate) enum SortedIds {
    /// One sorted vector (at most [`FLAT_MAX`] ids).
    Flat(Vec<u32>),
    /// Sorted chunks.
    Chunked(Box<Chunks>),
}

/// The chunks of a large [`SortedIds`]: non-empty, ascending, with their total length.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: Vec<Chunk>,
    len: usize,
}

/// Up to [`CHUNK`] ids in ascending key order, all of whose keys start with `fence[..skip]`.
#[derive(Debug)]
struct Chunk {
    /// The first 16 bytes of `fence` ([`head`]).
    head: u128,
    /// The key of the first id.
    fence: Box<str>,
    /// The length of the prefix every key of the chunk shares (a byte length within `fence`).
    skip: u32,
    /// `(inline << 32) | slot`, ascending by key, where `inline` is the 4 bytes of the slot's key
    /// after `skip` ([`inline`]).
    items: Vec<u64>,
}

/// The first 16 bytes of `key`, big-endian, zero-padded: keys whose heads differ are ordered as
/// their heads are; equal heads need the full keys.
pub(crate) fn head(key: &str) -> u128 {
    let mut out = [0; 16];
    let bytes = key.as_bytes();
    let n = bytes.len().min(16);
    out[..n].copy_from_slice(&bytes[..n]);
    u128::from_be_bytes(out)
}

/// The 4 bytes of `key` from `skip` on, big-endian, zero-padded: for keys sharing their first
/// `skip` bytes, differing inline bytes order them; equal ones need the full keys.
fn inline(key: &str, skip: usize) -> u32 {
    let mut out = [0; 4];
    let rest = key.as_bytes().get(skip..).unwrap_or_default();
    let n = rest.len().min(4);
    out[..n].copy_from_slice(&rest[..n]);
    u32::from_be_bytes(out)
}

/// The length of the longest common prefix of `a` and `b`, in bytes.
fn common(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn pack(inline: u32, slot: u32) -> u64 {
    (u64::from(inline) << 32) | u64::from(slot)
}

/// The slot of a chunk item.
fn slot_of(item: u64) -> u32 {
    item as u32
}

fn inline_of(item: u64) -> u32 {
    (item >> 32) as u32
}

impl Chunk {
    /// A chunk of `slots`, non-empty and ascending by key.
    fn new<'k>(slots: &[u32], key: &impl Fn(u32) -> &'k str) -> Self {
        let fence = key(slots[0]);
        let skip = common(fence, key(slots[slots.len() - 1]));
        let mut items = Vec::with_capacity(slots.len());
        items.extend(slots.iter().map(|&s| pack(inline(key(s), skip), s)));
        Self {
            head: head(fence),
            fence: Box::from(fence),
            skip: u32::try_from(skip).unwrap_or(u32::MAX),
            items,
        }
    }

    /// Where `target` is or would go.
    fn locate<'k>(&self, target: &str, key: &impl Fn(u32) -> &'k str) -> Result<usize, usize> {
        let skip = self.skip as usize;
        let prefix = self.fence.as_bytes().get(..skip).unwrap_or_default();
        let bytes = target.as_bytes();
        match bytes[..skip.min(bytes.len())].cmp(prefix) {
            std::cmp::Ordering::Less => Err(0),
            std::cmp::Ordering::Greater => Err(self.items.len()),
            std::cmp::Ordering::Equal => {
                let want = inline(target, skip);
                self.items.binary_search_by(|&item| {
                    inline_of(item)
                        .cmp(&want)
                        .then_with(|| key(slot_of(item)).cmp(target))
                })
            }
        }
    }

    /// Shortens the shared prefix to `skip` bytes (the inline bytes move right, the fence's bytes
    /// in between come in front: no key is read).
    fn shorten(&mut self, skip: usize) {
        let old = self.skip as usize;
        if skip >= old {
            return;
        }
        let gap = self.fence.as_bytes().get(skip..old).unwrap_or_default();
        for item in &mut self.items {
            let mut bytes = [0; 4];
            let tail = inline_of(*item).to_be_bytes();
            for (out, b) in bytes.iter_mut().zip(gap.iter().chain(tail.iter())) {
                *out = *b;
            }
            *item = pack(u32::from_be_bytes(bytes), slot_of(*item));
        }
        self.skip = u32::try_from(skip).unwrap_or(u32::MAX);
    }

    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.items.iter().map(|&item| slot_of(item))
    }
}

impl Chunks {
    /// The chunk that holds or would hold `target`.
    fn chunk_of(&self, target: &str) -> usize {
        let want = head(target);
        self.chunks
            .partition_point(|c| c.head < want || (c.head == want && &*c.fence <= target))
            .saturating_sub(1)
    }

    /// Chunks of [`FILL`] ids of `slots`, ascending by key.
    fn build<'k>(slots: &[u32], key: &impl Fn(u32) -> &'k str) -> Self {
        Self {
            chunks: slots.chunks(FILL).map(|c| Chunk::new(c, key)).collect(),
            len: slots.len(),
        }
    }

    /// Splits full chunk `n` in two halves, each with its own (longer) shared prefix.
    fn split<'k>(&mut self, n: usize, key: &impl Fn(u32) -> &'k str) {
        let chunk = &self.chunks[n];
        let (low, high): (Vec<u32>, Vec<u32>) = {
            let slots: Vec<u32> = chunk.slots().collect();
            let (a, b) = slots.split_at(slots.len() / 2);
            (a.to_vec(), b.to_vec())
        };
        self.chunks[n] = Chunk::new(&low, key);
        self.chunks.insert(n + 1, Chunk::new(&high, key));
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

/// `(head, slot)` pairs ([`head`] of the slot's key) ascending by key, each key once (the first
/// slot of equal keys is kept); keys are read only where heads tie.
fn sorted<'k>(mut keyed: Vec<(u128, u32)>, key: &impl Fn(u32) -> &'k str) -> Vec<u32> {
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(key(b.1))));
    keyed.dedup_by(|b, a| a.0 == b.0 && key(a.1) == key(b.1));
    keyed.into_iter().map(|(_, s)| s).collect()
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
                    *self = Self::Chunked(Box::new(Chunks::build(ids, &key)));
                }
                true
            }
            Self::Chunked(c) => {
                let mut n = c.chunk_of(target);
                if c.chunks[n].locate(target, &key).is_ok() {
                    return false;
                }
                if c.chunks[n].items.len() >= CHUNK {
                    c.split(n, &key);
                    if c.chunks[n + 1].fence.as_ref() <= target {
                        n += 1;
                    }
                }
                let chunk = &mut c.chunks[n];
                let prefix = chunk.fence.as_bytes().get(..chunk.skip as usize);
                if !prefix.is_some_and(|p| target.as_bytes().starts_with(p)) {
                    chunk.shorten(common(target, &chunk.fence));
                }
                let Err(at) = chunk.locate(target, &key) else {
                    return false;
                };
                if chunk.items.len() == chunk.items.capacity() {
                    chunk
                        .items
                        .reserve_exact(GROW.min(CHUNK - chunk.items.len()));
                }
                chunk
                    .items
                    .insert(at, pack(inline(target, chunk.skip as usize), id));
                if at == 0 {
                    chunk.fence = Box::from(target);
                    chunk.head = head(target);
                }
                c.len += 1;
                true
            }
        }
    }

    /// Inserts `ids`, `(head, slot)` pairs with the [`head`] of each slot's key (made by the
    /// caller while the key is at hand; each key absent, see [`SortedIds::insert`]), at once:
    /// one by one in key order when they are few against the set, else by merging them into the
    /// chunks they fall in (or building the chunks, into an empty set), reading each new key
    /// about twice and only the keys of the chunks they touch.
    pub(crate) fn extend<'k>(&mut self, ids: Vec<(u128, u32)>, key: impl Fn(u32) -> &'k str) {
        let ids = sorted(ids, &key);
        if ids.len() * 16 < self.len() || self.len() + ids.len() <= FLAT_MAX {
            for id in ids {
                self.insert(id, &key);
            }
            return;
        }
        match self {
            Self::Flat(old) => {
                let mut all: Vec<(u128, u32)> = old.iter().map(|&id| (head(key(id)), id)).collect();
                all.extend(ids.into_iter().map(|id| (head(key(id)), id)));
                let all = sorted(all, &key);
                *self = Self::Chunked(Box::new(Chunks::build(&all, &key)));
            }
            Self::Chunked(c) => {
                // Where each new id goes, by chunk (monotone: the ids ascend).
                let mut plan: Vec<(usize, usize, u32)> = Vec::with_capacity(ids.len());
                for id in ids {
                    let target = key(id);
                    let n = c.chunk_of(target);
                    if let Err(at) = c.chunks[n].locate(target, &key) {
                        plan.push((n, at, id));
                    }
                }
                let old = std::mem::take(&mut c.chunks);
                let mut plan = plan.into_iter().peekable();
                let mut merged = Vec::new();
                for (n, chunk) in old.into_iter().enumerate() {
                    if plan.peek().is_none_or(|&(m, _, _)| m != n) {
                        c.chunks.push(chunk);
                        continue;
                    }
                    merged.clear();
                    let mut taken = 0;
                    while let Some(&(m, at, id)) = plan.peek()
                        && m == n
                    {
                        merged.extend(chunk.items[taken..at].iter().map(|&i| slot_of(i)));
                        taken = at;
                        merged.push(id);
                        plan.next();
                    }
                    merged.extend(chunk.items[taken..].iter().map(|&i| slot_of(i)));
                    c.len = c.len + merged.len() - chunk.items.len();
                    c.chunks
                        .extend(merged.chunks(FILL).map(|part| Chunk::new(part, &key)));
                }
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
                let Ok(at) = chunk.locate(target, &key) else {
                    return false;
                };
                if slot_of(chunk.items[at]) != id {
                    return false;
                }
                chunk.items.remove(at);
                if chunk.items.capacity() - chunk.items.len() > 2 * GROW {
                    chunk.items.shrink_to(chunk.items.len() + GROW);
                }
                c.len -= 1;
                match chunk.items.first() {
                    None => {
                        c.chunks.remove(n);
                    }
                    Some(&first) if at == 0 => {
                        let fence = key(slot_of(first));
                        chunk.fence = Box::from(fence);
                        chunk.head = head(fence);
                    }
                    Some(_) => {}
                }
                if c.len < FLAT_MAX / 4 {
                    *self = Self::Flat(c.chunks.iter().flat_map(Chunk::slots).collect());
                }
                true
            }
        }
    }

    /// The id whose key is `target`, if present.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn find<'k>(&self, target: &str, key: impl Fn(u32) -> &'k str) -> Option<u32> {
        match self {
            Self::Flat(ids) => search(ids, target, &key).ok().map(|at| ids[at]),
            Self::Chunked(c) => {
                let chunk = &c.chunks[c.chunk_of(target)];
                let at = chunk.locate(target, &key).ok()?;
                Some(slot_of(chunk.items[at]))
            }
        }
    }

    /// The ids whose keys are past `lower`, ascending.
    pub(crate) fn range<'a, 'k>(
        &'a self,
        lower: Bound<&str>,
        key: impl Fn(u32) -> &'k str,
    ) -> Iter<'a> {
        match self {
            Self::Flat(ids) => {
                let at = ids.partition_point(|&id| match lower {
                    Bound::Unbounded => false,
                    Bound::Included(b) => key(id) < b,
                    Bound::Excluded(b) => key(id) <= b,
                });
                Iter {
                    flat: ids[at..].iter(),
                    items: [].iter(),
                    rest: &[],
                }
            }
            Self::Chunked(c) => {
                let (n, at) = match lower {
                    Bound::Unbounded => (0, 0),
                    Bound::Included(b) | Bound::Excluded(b) => {
                        let n = c.chunk_of(b);
                        let at = match c.chunks[n].locate(b, &key) {
                            Ok(at) if matches!(lower, Bound::Excluded(_)) => at + 1,
                            Ok(at) | Err(at) => at,
                        };
                        (n, at)
                    }
                };
                Iter {
                    flat: [].iter(),
                    items: c.chunks[n].items[at..].iter(),
                    rest: &c.chunks[n + 1..],
                }
            }
        }
    }

    /// Every id, ascending.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range(Bound::Unbounded, |_| "")
    }

    /// Panics unless the ids are strictly ascending by key and the chunks well formed (sizes,
    /// fences, heads, shared prefixes and inline bytes).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check<'k>(&self, key: impl Fn(u32) -> &'k str) {
        match self {
            Self::Flat(ids) => assert!(ids.len() <= FLAT_MAX, "flat set too large"),
            Self::Chunked(c) => {
                assert!(!c.chunks.is_empty(), "a chunked set without chunks");
                for chunk in &c.chunks {
                    assert!(
                        !chunk.items.is_empty() && chunk.items.len() <= CHUNK,
                        "chunk size"
                    );
                    let first = key(slot_of(chunk.items[0]));
                    assert_eq!(first, &*chunk.fence, "stale fence");
                    assert_eq!(chunk.head, head(first), "stale head");
                    let skip = chunk.skip as usize;
                    let prefix = chunk
                        .fence
                        .as_bytes()
                        .get(..skip)
                        .expect("skip within fence");
                    for &item in &chunk.items {
                        let k = key(slot_of(item));
                        assert!(k.as_bytes().starts_with(prefix), "shared prefix too long");
                        assert_eq!(inline_of(item), inline(k, skip), "stale inline bytes");
                    }
                }
                assert_eq!(c.len, c.chunks.iter().map(|c| c.items.len()).sum::<usize>());
            }
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
    flat: std::slice::Iter<'a, u32>,
    items: std::slice::Iter<'a, u64>,
    rest: &'a [Chunk],
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if let Some(&id) = self.flat.next() {
            return Some(id);
        }
        loop {
            if let Some(&item) = self.items.next() {
                return Some(slot_of(item));
            }
            let (first, rest) = self.rest.split_first()?;
            self.items = first.items.iter();
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

    /// Keys that tie on their inline bytes: long shared prefixes (past the 16-byte head too),
    /// keys that are prefixes of others, NUL bytes (the inline padding), node-prefixed ids.
    fn tricky_key(n: u32) -> String {
        let mixed = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        match n % 6 {
            0 => format!("bench{:03}.{mixed:016x}", n % 7),
            1 => format!("shared-prefix-of-24-bytes{}", n / 6),
            2 => format!("user:user-{}", n / 6),
            3 => format!("0123456789abcdef0123{:x}", mixed % 4096),
            4 => "ab\0".repeat((n / 6 % 5) as usize) + &"x".repeat((n / 30 % 3) as usize),
            _ => format!("{:x}", mixed % 50_000),
        }
    }

    /// Checks `set` against the model: order, lookups and every cursor's range.
    fn same(set: &SortedIds, model: &std::collections::BTreeMap<String, u32>, names: &[String]) {
        let key = |id: u32| names[id as usize].as_str();
        set.check(key);
        let listed: Vec<u32> = set.iter().collect();
        let expected: Vec<u32> = model.values().copied().collect();
        assert_eq!(listed, expected);
        for (k, &id) in model.iter().step_by(7) {
            assert_eq!(set.find(k, key), Some(id));
            let after: Vec<u32> = set.range(Bound::Excluded(k), key).collect();
            let want: Vec<u32> = model
                .range::<str, _>((Bound::Excluded(k.as_str()), Bound::Unbounded))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(after, want, "after {k:?}");
            let from: Vec<u32> = set.range(Bound::Included(k), key).collect();
            assert_eq!(from.len(), want.len() + 1, "from {k:?}");
        }
        for probe in [
            "",
            "0",
            "ab",
            "bench003.",
            "user:user-1",
            "zzz",
            "shared-prefix-of-24-bytes",
        ] {
            let after: Vec<u32> = set.range(Bound::Excluded(probe), key).collect();
            let want: Vec<u32> = model
                .range::<str, _>((Bound::Excluded(probe), Bound::Unbounded))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(after, want, "after absent {probe:?}");
        }
    }

    #[test]
    fn sorted_ids_order_keys_that_tie_on_their_inline_bytes() {
        use rand::seq::SliceRandom as _;
        use rand::{Rng as _, SeedableRng as _};
        let names: Vec<String> = (0..6000).map(tricky_key).collect();
        let key = |id: u32| names[id as usize].as_str();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        let mut model = std::collections::BTreeMap::new();
        let mut set = SortedIds::default();
        let mut order: Vec<u32> = (0..6000).collect();
        order.shuffle(&mut rng);
        for (i, &id) in order.iter().enumerate() {
            let fresh = !model.contains_key(key(id));
            assert_eq!(set.insert(id, key), fresh, "{:?}", key(id));
            model.entry(key(id).to_owned()).or_insert(id);
            if i % 997 == 0 {
                same(&set, &model, &names);
            }
        }
        same(&set, &model, &names);
        assert!(matches!(set, SortedIds::Chunked(_)));
        // Random removals and re-insertions, crossing chunk boundaries and the flat size.
        for round in 0..40_000 {
            let id = rng.random_range(0..6000u32);
            if model.get(key(id)) == Some(&id) {
                assert!(set.remove(id, key));
                model.remove(key(id));
            } else if !model.contains_key(key(id)) {
                assert!(set.insert(id, key));
                model.insert(key(id).to_owned(), id);
            } else {
                assert!(!set.remove(id, key), "a twin's removal");
            }
            if round % 5000 == 0 {
                same(&set, &model, &names);
            }
        }
        same(&set, &model, &names);
        for &id in model.values() {
            assert!(set.remove(id, key));
        }
        assert!(set.is_empty());
        assert!(matches!(set, SortedIds::Flat(ref v) if v.capacity() == 0));
    }

    #[test]
    fn a_bulk_extension_equals_insertions_one_by_one() {
        use rand::seq::SliceRandom as _;
        use rand::{Rng as _, SeedableRng as _};
        let names: Vec<String> = (0..20_000).map(tricky_key).collect();
        let key = |id: u32| names[id as usize].as_str();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut ids: Vec<u32> = (0..20_000).collect();
        ids.shuffle(&mut rng);
        let mut model = std::collections::BTreeMap::new();
        let mut set = SortedIds::default();
        // Batches of every size: into an empty set, a flat one, a chunked one; a few, many, more
        // than the set holds; contiguous key ranges and spread ones.
        let mut rest = &ids[..];
        let sizes = [3, 300, 5, 100, 2000, 40, 7000, 1, 600, 9000];
        for (i, &size) in sizes.iter().enumerate() {
            let size = size.min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            let mut batch = batch.to_vec();
            if i % 3 == 1 {
                batch.sort_by_key(|&id| key(id));
            }
            // Only ids whose key is new, as the directory guarantees (one of twins).
            let mut seen = std::collections::HashSet::new();
            batch.retain(|&id| !model.contains_key(key(id)) && seen.insert(key(id)));
            for &id in &batch {
                model.insert(key(id).to_owned(), id);
            }
            set.extend(batch.iter().map(|&id| (head(key(id)), id)).collect(), key);
            same(&set, &model, &names);
            if i == 4 {
                let gone: Vec<u32> = model
                    .values()
                    .copied()
                    .filter(|_| rng.random_bool(0.9))
                    .collect();
                for id in gone {
                    assert!(set.remove(id, key));
                    model.remove(key(id));
                }
                same(&set, &model, &names);
            }
        }
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
