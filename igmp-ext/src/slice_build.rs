//! Building slice sets within a budget of steps (issue 13, item 6). The union of a few slices
//! whose masks interleave can fall apart into exponentially many disjoint pieces: seven slices
//! of a fuzzed certificate made 166 pieces and 124,428 steps, fifteen crafted ones over a
//! million. A set built from slices a peer chose (a certificate's, a join's) is therefore built
//! within [`step_budget`] steps, linear in the slices listed, or refused as [`TooComplex`].
//!
//! Every step is O(1) work (a comparison, a piece made, a hash probe), and the same steps are
//! what `work::take` counts in tests. Within the budget the set is exactly the one the
//! unbounded operations build, slice for slice: they run this code with no limit.

use super::{work, SliceOf, SliceSetOf};
use core::fmt;
use core::hash::Hash;
use core::ops::{BitAnd, BitOr, BitXor, Not, Range};
use std::collections::HashSet;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// The integer a slice is made of: `u32` for IPv4 sources, `u128` for IPv6 ones. Sealed.
pub trait Bits:
    Copy
    + Eq
    + Ord
    + Hash
    + Default
    + fmt::Debug
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitXor<Output = Self>
    + Not<Output = Self>
    + sealed::Sealed
{
    /// Bits in an address.
    const WIDTH: u32;
    const ZERO: Self;
    fn count_ones(self) -> u32;
    fn leading_zeros(self) -> u32;
    fn trailing_zeros(self) -> u32;
    /// `1 << i` (`i < WIDTH`).
    fn bit(i: u32) -> Self;
    /// The lowest set bit alone (`x & -x`).
    fn lowest_set(self) -> Self;
}

macro_rules! impl_bits {
    ($t:ty) => {
        impl Bits for $t {
            const WIDTH: u32 = <$t>::BITS;
            const ZERO: Self = 0;
            fn count_ones(self) -> u32 {
                <$t>::count_ones(self)
            }
            fn leading_zeros(self) -> u32 {
                <$t>::leading_zeros(self)
            }
            fn trailing_zeros(self) -> u32 {
                <$t>::trailing_zeros(self)
            }
            fn bit(i: u32) -> Self {
                1 << i
            }
            fn lowest_set(self) -> Self {
                self & self.wrapping_neg()
            }
        }
    };
}
impl_bits!(u32);
impl_bits!(u128);

/// Slice lists a hostile sender chooses (issue 13, item 6): masks that interleave, so that the
/// union of a few slices falls apart into very many disjoint pieces. For the tests of every
/// place that turns untrusted slices into a set.
#[cfg(test)]
pub(crate) mod adversarial {
    use crate::slice::Slice;

    /// The shape of `fuzz/seeds/certificate/seed-slow-certificate-decode-3s`: masks of scattered
    /// bits (two or three random words ANDed), values zero or random under the mask, now and
    /// then the whole space. Seeded, so every run lists the same slices.
    pub(crate) fn interleaved(n: usize, seed: u64) -> Vec<Slice> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut r = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 16) as u32
        };
        (0..n)
            .map(|i| {
                let mask = match i % 8 {
                    5 => 0,
                    3 | 6 => r() & r() & r(),
                    _ => r() & r(),
                };
                let value = if i % 2 == 0 { 0 } else { r() & mask };
                Slice::new(value, mask)
            })
            .collect()
    }

    /// Crafted: cubes on disjoint bit pairs (16 fit in 32 bits), then the whole space, then
    /// the pairs again shifted by one bit, and so on to `n`. The whole space minus k pair cubes
    /// is 2^k disjoint pieces (which normalising merges back into one slice); every later slice
    /// is cut against all of them.
    pub(crate) fn pairs_then_all(n: usize) -> Vec<Slice> {
        (0..n)
            .map(|i| match i % 17 {
                16 => Slice::ALL,
                j => {
                    let shift = (2 * j + i / 17) as u32 % 31;
                    Slice::new(3 << shift, 3 << shift)
                }
            })
            .collect()
    }
}

/// Steps per listed slice that building a set from untrusted slices may take (with
/// [`BASE_SLICES`] added to the count). Sets of a slicing's units (a member's claim, with at
/// most 10 significant bits) take well under half of it; any normalised list of up to 128
/// slices (a certificate's) fits whatever its masks.
pub const STEPS_PER_SLICE: u64 = 64;
/// Slices added to every count, so that a short list may overlap pairwise.
pub const BASE_SLICES: u64 = 128;

/// The steps a set built from `slices` listed slices may take: [`STEPS_PER_SLICE`] ×
/// (`slices` + [`BASE_SLICES`]).
pub const fn step_budget(slices: usize) -> u64 {
    STEPS_PER_SLICE.saturating_mul((slices as u64).saturating_add(BASE_SLICES))
}

