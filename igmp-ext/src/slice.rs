//! Slices of the client address space (patent Fig 7C, 9, 10): a slice is a (value, mask) pair
//! over a source address, and a slice set is a union of disjoint slices with the set algebra
//! that allocation, verification and filtering need. One implementation serves both widths:
//! [`Slice`]/[`SliceSet`] over 32-bit IPv4 sources, [`Slice6`]/[`SliceSet6`] over 128-bit IPv6
//! ones (`slice6.rs`), so that both keep the same bounded build (issue 13).

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

pub use build::Bits;

/// The addresses `a` with `a & mask == value`. The value never has bits outside the mask.
/// Use it as [`Slice`] (IPv4) or [`Slice6`] (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceOf<W> {
    value: W,
    mask: W,
}

/// A slice of the IPv4 source space.
pub type Slice = SliceOf<u32>;

impl<W: Bits> SliceOf<W> {
    /// Every address.
    pub const ALL: Self = SliceOf {
        value: W::ZERO,
        mask: W::ZERO,
    };

    /// `Slice::new` for either width: bits of `value` outside the mask are dropped.
    pub fn from_parts(value: W, mask: W) -> Self {
        SliceOf {
            value: value & mask,
            mask,
        }
    }

    pub fn value(&self) -> W {
        self.value
    }

    pub fn mask(&self) -> W {
        self.mask
    }

    pub fn contains(&self, addr: W) -> bool {
        addr & self.mask == self.value
    }

    /// Bits the mask leaves free: the slice has 2^host_bits addresses.
    pub fn host_bits(&self) -> u32 {
        W::WIDTH - self.mask.count_ones()
    }

    /// True when some address lies in both: they agree on every bit both masks fix.
    pub fn overlaps(&self, other: &Self) -> bool {
        (self.value ^ other.value) & self.mask & other.mask == W::ZERO
    }

    /// True when every address of `self` is in `other`.
    pub fn is_subset_of(&self, other: &Self) -> bool {
        other.mask & !self.mask == W::ZERO && self.value & other.mask == other.value
    }

    pub fn intersection(&self, other: &Self) -> Option<Self> {
        self.overlaps(other)
            .then(|| Self::from_parts(self.value | other.value, self.mask | other.mask))
    }

    /// `self` minus `other` as at most `WIDTH` disjoint slices: fix, one at a time, each bit
    /// that `other` fixes and `self` does not; the half that disagrees with `other` is outside it.
    pub fn difference(&self, other: &Self) -> Vec<Self> {
        if !self.overlaps(other) {
            return vec![*self];
        }
        let mut out = Vec::new();
        let mut cur = *self;
        let mut free = other.mask & !self.mask;
        while free != W::ZERO {
            let bit = W::bit(W::WIDTH - 1 - free.leading_zeros());
            free = free & !bit;
            out.push(Self::from_parts(
                (cur.value & !bit) | (!other.value & bit),
                cur.mask | bit,
            ));
            cur = Self::from_parts(cur.value | (other.value & bit), cur.mask | bit);
        }
        out
    }

    /// The sibling that differs only in the lowest fixed bit, if the mask fixes any bit.
    #[cfg(test)]
    fn sibling_merge(&self, other: &Self) -> Option<Self> {
        if self.mask != other.mask {
            return None;
        }
        let diff = self.value ^ other.value;
        (diff.count_ones() == 1).then(|| Self::from_parts(self.value & !diff, self.mask & !diff))
    }
}

impl SliceOf<u32> {
    /// The slice of addresses matching `value` under `mask`; bits of `value` outside the mask
    /// are dropped.
    pub const fn new(value: u32, mask: u32) -> Self {
        SliceOf {
            value: value & mask,
            mask,
        }
    }

    /// A CIDR prefix: the top `len` bits of `addr` (len 0..=32, clamped).
    pub fn prefix(addr: Ipv4Addr, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        };
        Slice::new(addr.into(), mask)
    }

    /// The lowest address in the slice: what a group record lists for it.
    pub fn base(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.value)
    }

    pub fn contains_addr(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr.into())
    }

    /// Number of addresses (1 to 2^32).
    pub const fn size(&self) -> u64 {
        1u64 << (32 - self.mask.count_ones())
    }
}

