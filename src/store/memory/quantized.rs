//! int8 codes of the in-memory rows, and the bound that keeps a search on them exact.
//!
//! Owns how a row (or a query) is quantized, the integer dot-product kernel, and the upper
//! bound on a row's f32 score given its codes. It must not decide which rows a search
//! returns: [`super::memory`] scans the codes for candidates, rescores them in f32 with its
//! own kernel, and uses [`QueryCode::upper_bound`] to prove that no row left out could have
//! made the top k (else it scans in f32).
//!
//! A vector `x` is stored as `s·c + e`: `c` holds `round(x / s)` in -127..=127 with
//! `s = max|x| / 127`, and `e` is what that loses. The query `q` is quantized the same way,
//! `q = t·d + f`. Then `q·x = t·s·(d·c) + (t·d)·e + f·x`, and by Cauchy-Schwarz
//! `q·x <= t·s·(d·c) + |t·d|·|e| + |f|·|x|`. `d·c` is an exact integer. The score the f32
//! scan computes differs from the real `q·x` by at most `γ_n·|q|·|x|` with
//! `γ_n = n·u / (1 - n·u)`, `u = 2^-24` (the classic bound for a dot product of length `n`
//! summed in any order), so adding that term bounds the f32 score itself. The norms are
//! stored rounded up, and the sum is taken in f64 with a small extra margin.

/// The per-row numbers the bound needs, next to the row's codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowCode {
    /// `s`: the value of one code step.
    pub scale: f32,
    /// `|e|`, rounded up.
    pub error: f32,
    /// `|x|`, rounded up.
    pub norm: f32,
}

/// Quantizes `row`, appending its codes to `codes`.
pub fn encode(row: &[f32], codes: &mut Vec<i8>) -> RowCode {
    let (scale, error, norm) = quantize(row, codes);
    RowCode {
        scale,
        error: up(error),
        norm: up(norm),
    }
}

/// Codes, scale, error norm and norm (the last two in f64, not rounded).
fn quantize(v: &[f32], codes: &mut Vec<i8>) -> (f32, f64, f64) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if max == 0.0 || !max.is_finite() {
        codes.extend(std::iter::repeat_n(0i8, v.len()));
        return (0.0, norm, norm);
    }
    let scale = max / 127.0;
    let mut error = 0f64;
    for x in v {
        let c = (x / scale).round().clamp(-127.0, 127.0);
        codes.push(c as i8);
        error += (*x as f64 - scale as f64 * c as f64).powi(2);
    }
    (scale, error.sqrt(), norm)
}

/// The smallest f32 at or above `v`.
fn up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}

/// A query, quantized once per search.
#[derive(Debug, Clone)]
pub struct QueryCode {
    pub codes: Vec<i8>,
    scale: f64,
    /// `|t·d|`
    coded_norm: f64,
    /// `|f|`
    error: f64,
    /// `γ_n·|q|` plus margin: the f32 scan's rounding, per unit of `|x|`.
    rounding: f64,
}

impl QueryCode {
    pub fn new(query: &[f32]) -> QueryCode {
        let mut codes = Vec::with_capacity(query.len());
        let (scale, error, norm) = quantize(query, &mut codes);
        let scale = scale as f64;
        let coded_norm = scale * codes.iter().map(|c| (*c as f64).powi(2)).sum::<f64>().sqrt();
        let n = query.len() as f64;
        let u = f64::powi(2.0, -24);
        let gamma = n * u / (1.0 - n * u);
        QueryCode {
            codes,
            scale,
            coded_norm,
            error,
            // 1e-9 covers the f64 arithmetic of the bound itself, many times over.
            rounding: (gamma + 1e-9) * norm,
        }
    }

    /// The highest score the f32 scan could give a row with these codes.
    pub fn upper_bound(&self, dot: i32, row: &RowCode) -> f64 {
        let estimate = self.scale * row.scale as f64 * dot as f64;
        estimate + self.coded_norm * row.error as f64 + (self.error + self.rounding) * row.norm as f64 + 1e-12
    }
}

/// Integer dot product; exact (the sum of 2^16 products of at most 127² fits an i32 easily,
/// and rows are far narrower). Written, like the f32 kernel, so that LLVM vectorises it.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x as i32 * *y as i32)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i16 as i32 * y[i] as i16 as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_bound_holds_for_every_pair_and_is_tight() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut worst_gap = 0f64;
        for dim in [1usize, 3, 16, 17, 384, 1024] {
            for _ in 0..200 {
                // Mixed magnitudes, some huge outliers, some exact zeros.
                let mut gen = |_| -> f32 {
                    match rng.random_range(0..10) {
                        0 => 0.0,
                        1 => rng.random_range(-50.0..50.0),
                        _ => rng.random_range(-1.0..1.0),
                    }
                };
                let x: Vec<f32> = (0..dim).map(&mut gen).collect();
                let q: Vec<f32> = (0..dim).map(&mut gen).collect();
                let mut codes = Vec::new();
                let row = encode(&x, &mut codes);
                let query = QueryCode::new(&q);
                let bound = query.upper_bound(dot_i8(&query.codes, &codes), &row);
                let f32_score = crate::store::memory::dot(&x, &q) as f64;
                assert!(bound >= f32_score, "dim {dim}: bound {bound} < score {f32_score}");
                let scale = row.norm as f64 * (q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt());
                if scale > 0.0 {
                    worst_gap = worst_gap.max((bound - f32_score) / scale);
                }
            }
        }
        // The bound is only useful if it is close: within 5% of |q|·|x| here.
        assert!(worst_gap < 0.05, "the bound is loose: {worst_gap}");
    }

    #[test]
    fn a_zero_vector_has_zero_codes_and_a_bound_of_its_rounding_only() {
        let mut codes = Vec::new();
        let row = encode(&[0.0; 8], &mut codes);
        assert_eq!(codes, vec![0i8; 8]);
        assert_eq!((row.scale, row.error, row.norm), (0.0, 0.0, 0.0));
        let query = QueryCode::new(&[1.0; 8]);
        assert!(query.upper_bound(0, &row) < 1e-9);
    }

    #[test]
    fn the_integer_kernel_matches_the_naive_sum() {
        let a: Vec<i8> = (0..101).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..101).map(|i| (i * 91 % 255 - 127) as i8).collect();
        let naive: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
        assert_eq!(dot_i8(&a, &b), naive);
        assert_eq!(dot_i8(&[-127; 64], &[-127; 64]), 64 * 127 * 127);
    }
}