/// Why untrusted slices were refused before their set was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TooComplex {
    /// Normalising them needs more steps than the budget of `slices` slices: masks that
    /// interleave, so that the union falls apart into very many disjoint pieces.
    #[error(
        "normalising them takes more than {budget} steps, the budget of {slices} slices \
         (interleaved masks)"
    )]
    Steps { slices: usize, budget: u64 },
    /// Their union normalises to more disjoint slices than the format's cap.
    #[error("{slices} slices normalise to {len} disjoint slices, more than the {cap} allowed")]
    Len {
        slices: usize,
        len: usize,
        cap: usize,
    },
}

/// What an operation on untrusted slices may still spend; see [`step_budget`].
#[derive(Debug, Clone)]
pub struct StepBudget {
    left: u64,
    limit: u64,
    slices: usize,
}

impl StepBudget {
    /// [`step_budget`]`(slices)` steps, for a set built from `slices` listed slices and what
    /// is then computed from it.
    pub const fn for_slices(slices: usize) -> Self {
        let limit = step_budget(slices);
        StepBudget {
            left: limit,
            limit,
            slices,
        }
    }

    /// No limit: for sets built from trusted slices.
    pub(super) const fn unlimited() -> Self {
        StepBudget {
            left: u64::MAX,
            limit: u64::MAX,
            slices: 0,
        }
    }

    /// Steps taken so far.
    pub fn spent(&self) -> u64 {
        self.limit - self.left
    }

    /// Takes `n` steps, or refuses before they are taken.
    pub(super) fn spend(&mut self, n: usize) -> Result<(), TooComplex> {
        let n = n as u64;
        if n > self.left {
            return Err(TooComplex::Steps {
                slices: self.slices,
                budget: self.limit,
            });
        }
        self.left -= n;
        work::add(n as usize);
        Ok(())
    }

    /// At most `cap` of what is left, to try a way that may turn out dearer than another.
    fn trial(&self, cap: u64) -> StepBudget {
        StepBudget {
            left: self.left.min(cap),
            ..*self
        }
    }

    /// Charges what `trial` spent (its steps are counted already).
    fn settle(&mut self, trial: &StepBudget, cap: u64) {
        self.left -= self.left.min(cap) - trial.left;
    }
}

impl<W: Bits> SliceSetOf<W> {
    /// The union of `slices`, exactly as collecting them builds it, if that takes no more of
    /// `budget` than is left; else [`TooComplex`], refused before the work it would take.
    pub fn try_from_slices(
        slices: &[SliceOf<W>],
        budget: &mut StepBudget,
    ) -> Result<Self, TooComplex> {
        build(slices, budget)
    }

    /// `self` minus `other`, exactly as [`SliceSetOf::difference`] computes it, within `budget`.
    pub fn try_difference(
        &self,
        other: &Self,
        budget: &mut StepBudget,
    ) -> Result<Self, TooComplex> {
        difference(self, other, budget)
    }

    /// Merges sibling slices until none are left and sorts, so that equal sets built the same
    /// way look the same and a member's join lists as few slices as it can.
    ///
    /// Each pass walks the slices in (mask, value) order and merges each with its first
    /// sibling later in that order: the one that sets the lowest mask bit `s` has clear. A
    /// hash set finds it, so a pass costs O(n · 32) instead of the O(n²) of a scan. The result
    /// depends on the set of slices only, not on their order.
    pub(super) fn normalize_within(&mut self, budget: &mut StepBudget) -> Result<(), TooComplex> {
        loop {
            budget.spend(self.slices.len())?;
            self.slices.sort_unstable_by_key(|s| (s.mask, s.value));
            let mut unmerged: HashSet<SliceOf<W>> = self.slices.iter().copied().collect();
            let mut out: Vec<SliceOf<W>> = Vec::with_capacity(self.slices.len());
            let mut merged = false;
            for s in &self.slices {
                if !unmerged.remove(s) {
                    continue; // taken earlier as another slice's partner
                }
                let mut free = s.mask & !s.value;
                let mut partner = None;
                while free != W::ZERO {
                    let bit = free.lowest_set();
                    free = free & !bit;
                    let candidate = SliceOf::from_parts(s.value | bit, s.mask);
                    budget.spend(1)?;
                    if unmerged.remove(&candidate) {
                        partner = Some(bit);
                        break;
                    }
                }
                match partner {
                    Some(bit) => {
                        out.push(SliceOf::from_parts(s.value, s.mask & !bit));
                        merged = true;
                    }
                    None => out.push(*s),
                }
            }
            self.slices = out;
            if !merged {
                break;
            }
        }
        self.slices
            .sort_unstable_by_key(|s| (s.mask.count_ones(), s.value, s.mask));
        Ok(())
    }
}

