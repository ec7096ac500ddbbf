//! Building slice sets within a budget of steps (issue 13, item 6). The union of a few slices
//! whose masks interleave can fall apart into exponentially many disjoint pieces: seven slices
//! of a fuzzed certificate made 166 pieces and 124,428 steps, fifteen crafted ones over a
//! million. A set built from slices a peer chose (a certificate's, a join's) is therefore built
//! within [`step_budget`] steps, linear in the slices listed, or refused as [`TooComplex`].
//!
//! Every step is O(1) work (a comparison, a piece made, a hash probe), and the same steps are
//! what `work::take` counts in tests. Within the budget the set is exactly the one the
//! unbounded operations build, slice for slice: they run this code with no limit.

use super::{work, Slice, SliceSet};
use core::ops::Range;
use std::collections::HashSet;

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

impl SliceSet {
    /// The union of `slices`, exactly as collecting them builds it, if that takes no more of
    /// `budget` than is left; else [`TooComplex`], refused before the work it would take.
    pub fn try_from_slices(
        slices: &[Slice],
        budget: &mut StepBudget,
    ) -> Result<SliceSet, TooComplex> {
        build(slices, budget)
    }

    /// `self` minus `other`, exactly as [`SliceSet::difference`] computes it, within `budget`.
    pub fn try_difference(
        &self,
        other: &SliceSet,
        budget: &mut StepBudget,
    ) -> Result<SliceSet, TooComplex> {
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
            let mut unmerged: HashSet<Slice> = self.slices.iter().copied().collect();
            let mut out: Vec<Slice> = Vec::with_capacity(self.slices.len());
            let mut merged = false;
            for s in &self.slices {
                if !unmerged.remove(s) {
                    continue; // taken earlier as another slice's partner
                }
                let mut free = s.mask & !s.value;
                let mut partner = None;
                while free != 0 {
                    let bit = free & free.wrapping_neg();
                    free &= !bit;
                    let candidate = Slice::new(s.value | bit, s.mask);
                    budget.spend(1)?;
                    if unmerged.remove(&candidate) {
                        partner = Some(bit);
                        break;
                    }
                }
                match partner {
                    Some(bit) => {
                        out.push(Slice::new(s.value, s.mask & !bit));
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
pub(super) fn build(input: &[Slice], budget: &mut StepBudget) -> Result<SliceSet, TooComplex> {
    budget.spend(input.len())?;
    // A slice listed again adds nothing (its first copy cuts all of it away).
    let mut seen = HashSet::with_capacity(input.len());
    let input: Vec<Slice> = input.iter().copied().filter(|s| seen.insert(*s)).collect();
    drop(seen);
    let disjoint = if input.windows(2).all(|w| w[0].mask == w[1].mask) {
        // One mask (a slicing's units, the usual case): distinct slices are disjoint.
        input
    } else {
        cut_overlaps(&input, budget)?
    };
    let mut set = SliceSet { slices: disjoint };
    set.normalize_within(budget)?;
    Ok(set)
}

/// `a` minus `b` (both disjoint): each slice of `a` cut by the slices of `b` it overlaps, in
/// `b`'s order, then normalised.
pub(super) fn difference(
    a: &SliceSet,
    b: &SliceSet,
    budget: &mut StepBudget,
) -> Result<SliceSet, TooComplex> {
    let k = a.slices.len();
    let all: Vec<Slice> = a.slices.iter().chain(&b.slices).copied().collect();
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
    let mut set = SliceSet { slices: out };
    set.normalize_within(budget)?;
    Ok(set)
}

/// Disjoint pieces of the union of distinct `slices`: each slice minus the pieces of the
/// earlier ones, the pieces collecting has always made. Only the earlier slices that overlap a
/// slice can cut it, so only those are visited.
fn cut_overlaps(slices: &[Slice], budget: &mut StepBudget) -> Result<Vec<Slice>, TooComplex> {
    let mut pairs = overlapping_pairs(slices, None, budget)?;
    pairs.sort_unstable_by_key(|&(earlier, later)| (later, earlier));
    let mut out: Vec<Slice> = Vec::with_capacity(slices.len());
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
fn cut(pieces: &mut Vec<Slice>, have: Slice, budget: &mut StepBudget) -> Result<(), TooComplex> {
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
fn overlapping_pairs(
    slices: &[Slice],
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
        0,
        0,
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
fn split(
    slices: &[Slice],
    idx: Vec<u32>,
    fixed: u32,
    path: u32,
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
    let mut count = [[0u32; 2]; 32];
    for &i in &idx {
        let s = slices[i as usize];
        let mut m = s.mask & !fixed;
        while m != 0 {
            let b = m.trailing_zeros();
            m &= m - 1;
            count[b as usize][(s.value >> b & 1) as usize] += 1;
        }
    }
    // The bit that some slices fix to 0 and others to 1, as evenly as can be, then fixed by
    // the most (the fewest go both ways).
    let best = (0..32)
        .filter(|&b| count[b][0] > 0 && count[b][1] > 0)
        .max_by_key(|&b| (count[b][0].min(count[b][1]), count[b][0] + count[b][1]));
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
                if path & !(slices[i as usize].mask | slices[j as usize].mask) == 0 {
                    out.push((i, j));
                }
            }
        }
        return Ok(());
    };
    let bit = 1u32 << b;
    let goes = |i: &u32, half: u32| {
        let s = slices[*i as usize];
        s.mask & bit == 0 || s.value & bit == half
    };
    let zero: Vec<u32> = idx.iter().copied().filter(|i| goes(i, 0)).collect();
    let one: Vec<u32> = idx.iter().copied().filter(|i| goes(i, bit)).collect();
    drop(idx);
    split(slices, zero, fixed | bit, path, across, budget, out)?;
    split(slices, one, fixed | bit, path | bit, across, budget, out)
}
