//! Summaries of repeated measurements: median with min–max, ratios paired
//! within a round, latency percentiles.
//!
//! Why paired ratios: on a shared, noisy 2-vCPU machine absolute rates drift
//! by ±10% between minutes, but a traced run and the bare run next to it see
//! the same drift. So each round's traced figure is divided by the same
//! round's bare figure, and only those ratios are summarised.

use serde::Serialize;

/// Median and range of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` when there are no finite samples.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let sorted = sorted_finite(samples);
        let (first, last) = (*sorted.first()?, *sorted.last()?);
        Some(Self {
            median: median_of_sorted(&sorted),
            min: first,
            max: last,
            n: sorted.len(),
        })
    }
}

/// Latency percentiles (nearest rank) of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Percentiles {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let sorted = sorted_finite(samples);
        let (first, last) = (*sorted.first()?, *sorted.last()?);
        Some(Self {
            p50: median_of_sorted(&sorted),
            p99: nearest_rank(&sorted, 0.99),
            min: first,
            max: last,
            n: sorted.len(),
        })
    }
}

/// `num[i] / den[i]` for each round where both exist and the denominator is
/// positive.
pub fn paired_ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter()
        .zip(den)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .filter(|r| r.is_finite())
        .collect()
}

/// Least-squares slope of `y` over `x` (`None` with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Median of a sorted, non-empty slice (mean of the middle two for even lengths).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The smallest sample with at least `q` of the samples at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_odd_and_even() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn summary_ignores_non_finite_and_empty_is_none() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
        let s = Summary::of(&[f64::INFINITY, 5.0]).unwrap();
        assert_eq!((s.median, s.n), (5.0, 1));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!((p.p50, p.p99, p.min, p.max), (50.5, 99.0, 1.0, 100.0));
        let p = Percentiles::of(&[7.0]).unwrap();
        assert_eq!((p.p50, p.p99), (7.0, 7.0));
        let few: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(Percentiles::of(&few).unwrap().p99, 10.0);
    }

    #[test]
    fn ratios_are_paired_and_skip_zero_denominators() {
        assert_eq!(
            paired_ratios(&[9.0, 8.0, 5.0], &[10.0, 0.0, 5.0]),
            vec![0.9, 1.0]
        );
        assert_eq!(paired_ratios(&[1.0, 2.0], &[1.0]), vec![1.0]);
    }

    #[test]
    fn slope_of_a_line() {
        let pts = [(0.0, 100.0), (10.0, 300.0), (100.0, 2100.0)];
        assert!((slope(&pts).unwrap() - 20.0).abs() < 1e-9);
        assert!(slope(&[(1.0, 1.0)]).is_none());
        assert!(slope(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