/// The union of `input`: each slice cut by the pieces of the earlier slices it overlaps, then
/// normalised.
pub(super) fn build<W: Bits>(
    input: &[SliceOf<W>],
    budget: &mut StepBudget,
) -> Result<SliceSetOf<W>, TooComplex> {
    budget.spend(input.len())?;
    // A slice listed again adds nothing (its first copy cuts all of it away).
    let mut seen = HashSet::with_capacity(input.len());
    let input: Vec<SliceOf<W>> = input.iter().copied().filter(|s| seen.insert(*s)).collect();
    drop(seen);
    let disjoint = if input.windows(2).all(|w| w[0].mask == w[1].mask) {
        // One mask (a slicing's units, the usual case): distinct slices are disjoint.
        input
    } else {
        cut_overlaps(&input, budget)?
    };
    let mut set = SliceSetOf { slices: disjoint };
    set.normalize_within(budget)?;
    Ok(set)
}

/// `a` minus `b` (both disjoint): each slice of `a` cut by the slices of `b` it overlaps, in
/// `b`'s order, then normalised.
pub(super) fn difference<W: Bits>(
    a: &SliceSetOf<W>,
    b: &SliceSetOf<W>,
    budget: &mut StepBudget,
) -> Result<SliceSetOf<W>, TooComplex> {
    let k = a.slices.len();
    let all: Vec<SliceOf<W>> = a.slices.iter().chain(&b.slices).copied().collect();
    budget.spend(all.len())?;
    let mut pairs = overlapping_pairs(&all, Some(k as u32), budget)?;
    pairs.sort_unstable();
    let mut out = Vec::with_capacity(k);
    let mut next = 0;
    for (i, &slice) in a.slices.iter().enumerate() {
        let mut pieces = vec![slice];
        while next < pairs.len() && pairs[next].0 == i as u32 {
            if !pieces.is_empty() {
                cut(&mut pieces, all[pairs[next].1 as usize], budget)?;
            }
            next += 1;
        }
        out.extend(pieces);
    }
    let mut set = SliceSetOf { slices: out };
    set.normalize_within(budget)?;
    Ok(set)
}

/// Disjoint pieces of the union of distinct `slices`: each slice minus the pieces of the
/// earlier ones, the pieces collecting has always made. Only the earlier slices that overlap a
/// slice can cut it, so only those are visited.
fn cut_overlaps<W: Bits>(
    slices: &[SliceOf<W>],
    budget: &mut StepBudget,
) -> Result<Vec<SliceOf<W>>, TooComplex> {
    let mut pairs = overlapping_pairs(slices, None, budget)?;
    pairs.sort_unstable_by_key(|&(earlier, later)| (later, earlier));
    let mut out: Vec<SliceOf<W>> = Vec::with_capacity(slices.len());
    let mut pieces_of: Vec<Range<usize>> = Vec::with_capacity(slices.len());
    let mut next = 0;
    for (i, &slice) in slices.iter().enumerate() {
        let mut pieces = vec![slice];
        while next < pairs.len() && pairs[next].1 == i as u32 {
            let earlier = pairs[next].0 as usize;
            next += 1;
            for have in pieces_of[earlier].clone() {
                if pieces.is_empty() {
                    break;
                }
                cut(&mut pieces, out[have], budget)?;
            }
        }
        let start = out.len();
        out.extend(pieces);
        pieces_of.push(start..out.len());
    }
    Ok(out)
}

/// Removes `have` from every piece: a step per piece looked at, one per piece made.
fn cut<W: Bits>(
    pieces: &mut Vec<SliceOf<W>>,
    have: SliceOf<W>,
    budget: &mut StepBudget,
) -> Result<(), TooComplex> {
    budget.spend(pieces.len())?;
    if !pieces.iter().any(|p| p.overlaps(&have)) {
        return Ok(());
    }
    let made: u32 = pieces
        .iter()
        .map(|p| {
            if p.overlaps(&have) {
                (have.mask & !p.mask).count_ones()
            } else {
                1
            }
        })
        .sum();
    budget.spend(made as usize)?;
    *pieces = pieces.iter().flat_map(|p| p.difference(&have)).collect();
    Ok(())
}

