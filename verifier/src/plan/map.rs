//! The lookup map both nft data planes write (the VIP map and the native netdev maps): each
//! owner's slices expanded over the finest mask any of them uses, so that one lookup
//! `ip saddr & mask` finds the owner. Generic over the address width: the IPv6 native table
//! ([`super::netdev6`]) expands 128-bit slices the same way.

use super::PlanError;
use core::fmt::Write;
use igmp_ext::slice::{Bits, SliceSetOf};
use std::collections::BTreeMap;

/// The commands that take `map` of `table` (family and name, `"netdev manycast_native"`) from
/// `old` to `new`: keys removed or re-pointed are deleted (into `deletes`), new and re-pointed
/// ones added (into `adds`, which the callers write after every delete of the change);
/// nothing when nothing moved. `key` names a key and `element` writes `key : value` (none: the
/// element is left out, as a member the map cannot name).
pub(super) fn element_moves<K: Ord + Copy, V: PartialEq>(
    (deletes, adds): (&mut String, &mut String),
    (table, map): (&str, &str),
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    key: impl Fn(K) -> String,
    element: impl Fn(K, &V) -> Option<String>,
) {
    let gone: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(k) != Some(*v))
        .map(|(k, _)| key(*k))
        .collect();
    let came: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(*v))
        .filter_map(|(k, v)| element(*k, v))
        .collect();
    if !gone.is_empty() {
        let _ = writeln!(
            deletes,
            "delete element {table} {map} {{ {} }}",
            gone.join(", ")
        );
    }
    if !came.is_empty() {
        let _ = writeln!(adds, "add element {table} {map} {{ {} }}", came.join(", "));
    }
}

/// Largest map we write: 2^16 elements.
const MAX_MASK_BITS: u32 = 16;

/// One map: the common mask and, for each masked value, the member it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapPlanOf<W> {
    pub mask: W,
    pub elements: Vec<(W, u32)>,
}

/// An IPv4 map.
pub type MapPlan = MapPlanOf<u32>;

/// Expands each member's slices over the finest mask any of them uses. Unowned values go to the
/// fallback member, if any.
///
/// A claim whose slices would make the common mask wider than [`MAX_MASK_BITS`] is left out
/// (its values fall to the fallback or the gap) and returned as a [`PlanError::ClaimLeftOut`]:
/// one member's claim, however its slices are cut, never stops the others' from being written
/// (issue 13, item 9). Claims are taken in order of how many claims share their mask (the
/// cluster's common slicing first), then coarser masks, then member id, so a single member with
/// an odd mask cannot push the majority out.
pub fn plan_map<W: Bits>(
    claims: &[(u32, SliceSetOf<W>)],
    fallback: Option<u32>,
) -> (MapPlanOf<W>, Vec<PlanError>) {
    plan_map_keeping(claims, fallback, W::ZERO)
}

