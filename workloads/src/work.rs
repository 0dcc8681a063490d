//! The unit of CPU work: a "reduction" (the BEAM's unit, roughly one function call) is a fixed
//! number of dependent integer operations. Fixed work, not fixed time: a slower CPU (TCG) makes
//! every scheduler's requests equally longer, and the ratios between schedulers stay honest.

use std::hint::black_box;

const OPS_PER_REDUCTION: u32 = 8;

/// Do `n` reductions of work on `state` (the result is kept so the work is not optimised out).
#[inline(never)]
pub fn reductions(n: u64, state: &mut u64) {
    let mut x = black_box(*state) | 1;
    for _ in 0..n {
        for _ in 0..OPS_PER_REDUCTION {
            // xorshift64: each step depends on the last.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    *state = black_box(x);
}

/// Nanoseconds one reduction takes on this CPU now (median of a few short timings).
pub fn ns_per_reduction() -> f64 {
    let mut state = 1;
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            reductions(20_000, &mut state);
            t.elapsed().as_nanos() as f64 / 20_000.0
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_reductions_take_longer_and_change_state() {
        let mut s = 7;
        reductions(10, &mut s);
        assert_ne!(s, 7);
        let t = std::time::Instant::now();
        reductions(1_000_000, &mut s);
        let long = t.elapsed();
        assert!(long.as_nanos() > 1_000_000, "8M ops took {long:?}");
        assert!(ns_per_reduction() > 0.0);
    }
}