impl fmt::Display for Slice {
    /// CIDR (`10.0.0.0/8`) when the mask is a prefix, else `value/mask` in dotted quads
    /// (`0.0.0.1/0.0.0.3`: every address ending in binary 01).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask.leading_ones() + self.mask.trailing_zeros() == 32 {
            write!(
                f,
                "{}/{}",
                Ipv4Addr::from(self.value),
                self.mask.count_ones()
            )
        } else {
            write!(
                f,
                "{}/{}",
                Ipv4Addr::from(self.value),
                Ipv4Addr::from(self.mask)
            )
        }
    }
}

/// Why a slice string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slice {input:?}: expected ADDR/LEN or ADDR/MASK, for example 10.0.0.0/8 or 0.0.0.1/0.0.0.3")]
pub struct SliceParseError {
    input: String,
}

impl FromStr for Slice {
    type Err = SliceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SliceParseError {
            input: s.to_owned(),
        };
        let (addr, rest) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.trim().parse().map_err(|_| err())?;
        let rest = rest.trim();
        if let Ok(len) = rest.parse::<u8>() {
            if len > 32 {
                return Err(err());
            }
            return Ok(Slice::prefix(addr, len));
        }
        let mask: Ipv4Addr = rest.parse().map_err(|_| err())?;
        Ok(Slice::new(addr.into(), mask.into()))
    }
}

#[path = "slice_build.rs"]
mod build;
pub use build::{step_budget, StepBudget, TooComplex, BASE_SLICES, STEPS_PER_SLICE};
#[path = "slice6.rs"]
mod v6;
pub use v6::{Slice6, Slice6ParseError, SliceSet6, DEFAULT_SITE_PREFIX_LEN};

/// Steps taken building sets (comparisons, pieces made, hash probes: what a [`StepBudget`]
/// counts): tests count them to show that untrusted slices build no set before their signature
/// and a bounded one after it, and that the usual sets stay near-linear.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;
    thread_local!(static STEPS: Cell<u64> = const { Cell::new(0) });
    pub(super) fn add(n: usize) {
        STEPS.with(|c| c.set(c.get() + n as u64));
    }
    /// Steps on this thread since the last call: tests assert that untrusted
    /// input was refused before any slice set was built from it.
    pub(crate) fn take() -> u64 {
        STEPS.with(|c| c.replace(0))
    }
}
#[cfg(not(test))]
mod work {
    #[inline(always)]
    pub(super) fn add(_: usize) {}
}

#[cfg(test)]
pub(crate) use build::adversarial;

/// A union of disjoint slices. Operations keep the slices disjoint and merge siblings, so the
/// representation stays small; equality is equality of the address sets. Use it as
/// [`SliceSet`] (IPv4) or [`SliceSet6`] (IPv6).
#[derive(Debug, Clone, Default)]
pub struct SliceSetOf<W> {
    slices: Vec<SliceOf<W>>,
}

/// A set of slices of the IPv4 source space.
pub type SliceSet = SliceSetOf<u32>;

impl<W: Bits> SliceSetOf<W> {
    pub const fn new() -> Self {
        SliceSetOf { slices: Vec::new() }
    }

    /// Every address.
    pub fn full() -> Self {
        SliceSetOf {
            slices: vec![SliceOf::ALL],
        }
    }