/// [`plan_map`] over at least the bits of `floor` (the mask the kernel's map has now) when the
/// result stays within [`MAX_MASK_BITS`]: a map's mask only grows, so that an ownership change
/// that needs no finer mask (a failover back and forth, a member gone and back) moves elements
/// instead of rewriting the table.
pub fn plan_map_keeping<W: Bits>(
    claims: &[(u32, SliceSetOf<W>)],
    fallback: Option<u32>,
    floor: W,
) -> (MapPlanOf<W>, Vec<PlanError>) {
    let mask_of = |s: &SliceSetOf<W>| s.iter().fold(W::ZERO, |a, sl| a | sl.mask());
    let mut order: Vec<(usize, u32, u32, usize)> = claims
        .iter()
        .enumerate()
        .map(|(i, (m, s))| {
            let mask = mask_of(s);
            let sharing = claims.iter().filter(|(_, o)| mask_of(o) == mask).count();
            (usize::MAX - sharing, mask.count_ones(), *m, i)
        })
        .collect();
    order.sort_unstable();
    let mut mask = W::ZERO;
    let mut kept = Vec::with_capacity(claims.len());
    let mut left_out = Vec::new();
    for &(_, _, member, i) in &order {
        let with = mask | mask_of(&claims[i].1);
        if with.count_ones() > MAX_MASK_BITS {
            left_out.push(PlanError::ClaimLeftOut {
                member,
                bits: with.count_ones(),
                max: MAX_MASK_BITS,
            });
            continue;
        }
        mask = with;
        kept.push(i);
    }
    kept.sort_unstable();
    if !kept.is_empty() && (mask | floor).count_ones() <= MAX_MASK_BITS {
        mask = mask | floor;
    }
    let bits: Vec<u32> = (0..W::WIDTH)
        .filter(|&b| mask & W::bit(b) != W::ZERO)
        .collect();
    let mut elements = Vec::new();
    for i in 0u32..(1 << bits.len()) {
        let value = bits
            .iter()
            .enumerate()
            .filter(|(k, _)| i & (1 << k) != 0)
            .fold(W::ZERO, |v, (_, &b)| v | W::bit(b));
        let owner = kept
            .iter()
            .map(|&k| &claims[k])
            .find(|(_, s)| s.contains(value))
            .map(|(m, _)| *m)
            .or(fallback);
        if let Some(m) = owner {
            elements.push((value, m));
        }
    }
    (MapPlanOf { mask, elements }, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::{Slice, SliceSet};
    use std::net::Ipv4Addr;

    /// A mask the kernel's map has stays while the claims fit it (no rewrite for a change that
    /// needs no finer mask), and the same owners come out.
    #[test]
    fn a_maps_mask_only_grows_while_it_fits() {
        let half = |v| SliceSet::from(Slice::new(v, 1));
        let claims = vec![(1, half(0)), (2, half(1))];
        let coarse = plan_map(&claims, None).0;
        assert_eq!(coarse.mask, 1);
        let kept = plan_map_keeping(&claims, None, 0xff).0;
        assert_eq!(kept.mask, 0xff);
        assert_eq!(kept.elements.len(), 256);
        assert!(kept
            .elements
            .iter()
            .all(|&(v, m)| m == if v & 1 == 0 { 1 } else { 2 }));
        // A floor past the cap is dropped rather than leave claims out.
        let wide = plan_map_keeping(&claims, None, 0x1ffff).0;
        assert_eq!(wide.mask, 1);
    }

    #[test]
    fn map_expands_slices_over_the_finest_mask() {
        // Member 1: last bit 0 (mask 1); member 2: last two bits 01; 11 unowned.
        let claims = vec![
            (1, SliceSet::from(Slice::new(0, 1))),
            (2, SliceSet::from(Slice::new(1, 3))),
        ];
        let plan = plan_map(&claims, None).0;
        assert_eq!(plan.mask, 3);
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1)]);
        let plan = plan_map(&claims, Some(2)).0;
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1), (3, 2)]);
        // Prefix slices work the same way, over high bits.
        let claims = vec![(
            7,
            SliceSet::from(Slice::prefix(Ipv4Addr::new(128, 0, 0, 0), 1)),
        )];
        let plan = plan_map(&claims, None).0;
        assert_eq!(plan.mask, 0x8000_0000);
        assert_eq!(plan.elements, vec![(0x8000_0000, 7)]);
        // Too fine a mask is left out rather than written as a huge map.
        let claims = vec![(1, SliceSet::from(Slice::new(0, 0x1_ffff)))];
        let (plan, left_out) = plan_map(&claims, None);
        assert_eq!(plan, MapPlan::default());
        assert_eq!(
            left_out[0].to_string(),
            "member 1's slices need 17 address bits with the others'; \
             left out of the map (up to 16)"
        );
        assert_eq!(plan_map(&[], None), (MapPlan::default(), Vec::new()));
        assert_eq!(
            plan_map_keeping(&[], None, 0xff),
            (MapPlan::default(), Vec::new()),
            "no claims, no map"
        );
    }

    #[test]
    fn one_odd_mask_cannot_push_the_common_slicing_out() {
        // Four members on the cluster's 8-bit low-order slicing, one on 9 other bits.
        let mut claims: Vec<(u32, SliceSet)> = (0..4)
            .map(|m| (m + 2, SliceSet::from(Slice::new(m, 0xff))))
            .collect();
        claims.insert(0, (1, SliceSet::from(Slice::new(0x1ff00, 0x1ff00))));
        let (plan, left_out) = plan_map(&claims, None);
        assert_eq!(plan.mask, 0xff);
        assert_eq!(plan.elements.len(), 4);
        assert!(matches!(
            &left_out[..],
            [PlanError::ClaimLeftOut { member: 1, .. }]
        ));
    }
}
