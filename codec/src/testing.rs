//! Test support shared by the unit tests of several modules.

use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

/// A seeded generator, so the property tests replay the same cases every run. Modules add their
/// own generators in `impl Rng` blocks.
pub(crate) struct Rng(SmallRng);

impl Rng {
    /// The generator for `seed`.
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(SmallRng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.random_range(..n)
    }
}
