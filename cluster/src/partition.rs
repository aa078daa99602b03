//! Kafka's default key partitioning, bit for bit.
//!
//! The Java producer (and therefore Kafka Streams and every JVM service)
//! places a keyed record in partition
//! `(murmur2(key) & 0x7fffffff) % partitions`. librdkafka does the same when
//! `partitioner=murmur2_random`, which brook's `KafkaConfig` sets.
//! Topics are co-partitioned only when every writer agrees on this function.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), as in the Java client's
/// `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java producer picks for a non-empty `key` among
/// `partitions` partitions, or `None` when `partitions` is not positive.
///
/// ```
/// use brook_cluster::partition::partition_for_key;
/// assert_eq!(partition_for_key(b"foobar", 4), Some(2));
/// assert_eq!(partition_for_key(b"foobar", 0), None);
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> Option<i32> {
    if partitions <= 0 {
        return None;
    }
    Some((murmur2(key) & 0x7fff_ffff) % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expectations in Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_is_positive_hash_modulo_partitions() {
        // -790332482 & 0x7fffffff = 1357151166; % 4 = 2; % 3 = 0.
        assert_eq!(partition_for_key(b"foobar", 4), Some(2));
        assert_eq!(partition_for_key(b"foobar", 3), Some(0));
        assert_eq!(partition_for_key(b"anything", 1), Some(0));
        assert_eq!(partition_for_key(b"foobar", -1), None);
    }
}
