//! Latency histograms: log-linear buckets (32 per power of two, so a bucket is at most 3.2 %
//! wide), exact below 64 ns, exact min/max/sum. Workloads record into them; the lab merges the
//! histograms of repeated runs, reads percentiles and draws CDFs from them.

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS; // buckets per power of two
const EXACT: u64 = 2 * SUB; // values below this have a bucket each
const MAX_EXP: u32 = 44; // ~4.9 hours in ns; larger values share the last bucket
const NR_BUCKETS: usize = (EXACT + (MAX_EXP as u64 - SUB_BITS as u64) * SUB) as usize;

/// Bucket index of a value.
pub fn bucket_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = (63 - v.leading_zeros()).min(MAX_EXP); // floor(log2 v) >= SUB_BITS + 1
    let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
    let mant = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (EXACT + (exp - SUB_BITS - 1) as u64 * SUB + mant) as usize
}

/// Largest value that falls into bucket `b`.
pub fn bucket_upper(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT {
        return b;
    }
    let exp = (b - EXACT) / SUB + SUB_BITS as u64 + 1;
    let mant = (b - EXACT) % SUB;
    ((SUB + mant + 1) << (exp - SUB_BITS as u64)) - 1
}

/// Smallest value that falls into bucket `b`.
pub fn bucket_lower(b: usize) -> u64 {
    if b == 0 {
        0
    } else {
        bucket_upper(b - 1) + 1
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "SparseHist", into = "SparseHist")]
pub struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            counts: vec![0; NR_BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// How a histogram is stored in JSON: only the non-empty buckets, as [index, count] pairs.
#[derive(Serialize, Deserialize)]
struct SparseHist {
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
    buckets: Vec<(u32, u64)>,
}

impl From<Hist> for SparseHist {
    fn from(h: Hist) -> Self {
        Self {
            count: h.count,
            sum: h.sum,
            min: h.min,
            max: h.max,
            buckets: h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(b, &n)| (b as u32, n))
                .collect(),
        }
    }
}

impl From<SparseHist> for Hist {
    fn from(s: SparseHist) -> Self {
        let mut h = Hist {
            count: s.count,
            sum: s.sum,
            min: s.min,
            max: s.max,
            ..Default::default()
        };
        for (b, n) in s.buckets {
            if let Some(c) = h.counts.get_mut(b as usize) {
                *c += n;
            }
        }
        h
    }
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at percentile `p` (0..=100): the upper bound of the bucket holding the
    /// ceil(p% * n)-th smallest sample, never above the exact maximum. 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // The epsilon keeps 99.9 % of 1000 at rank 999 despite float rounding.
        let rank = ((p / 100.0) * self.count as f64 - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper(b).min(self.max);
            }
        }
        self.max
    }

    /// (value, fraction of samples <= value) at each non-empty bucket's upper bound.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                seen += n;
                out.push((
                    bucket_upper(b).min(self.max),
                    seen as f64 / self.count as f64,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_without_gaps() {
        for b in 0..NR_BUCKETS - 1 {
            assert_eq!(bucket_upper(b) + 1, bucket_lower(b + 1), "bucket {b}");
            assert_eq!(bucket_of(bucket_lower(b)), b);
            assert_eq!(bucket_of(bucket_upper(b)), b);
        }
        for v in [0u64, 1, 63, 64, 65, 1000, 1_000_000, 123_456_789] {
            let b = bucket_of(v);
            assert!(bucket_lower(b) <= v && v <= bucket_upper(b), "{v}");
            // relative width at most 1/32
            assert!((bucket_upper(b) - bucket_lower(b)) as f64 <= v as f64 / 32.0 + 1.0);
        }
        assert_eq!(bucket_of(u64::MAX), NR_BUCKETS - 1);
    }

    #[test]
    fn percentiles_and_mean() {
        let mut h = Hist::default();
        assert_eq!(h.percentile(99.0), 0);
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 us .. 1 ms
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.percentile(50.0) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.04, "{p50}");
        let p99 = h.percentile(99.0) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.04, "{p99}");
        assert_eq!(h.percentile(100.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
        assert!((h.mean() - 500_500.0).abs() < 1.0);
    }

    #[test]
    fn one_slow_sample_in_a_thousand_moves_p999_not_p99() {
        let mut h = Hist::default();
        for _ in 0..999 {
            h.record(100_000);
        }
        h.record(50_000_000);
        assert!(h.percentile(99.0) < 110_000);
        assert!(h.percentile(99.9) < 110_000, "rank 999 is still fast");
        assert_eq!(h.percentile(99.95), 50_000_000);
    }

    #[test]
    fn merge_and_json_round_trip() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        a.record(10);
        a.record(5_000);
        b.record(7_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 7_000_000);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.len() < 200, "sparse: {json}");
        let back: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let cdf = back.cdf();
        assert_eq!(cdf.len(), 3);
        assert_eq!(cdf.last().unwrap().1, 1.0);
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }
}