/// Every pair (i, j), i < j, of `slices` that overlap, each once; with `across` = k, only
/// those with i < k ≤ j. Splits the slices on the bit that best separates them, a slice that
/// leaves the bit free going both ways, down to groups that no bit separates (which overlap
/// pairwise): about n · log n steps for the slices of a slicing. When splitting costs more
/// than a quarter of comparing every pair, every pair is compared instead, so this never takes
/// more than 1.25 times the steps of that quadratic scan (which is what makes any normalised
/// list of up to 128 slices fit its budget: n + 1.25 · n(n − 1)/2 + 33n steps at most).
fn overlapping_pairs<W: Bits>(
    slices: &[SliceOf<W>],
    across: Option<u32>,
    budget: &mut StepBudget,
) -> Result<Vec<(u32, u32)>, TooComplex> {
    let n = slices.len() as u64;
    let scan = match across {
        Some(k) => u64::from(k) * (n - u64::from(k)),
        None => n * n.saturating_sub(1) / 2,
    };
    let mut out = Vec::new();
    let mut trial = budget.trial(scan / 4);
    let split = split(
        slices,
        (0..n as u32).collect(),
        W::ZERO,
        W::ZERO,
        across,
        &mut trial,
        &mut out,
    );
    budget.settle(&trial, scan / 4);
    if split.is_ok() {
        return Ok(out);
    }
    budget.spend(scan as usize)?;
    out.clear();
    let lower = across.unwrap_or(n as u32);
    for i in 0..lower {
        let from = across.unwrap_or(i + 1);
        for j in from..n as u32 {
            if slices[i as usize].overlaps(&slices[j as usize]) {
                out.push((i, j));
            }
        }
    }
    Ok(out)
}

/// One node of [`overlapping_pairs`]: the slices `idx` (ascending) that agree with `path` on
/// the bits `fixed` so far (or leave them free).
fn split<W: Bits>(
    slices: &[SliceOf<W>],
    idx: Vec<u32>,
    fixed: W,
    path: W,
    across: Option<u32>,
    budget: &mut StepBudget,
    out: &mut Vec<(u32, u32)>,
) -> Result<(), TooComplex> {
    // Slices before `left` are of the first kind (all of them without `across`).
    let left = across.map_or(idx.len(), |k| idx.partition_point(|&i| i < k));
    let no_pairs = match across {
        Some(_) => left == 0 || left == idx.len(),
        None => idx.len() < 2,
    };
    if no_pairs {
        return Ok(());
    }
    budget.spend(idx.len())?;
    let best = best_split_bit(slices, &idx, fixed);
    let Some(b) = best else {
        // No bit separates any two: they overlap pairwise. A pair that leaves a split bit
        // free went both ways: it is counted in the half where that bit is 0 only.
        let (first, second) = match across {
            Some(_) => (&idx[..left], &idx[left..]),
            None => (&idx[..], &idx[..]),
        };
        let pairs = match across {
            Some(_) => first.len() * second.len(),
            None => idx.len() * (idx.len() - 1) / 2,
        };
        budget.spend(pairs)?;
        for (x, &i) in first.iter().enumerate() {
            let from = if across.is_some() { 0 } else { x + 1 };
            for &j in &second[from..] {
                if path & !(slices[i as usize].mask | slices[j as usize].mask) == W::ZERO {
                    out.push((i, j));
                }
            }
        }
        return Ok(());
    };
    let bit = W::bit(b);
    let goes = |i: &u32, half: W| {
        let s = slices[*i as usize];
        s.mask & bit == W::ZERO || s.value & bit == half
    };
    let zero: Vec<u32> = idx.iter().copied().filter(|i| goes(i, W::ZERO)).collect();
    let one: Vec<u32> = idx.iter().copied().filter(|i| goes(i, bit)).collect();
    drop(idx);
    split(slices, zero, fixed | bit, path, across, budget, out)?;
    split(slices, one, fixed | bit, path | bit, across, budget, out)
}

/// The bit that some of `idx` fix to 0 and others to 1, as evenly as can be, then fixed by the
/// most (the fewest go both ways); none when no bit outside `fixed` separates any two. Its own
/// frame, so that the counts (one pair per bit of the width) are not on every level of the
/// recursion.
fn best_split_bit<W: Bits>(slices: &[SliceOf<W>], idx: &[u32], fixed: W) -> Option<u32> {
    let mut count = [[0u32; 2]; 128];
    for &i in idx {
        let s = slices[i as usize];
        let mut m = s.mask & !fixed;
        while m != W::ZERO {
            let b = m.trailing_zeros();
            let bit = W::bit(b);
            m = m & !bit;
            count[b as usize][usize::from(s.value & bit != W::ZERO)] += 1;
        }
    }
    (0..W::WIDTH)
        .filter(|&b| count[b as usize][0] > 0 && count[b as usize][1] > 0)
        .max_by_key(|&b| {
            let c = count[b as usize];
            (c[0].min(c[1]), c[0] + c[1])
        })
}