    /// The disjoint slices, in canonical order.
    pub fn slices(&self) -> &[SliceOf<W>] {
        &self.slices
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &SliceOf<W>> {
        self.slices.iter()
    }

    /// Number of slices in the representation (not addresses).
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    pub fn contains(&self, addr: W) -> bool {
        self.slices.iter().any(|s| s.contains(addr))
    }

    pub fn overlaps_slice(&self, other: &SliceOf<W>) -> bool {
        self.slices.iter().any(|s| s.overlaps(other))
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        other.slices.iter().any(|o| self.overlaps_slice(o))
    }

    pub fn is_subset_of(&self, other: &Self) -> bool {
        self.difference(other).is_empty()
    }

    /// Adds the addresses of `slice`.
    pub fn insert(&mut self, slice: SliceOf<W>) {
        work::add(self.slices.len());
        let mut pieces = vec![slice];
        for have in &self.slices {
            pieces = pieces.iter().flat_map(|p| p.difference(have)).collect();
            if pieces.is_empty() {
                return;
            }
        }
        self.slices.extend(pieces);
        self.normalize();
    }

    /// Removes the addresses of `slice`.
    pub fn remove(&mut self, slice: &SliceOf<W>) {
        if !self.overlaps_slice(slice) {
            return;
        }
        self.slices = self
            .slices
            .iter()
            .flat_map(|s| s.difference(slice))
            .collect();
        self.normalize();
    }

    pub fn union(&self, other: &Self) -> Self {
        self.slices.iter().chain(&other.slices).copied().collect()
    }

    pub fn difference(&self, other: &Self) -> Self {
        build::difference(self, other, &mut StepBudget::unlimited())
            .expect("an unlimited budget refuses nothing")
    }

    pub fn intersection(&self, other: &Self) -> Self {
        let mut slices: Vec<SliceOf<W>> = Vec::new();
        for a in &self.slices {
            for b in &other.slices {
                if let Some(i) = a.intersection(b) {
                    slices.push(i);
                }
            }
        }
        // Pieces of disjoint sets intersected pairwise are disjoint already.
        let mut out = SliceSetOf { slices };
        out.normalize();
        out
    }

    /// Merges sibling slices until none are left and sorts (see `normalize_within`).
    fn normalize(&mut self) {
        self.normalize_within(&mut StepBudget::unlimited())
            .expect("an unlimited budget refuses nothing");
    }

    /// Addresses covered, when they fit a `u128` (every IPv4 set; an IPv6 set short of the
    /// whole space): a cheap inequality test.
    fn size_u128(&self) -> Option<u128> {
        self.slices.iter().try_fold(0u128, |acc, s| {
            acc.checked_add(1u128.checked_shl(s.host_bits())?)
        })
    }
}

impl SliceSetOf<u32> {
    /// The 2^bits slices that split the space by its `bits` lowest bits: a hash-like spread in
    /// which every /24 contributes to every slice (patent Fig 10, "every third portion").
    pub fn low_order_slicing(bits: u8) -> Vec<Slice> {
        let bits = u32::from(bits.min(24));
        let mask = (1u32 << bits) - 1;
        (0..=mask).map(|v| Slice::new(v, mask)).collect()
    }

    /// The 2^bits slices that split the space by its `bits` highest bits (CIDR prefixes).
    pub fn prefix_slicing(bits: u8) -> Vec<Slice> {
        let bits = u32::from(bits.min(24));
        if bits == 0 {
            return vec![Slice::ALL];
        }
        let shift = 32 - bits;
        (0..(1u32 << bits))
            .map(|v| Slice::new(v << shift, u32::MAX << shift))
            .collect()
    }

    /// Number of addresses covered (0 to 2^32).
    pub fn size(&self) -> u64 {
        self.slices.iter().map(Slice::size).sum()
    }

    /// True when the set covers the whole address space.
    pub fn is_full(&self) -> bool {
        self.size() == 1u64 << 32
    }

    pub fn contains_addr(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr.into())
    }
}

impl<W: Bits> PartialEq for SliceSetOf<W> {
    fn eq(&self, other: &Self) -> bool {
        match (self.size_u128(), other.size_u128()) {
            (Some(a), Some(b)) if a != b => false,
            (Some(_), None) | (None, Some(_)) => false,
            _ => self.is_subset_of(other),
        }
    }
}

impl<W: Bits> Eq for SliceSetOf<W> {}

impl<W: Bits> FromIterator<SliceOf<W>> for SliceSetOf<W> {
    /// The union of the slices, normalised once at the end rather than after each one. From
    /// trusted slices only: untrusted ones go through [`SliceSet::try_from_slices`].
    fn from_iter<I: IntoIterator<Item = SliceOf<W>>>(iter: I) -> Self {
        let input: Vec<SliceOf<W>> = iter.into_iter().collect();
        build::build(&input, &mut StepBudget::unlimited())
            .expect("an unlimited budget refuses nothing")
    }
}

