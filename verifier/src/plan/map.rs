//! The lookup map both nft data planes write (the VIP map and the native netdev map): each
//! owner's slices expanded over the finest mask any of them uses, so that one lookup
//! `ip saddr & mask` finds the owner.

use super::PlanError;
use igmp_ext::SliceSet;

/// Largest map we write: 2^16 elements.
const MAX_MASK_BITS: u32 = 16;

/// One map: the common mask and, for each masked value, the member it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapPlan {
    pub mask: u32,
    pub elements: Vec<(u32, u32)>,
}

/// Expands each member's slices over the finest mask any of them uses. Unowned values go to the
/// fallback member, if any.
pub fn plan_map(claims: &[(u32, SliceSet)], fallback: Option<u32>) -> Result<MapPlan, PlanError> {
    let mask = claims
        .iter()
        .flat_map(|(_, s)| s.iter().map(|sl| sl.mask()))
        .fold(0u32, |a, m| a | m);
    let bits: Vec<u32> = (0..32).filter(|b| mask & (1 << b) != 0).collect();
    if bits.len() as u32 > MAX_MASK_BITS {
        return Err(PlanError::MaskTooFine {
            bits: bits.len() as u32,
            max: MAX_MASK_BITS,
        });
    }
    let mut elements = Vec::new();
    for i in 0u32..(1 << bits.len()) {
        let value = bits
            .iter()
            .enumerate()
            .filter(|(k, _)| i & (1 << k) != 0)
            .fold(0u32, |v, (_, b)| v | (1 << b));
        let owner = claims
            .iter()
            .find(|(_, s)| s.contains(value))
            .map(|(m, _)| *m)
            .or(fallback);
        if let Some(m) = owner {
            elements.push((value, m));
        }
    }
    Ok(MapPlan { mask, elements })
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slice;
    use std::net::Ipv4Addr;

    #[test]
    fn map_expands_slices_over_the_finest_mask() {
        // Member 1: last bit 0 (mask 1); member 2: last two bits 01; 11 unowned.
        let claims = vec![
            (1, SliceSet::from(Slice::new(0, 1))),
            (2, SliceSet::from(Slice::new(1, 3))),
        ];
        let plan = plan_map(&claims, None).unwrap();
        assert_eq!(plan.mask, 3);
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1)]);
        let plan = plan_map(&claims, Some(2)).unwrap();
        assert_eq!(plan.elements, vec![(0, 1), (1, 2), (2, 1), (3, 2)]);
        // Prefix slices work the same way, over high bits.
        let claims = vec![(
            7,
            SliceSet::from(Slice::prefix(Ipv4Addr::new(128, 0, 0, 0), 1)),
        )];
        let plan = plan_map(&claims, None).unwrap();
        assert_eq!(plan.mask, 0x8000_0000);
        assert_eq!(plan.elements, vec![(0x8000_0000, 7)]);
        // Too fine a mask is refused rather than written as a huge map.
        let claims = vec![(1, SliceSet::from(Slice::new(0, 0x1_ffff)))];
        let e = plan_map(&claims, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "slices use 17 address bits; VIP mode supports up to 16"
        );
        assert_eq!(plan_map(&[], None).unwrap(), MapPlan::default());
    }
}
