//! Small dense linear algebra needed by the population model (no external crate): the cyclic
//! Jacobi eigenvalue algorithm for symmetric matrices (Golub & Van Loan, *Matrix Computations*,
//! 4th ed., §8.5) and ordinary least squares with one regressor.

/// Eigen-decomposition of the symmetric `n × n` matrix `a` (row-major, `a.len() == n*n`) by
/// cyclic Jacobi rotations. Returns `(eigenvalues, eigenvectors)` sorted by decreasing
/// eigenvalue; eigenvector `k` is `vecs[k]` (length `n`, unit norm). The input is assumed
/// symmetric (only its upper triangle is trusted to equal the lower one).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| m[i * n + i] * m[i * n + i]).sum::<f64>() + 1e-300;
        if off <= 1e-28 * scale {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let app = m[p * n + p];
                let aqq = m[q * n + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let mkp = m[k * n + p];
                    let mkq = m[k * n + q];
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let mpk = m[p * n + k];
                    let mqk = m[q * n + k];
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let vals = order.iter().map(|&i| m[i * n + i]).collect();
    let vecs = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (vals, vecs)
}

/// Ordinary least squares `y = a + b·x + e`: returns `(a, b, residual SD)` with the residual SD
/// on `n − 2` degrees of freedom (0 if `n ≤ 2`). Returns `None` if fewer than 2 points or `x`
/// has no spread.
pub fn ols(x: &[f64], y: &[f64]) -> Option<(f64, f64, f64)> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = x[..n].iter().sum::<f64>() / nf;
    let my = y[..n].iter().sum::<f64>() / nf;
    let sxx: f64 = x[..n].iter().map(|v| (v - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = x[..n]
        .iter()
        .zip(&y[..n])
        .map(|(a, b)| (a - mx) * (b - my))
        .sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let rss: f64 = x[..n]
        .iter()
        .zip(&y[..n])
        .map(|(xi, yi)| (yi - a - b * xi).powi(2))
        .sum();
    let sd = if n > 2 {
        (rss / (nf - 2.0)).sqrt()
    } else {
        0.0
    };
    Some((a, b, sd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_known_eigenpairs() {
        // [[2,1],[1,2]] has eigenvalues 3 and 1
        let (vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        assert!((vecs[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
        // A·v = λ·v on a random symmetric 5×5
        let n = 5;
        let mut a = vec![0.0; 25];
        for i in 0..n {
            for j in 0..=i {
                let x = ((i * 7 + j * 3) % 11) as f64 - 5.0;
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n);
        for (l, v) in vals.iter().zip(&vecs) {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - l * v[i]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn ols_exact_line() {
        let (a, b, sd) = ols(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]).unwrap();
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12 && sd < 1e-12);
        assert!(ols(&[1.0, 1.0], &[0.0, 1.0]).is_none());
    }
}