impl<W: Bits> From<SliceOf<W>> for SliceSetOf<W> {
    fn from(s: SliceOf<W>) -> Self {
        SliceSetOf { slices: vec![s] }
    }
}

impl<W: Bits> fmt::Display for SliceSetOf<W>
where
    SliceOf<W>: fmt::Display,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.slices.is_empty() {
            return f.write_str("(none)");
        }
        for (i, s) in self.slices.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> Slice {
        text.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(s("10.0.0.0/8"), Slice::new(0x0a00_0000, 0xff00_0000));
        assert_eq!(s("0.0.0.1/0.0.0.3"), Slice::new(1, 3));
        assert_eq!(s("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(Slice::new(1, 3).to_string(), "0.0.0.1/0.0.0.3");
        assert_eq!(Slice::ALL.to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/1.2.3"] {
            assert!(bad.parse::<Slice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn membership_and_overlap() {
        let odd = Slice::new(1, 1);
        assert!(odd.contains(3) && !odd.contains(4));
        assert_eq!(odd.size(), 1 << 31);
        assert!(odd.overlaps(&s("10.0.0.0/8")));
        assert!(!odd.overlaps(&Slice::new(2, 3)));
        assert!(Slice::new(3, 3).is_subset_of(&odd));
        assert!(!odd.is_subset_of(&Slice::new(3, 3)));
    }

    #[test]
    fn difference_is_exact() {
        let d = Slice::ALL.difference(&Slice::new(5, 7));
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.iter().map(Slice::size).sum::<u64>(),
            (1 << 32) - (1 << 29)
        );
        assert!(d.iter().all(|p| !p.overlaps(&Slice::new(5, 7))));
    }

    #[test]
    fn slicings_cover_the_space_once() {
        for bits in [0u8, 1, 3, 8] {
            for slicing in [
                SliceSet::low_order_slicing(bits),
                SliceSet::prefix_slicing(bits),
            ] {
                assert_eq!(slicing.len(), 1 << bits);
                let set: SliceSet = slicing.iter().copied().collect();
                assert!(set.is_full());
                assert_eq!(set.len(), 1, "siblings merge back into one slice");
            }
        }
    }

    #[test]
    fn every_third_portion_of_thirty_two() {
        // Patent Fig 10: divide into portions, every third portion to one server.
        let units = SliceSet::low_order_slicing(5);
        let mine: SliceSet = units.iter().step_by(3).copied().collect();
        assert_eq!(mine.size(), 11 * (1 << 27));
        assert!(mine.contains(0) && mine.contains(3) && !mine.contains(1));
    }

    fn arb_slice() -> impl Strategy<Value = Slice> {
        // Few distinct bits so that overlaps are common and sets stay enumerable.
        (0u32..16, 0u32..16).prop_map(|(v, m)| Slice::new(v << 28 | v, m << 28 | m))
    }

    fn arb_set() -> impl Strategy<Value = SliceSet> {
        prop::collection::vec(arb_slice(), 0..6).prop_map(|v| v.into_iter().collect())
    }

    /// Membership over representative addresses: those bits the generators touch.
    fn samples() -> impl Iterator<Item = u32> {
        (0u32..256).map(|i| (i >> 4) << 28 | (i & 0xf))
    }

    fn disjoint(set: &SliceSet) -> bool {
        let s = set.slices();
        (0..s.len()).all(|i| (i + 1..s.len()).all(|j| !s[i].overlaps(&s[j])))
    }

    /// The quadratic normalisation this module used before: the oracle the fast one must match
    /// slice for slice (joins list the slices, so the representation is visible).
    fn normalize_by_scan(slices: &mut Vec<Slice>) {
        loop {
            slices.sort_unstable_by_key(|s| (s.mask, s.value));
            let mut merged = false;
            let mut out: Vec<Slice> = Vec::with_capacity(slices.len());
            let mut i = 0;
            while i < slices.len() {
                let s = slices[i];
                let partner = slices[i + 1..]
                    .iter()
                    .take_while(|t| t.mask == s.mask)
                    .position(|t| s.sibling_merge(t).is_some());
                match partner {
                    Some(off) => {
                        let t = slices.remove(i + 1 + off);
                        out.push(s.sibling_merge(&t).expect("partner was found as a sibling"));
                        merged = true;
                    }
                    None => out.push(s),
                }
                i += 1;
            }
            *slices = out;
            if !merged {
                break;
            }
        }
        slices.sort_unstable_by_key(|s| (s.mask.count_ones(), s.value, s.mask));
    }

    fn arb_disjoint_slices() -> impl Strategy<Value = Vec<Slice>> {
        // Units of a low-order slicing (some bits), a few of them already merged: disjoint, and
        // with many siblings, which is what normalisation has to get right.
        (1u8..7, prop::collection::vec(any::<bool>(), 64)).prop_map(|(bits, keep)| {
            let mask = (1u32 << bits) - 1;
            (0..=mask)
                .filter(|v| keep[*v as usize % keep.len()])
                .map(|v| Slice::new(v << 24 | v, mask << 24 | mask))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn collecting_matches_inserting_one_by_one(
            slices in arb_disjoint_slices(),
            extra in prop::collection::vec(arb_slice(), 0..4),
            seed in any::<u64>(),
        ) {
            // Shuffled, with a few overlapping slices of other masks mixed in.
            let mut input: Vec<Slice> = slices.into_iter().chain(extra).collect();
            let mut x = seed | 1;
            for i in (1..input.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                input.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut one_by_one = SliceSet::new();
            for s in &input {
                one_by_one.insert(*s);
            }
            let collected: SliceSet = input.iter().copied().collect();
            prop_assert_eq!(&collected, &one_by_one);
            prop_assert!(disjoint(&collected));
            for x in samples() {
                prop_assert_eq!(collected.contains(x), input.iter().any(|s| s.contains(x)));
            }
        }

        #[test]
        fn fast_normalisation_matches_the_scan(slices in arb_disjoint_slices()) {
            let mut fast = SliceSet { slices: slices.clone() };
            fast.normalize();
            let mut scan = slices;
            normalize_by_scan(&mut scan);
            prop_assert_eq!(fast.slices(), &scan[..]);
        }
    }

    #[test]
    fn building_a_set_from_many_slices_is_near_linear() {
        // A member's claim lists up to a thousand units of its slicing, and its set is built
        // within a budget linear in that (issue 13, item 6): the work must stay near n, not n².
        let mask = 0x1fff;
        let n_units = 1usize << 12;
        let units = (0..=mask)
            .filter(|v: &u32| v.count_ones() % 2 == 0)
            .map(|v| Slice::new(v, mask));
        work::take();
        let set: SliceSet = units.collect();
        let steps = work::take();
        assert_eq!(set.len(), n_units);
        assert!(
            steps <= 40 * n_units as u64,
            "{steps} steps for {n_units} slices"
        );
        let _ = set.union(&SliceSet::from(Slice::new(1, 0x1fff)));
        let steps = work::take();
        assert!(steps <= 80 * n_units as u64, "union: {steps} steps");
    }

    #[test]
    fn many_unmergeable_slices_normalise() {
        // Values of even parity never differ in exactly one bit: nothing merges.
        let mask = 0xffff;
        let units: Vec<Slice> = (0..=mask)
            .filter(|v: &u32| v.count_ones() % 2 == 0)
            .map(|v| Slice::new(v, mask))
            .collect();
        let mut set = SliceSet {
            slices: units.clone(),
        };
        set.normalize();
        assert_eq!(set.len(), 1 << 15);
        let mut all = SliceSet {
            slices: (0..=mask).map(|v| Slice::new(v, mask)).collect(),
        };
        all.normalize();
        assert_eq!(all.slices(), &[Slice::ALL]);
    }

    /// How sets were built before budgets (issue 13, item 6): each slice cut by every piece
    /// of the earlier ones. The oracle the bounded build must match slice for slice.
    fn collect_by_scan(input: &[Slice]) -> SliceSet {
        let mut disjoint: Vec<Slice> = Vec::new();
        for &slice in input {
            let mut pieces = vec![slice];
            for have in &disjoint {
                if pieces.iter().any(|p| p.overlaps(have)) {
                    pieces = pieces.iter().flat_map(|p| p.difference(have)).collect();
                }
            }
            disjoint.extend(pieces);
        }
        let mut set = SliceSet { slices: disjoint };
        set.normalize();
        set
    }

    /// How differences were taken before budgets: every slice cut by every overlapping cut.
    fn difference_by_scan(a: &SliceSet, b: &SliceSet) -> SliceSet {
        let mut slices = a.slices.clone();
        for cut in &b.slices {
            if slices.iter().any(|s| s.overlaps(cut)) {
                slices = slices.iter().flat_map(|s| s.difference(cut)).collect();
            }
        }
        let mut out = SliceSet { slices };
        out.normalize();
        out
    }

    /// Slices of any masks: few bits (overlaps everywhere) or scattered ones (interleaved).
    fn arb_mixed_slices(max: usize) -> impl Strategy<Value = Vec<Slice>> {
        let scattered = (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(v, m1, m2)| Slice::new(v, m1 & m2));
        prop::collection::vec(prop_oneof![arb_slice(), scattered], 0..max)
    }

    proptest! {
        #[test]
        fn building_matches_the_scan(input in arb_mixed_slices(9)) {
            let built: SliceSet = input.iter().copied().collect();
            let scan = collect_by_scan(&input);
            prop_assert_eq!(built.slices(), scan.slices());
            // Within a budget the same set, or a refusal: never another set.
            let mut budget = StepBudget::for_slices(input.len());
            if let Ok(bounded) = SliceSet::try_from_slices(&input, &mut budget) {
                prop_assert_eq!(bounded.slices(), scan.slices());
            }
        }

        #[test]
        fn difference_matches_the_scan(a in arb_mixed_slices(7), b in arb_mixed_slices(7)) {
            let (a, b): (SliceSet, SliceSet) = (a.into_iter().collect(), b.into_iter().collect());
            let scan = difference_by_scan(&a, &b);
            let unbounded = a.difference(&b);
            prop_assert_eq!(unbounded.slices(), scan.slices());
            let mut budget = StepBudget::for_slices(a.len() + b.len());
            if let Ok(bounded) = a.try_difference(&b, &mut budget) {
                prop_assert_eq!(bounded.slices(), scan.slices());
            }
        }

        /// A certificate lists a normalised set of at most 128 slices: whatever the masks,
        /// building it again fits the budget (issue 13, item 6).
        #[test]
        fn any_normalised_list_of_128_fits_its_budget(input in arb_mixed_slices(9)) {
            let set: SliceSet = input.into_iter().collect();
            prop_assume!(set.len() <= 128);
            let mut budget = StepBudget::for_slices(set.len());
            let again = SliceSet::try_from_slices(set.slices(), &mut budget);
            prop_assert_eq!(again.as_ref().map(SliceSet::slices), Ok(set.slices()));
        }
    }

    /// Random subsets of a slicing's units, normalised: the sets members claim in joins.
    fn claims_of_slicings() -> Vec<(String, SliceSet)> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut coin = move |p: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < p
        };
        let mut out = Vec::new();
        for bits in [1u8, 4, 8, 10] {
            for (kind, units) in [
                ("low-order", SliceSet::low_order_slicing(bits)),
                ("prefix", SliceSet::prefix_slicing(bits)),
            ] {
                for p in [10, 50, 90] {
                    let set: SliceSet = units.iter().copied().filter(|_| coin(p)).collect();
                    out.push((format!("{kind} {bits} bits, {p}%"), set));
                }
                // Even parity: nothing merges, the most slices a claim can list.
                let even: SliceSet = units
                    .iter()
                    .copied()
                    .filter(|u| u.value().count_ones() % 2 == 0)
                    .collect();
                out.push((format!("{kind} {bits} bits, even parity"), even));
            }
        }
        out
    }

    /// Issue 13, item 6: built again from their slices (as a verifier does from a join), the
    /// sets members claim take under half their budget, and come out the same.
    #[test]
    fn a_members_claim_fits_its_budget_with_room() {
        for (name, set) in claims_of_slicings() {
            let n = set.len();
            let mut budget = StepBudget::for_slices(n);
            work::take();
            let again = SliceSet::try_from_slices(set.slices(), &mut budget).expect(&name);
            let steps = work::take();
            assert_eq!(again.slices(), set.slices(), "{name}");
            assert_eq!(steps, budget.spent(), "{name}");
            assert!(
                steps <= step_budget(n) / 2,
                "{name}: {steps} steps for {n} slices"
            );
        }
    }

    /// Issue 13, item 6: interleaved masks, random or crafted, as many as a join may list
    /// (1,024): refused within the budget, where the unbounded build took seconds for a
    /// dozen crafted slices and 124,428 steps for the fuzz file's seven.
    #[test]
    fn hostile_slices_are_refused_within_the_budget() {
        use super::adversarial::{interleaved, pairs_then_all};
        for n in [7, 128, 1024] {
            for (name, input) in [
                ("interleaved", interleaved(n, 5)),
                ("pairs then all", pairs_then_all(n)),
            ] {
                let mut budget = StepBudget::for_slices(n);
                work::take();
                let r = SliceSet::try_from_slices(&input, &mut budget);
                let steps = work::take();
                assert!(steps <= step_budget(n), "{name} {n}: {steps} steps");
                if n >= 128 {
                    assert_eq!(
                        r.map(|s| s.len()),
                        Err(TooComplex::Steps {
                            slices: n,
                            budget: step_budget(n)
                        }),
                        "{name} {n}"
                    );
                }
            }
        }
        // The fuzz file's seven: 166 pieces, within 64 · (7 + 128) steps.
        let fuzz = [
            (0, 0x4017_0077),
            (0, 0xf8ff),
            (0, 0xfff9_0000),
            (0, 0x0070_0200),
            (0, 0x33),
            (0, 0),
            (0, 0x20),
        ]
        .map(|(v, m)| Slice::new(v, m));
        let mut budget = StepBudget::for_slices(7);
        let r = SliceSet::try_from_slices(&fuzz, &mut budget);
        let steps = work::take();
        assert!(steps <= step_budget(7), "fuzz file: {steps} steps");
        if let Ok(set) = r {
            assert_eq!(set.slices(), collect_by_scan(&fuzz).slices());
        }
    }

    /// Splitting never costs much more than comparing every pair: slices that no bit
    /// separates well (a decision list: x0 = 1; x0 = 0, x1 = 1; ...) and many copies.
    #[test]
    fn finding_overlaps_is_never_much_worse_than_the_scan() {
        let chain: Vec<Slice> = (0..32)
            .map(|i| Slice::new(1 << i, if i == 31 { u32::MAX } else { (2 << i) - 1 }))
            .collect();
        let copies: Vec<Slice> = (0..200).map(|i| Slice::new(i % 3, 1 + i % 2)).collect();
        for (name, input) in [("chain", chain), ("copies", copies)] {
            work::take();
            let set: SliceSet = input.iter().copied().collect();
            let steps = work::take();
            let n = input.len() as u64;
            assert!(
                steps <= n * n + 34 * n,
                "{name}: {steps} steps for {n} slices"
            );
            assert_eq!(set.slices(), collect_by_scan(&input).slices(), "{name}");
        }
    }

    proptest! {
        #[test]
        fn algebra_matches_membership(a in arb_set(), b in arb_set()) {
            let (u, d, i) = (a.union(&b), a.difference(&b), a.intersection(&b));
            for x in samples() {
                prop_assert_eq!(u.contains(x), a.contains(x) || b.contains(x));
                prop_assert_eq!(d.contains(x), a.contains(x) && !b.contains(x));
                prop_assert_eq!(i.contains(x), a.contains(x) && b.contains(x));
            }
            prop_assert!(disjoint(&u) && disjoint(&d) && disjoint(&i));
            prop_assert_eq!(u.size(), a.size() + b.size() - i.size());
            prop_assert_eq!(a.overlaps(&b), !i.is_empty());
            prop_assert!(d.is_subset_of(&a) && !d.overlaps(&b));
            prop_assert_eq!(u.clone(), b.union(&a));
        }

        #[test]
        fn display_parse_round_trip(sl in arb_slice()) {
            prop_assert_eq!(sl.to_string().parse::<Slice>().unwrap(), sl);
        }
    }
}
