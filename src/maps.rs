//! Maps that grow with waiting browsers (the hub's, the open-socket caps') give their room back
//! as the browsers leave: a map that held 20 000 entries keeps its table otherwise, long after
//! it emptied.

use std::collections::HashMap;
use std::hash::Hash;

/// Below this capacity a map keeps its room: shrinking it would not be worth the rehash.
const KEEP_CAPACITY: usize = 1024;

/// Shrinks `map` to twice its length once it is a quarter full or less (amortized: a map is
/// rehashed only after it lost three quarters of what it held).
pub fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > KEEP_CAPACITY && map.len() <= map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_that_emptied_gives_its_room_back_and_a_small_one_keeps_it() {
        let mut map: HashMap<u32, u32> = (0..20_000).map(|n| (n, n)).collect();
        let full = map.capacity();
        for n in 0..19_990 {
            map.remove(&n);
            shrink_if_sparse(&mut map);
        }
        assert_eq!(map.len(), 10);
        assert!(map.capacity() <= KEEP_CAPACITY, "{} of {full}", map.capacity());
        let mut small: HashMap<u32, u32> = (0..500).map(|n| (n, n)).collect();
        let room = small.capacity();
        small.clear();
        shrink_if_sparse(&mut small);
        assert_eq!(small.capacity(), room);
    }
}
