//! Consistent hashing: each backend owns many points on a 64-bit ring, a key belongs to the first
//! point at or after its hash. Adding or removing one of N backends moves about 1/N of the keys,
//! and only those that must move.

/// Points per backend: enough for an even spread (within a few percent with 3 backends).
const POINTS_PER_BACKEND: u32 = 256;

#[derive(Debug, Default)]
pub struct Ring {
    /// (position, index into `endpoints`), sorted by position.
    points: Vec<(u64, usize)>,
    endpoints: Vec<String>,
}

impl Ring {
    /// A ring over `endpoints`; duplicates are ignored and the order does not matter, so every
    /// agent given the same set routes alike.
    pub fn new(mut endpoints: Vec<String>) -> Ring {
        endpoints.sort();
        endpoints.dedup();
        let mut points = Vec::with_capacity(endpoints.len() * POINTS_PER_BACKEND as usize);
        for (index, endpoint) in endpoints.iter().enumerate() {
            for point in 0..POINTS_PER_BACKEND {
                let mut key = endpoint.as_bytes().to_vec();
                key.extend_from_slice(&point.to_le_bytes());
                points.push((stable_hash(&key), index));
            }
        }
        points.sort_unstable();
        Ring { points, endpoints }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The index (into [`Ring::endpoints`]) of the backend owning `key`.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let hash = stable_hash(key);
        let at = self
            .points
            .partition_point(|&(position, _)| position < hash);
        let (_, index) = self.points[at % self.points.len()];
        Some(index)
    }
}

/// FNV-1a finished with murmur3's fmix64: fixed across builds and platforms, unlike std's
/// hasher, so that agents of different versions agree on owners.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}
