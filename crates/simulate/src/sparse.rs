//! Sparse linear algebra for the implicit integrators: the Jacobian's structural pattern (CSR,
//! diagonal always present), its column-grouped finite-difference evaluation (Curtis, Powell &
//! Reid 1974), and a sparse LU factorisation of the Newton matrix `I − c·J`.
//!
//! The LU uses a fill-reducing symmetric ordering (minimum degree on the pattern of `A + Aᵀ`,
//! Tinney & Walker 1967 / George & Liu 1989) computed once per model, a symbolic factorisation
//! of that pattern, and a row-by-row (IKJ, "up-looking") numeric factorisation with diagonal
//! pivots. Newton matrices `I − c·J` of reaction networks are close to diagonally dominant, so
//! static diagonal pivots are normally fine; when a pivot is tiny relative to its row the
//! factorisation falls back to a dense LU with partial pivoting for that matrix.
//!
//! Model-independent: the pattern comes from the caller (e.g. the SBML compiler's structural
//! Jacobian rows), and the finite differences call a closure. Used by the stiff integrators
//! of this crate.

use thiserror::Error;

/// A right-hand side `f(t, y, dy)`: time, state (length `n`), derivative out (length `n`).
pub type Rhs<'a> = dyn FnMut(f64, &[f64], &mut [f64]) + 'a;

/// A Jacobian pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The pattern has a number of rows other than the number of states.
    #[error("Jacobian pattern has {rows} rows for {n} states")]
    RowCount {
        /// Rows given.
        rows: usize,
        /// States (`n`).
        n: usize,
    },
}

/// Structural pattern of the Jacobian ∂f/∂x in CSR form (row `i`: columns
/// `col[ptr[i]..ptr[i+1]]`, sorted, the diagonal always included), with `val` holding one
/// Jacobian evaluation and the column groups of the finite-difference evaluation.
///
/// An analytic Jacobian (e.g. the SBML crate's forward differentiation) writes `val` directly:
/// `val[k]` is `∂f_i/∂x_{col[k]}` for `k` in `ptr[i]..ptr[i+1]`.
#[derive(Debug, Clone)]
pub struct SparseJacobian {
    /// Number of states (rows and columns).
    pub n: usize,
    /// Row pointers, length `n + 1`.
    pub ptr: Vec<usize>,
    /// Column of each structural non-zero (sorted within a row), length `ptr[n]`.
    pub col: Vec<usize>,
    /// Value of each structural non-zero (dimensionless units of `∂f/∂x`), length `ptr[n]`.
    pub val: Vec<f64>,
    /// Column groups (columns sharing no row) for finite differences.
    groups: Vec<Vec<usize>>,
    /// Per column: (row, index into `val`) of its structural non-zeros.
    col_entries: Vec<Vec<(usize, usize)>>,
    /// Scratch.
    y: Vec<f64>,
    f1: Vec<f64>,
    /// Right-hand sides spent on finite-difference Jacobians.
    pub fd_evals: u64,
}

impl SparseJacobian {
    /// Pattern of an `n`-state system from `rows[i]` = the states `f_i` may depend on (any
    /// order, duplicates allowed, columns `≥ n` ignored; the diagonal is added), or dense when
    /// `rows` is None (e.g. algebraic rules solved inside the right-hand side). Values start
    /// at zero.
    ///
    /// Errors: [`PatternError::RowCount`] when `rows` does not have `n` rows.
    pub fn new(n: usize, rows: Option<&[Vec<usize>]>) -> Result<Self, PatternError> {
        let rows: Vec<Vec<usize>> = match rows {
            Some(r) if r.len() != n => return Err(PatternError::RowCount { rows: r.len(), n }),
            Some(r) => r.to_vec(),
            None => vec![(0..n).collect(); n],
        };
        let mut ptr = vec![0];
        let mut col = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let mut r: Vec<usize> = r.iter().copied().filter(|&j| j < n).collect();
            r.push(i);
            r.sort_unstable();
            r.dedup();
            col.extend_from_slice(&r);
            ptr.push(col.len());
        }
        let mut col_entries = vec![Vec::new(); n];
        for (i, r) in rows.iter().enumerate() {
            for &j in r {
                if j < n {
                    let k = (ptr[i]..ptr[i + 1]).find(|&k| col[k] == j).unwrap_or(0);
                    col_entries[j].push((i, k));
                }
            }
        }
        // Greedy grouping: columns sharing no row go together.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_rows: Vec<Vec<bool>> = Vec::new();
        for (j, ce) in col_entries.iter().enumerate() {
            if ce.is_empty() {
                continue;
            }
            let g = group_rows
                .iter()
                .position(|used| ce.iter().all(|&(i, _)| !used[i]));
            let g = match g {
                Some(g) => g,
                None => {
                    groups.push(Vec::new());
                    group_rows.push(vec![false; n]);
                    groups.len() - 1
                }
            };
            groups[g].push(j);
            for &(i, _) in ce {
                group_rows[g][i] = true;
            }
        }
        let nnz = col.len();
        Ok(SparseJacobian {
            n,
            ptr,
            col,
            val: vec![0.0; nnz],
            groups,
            col_entries,
            y: vec![0.0; n],
            f1: vec![0.0; n],
            fd_evals: 0,
        })
    }

    /// Right-hand sides per finite-difference Jacobian.
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    /// Finite-difference Jacobian at (t, y) with `f0 = f(t, y)`; `f` evaluates the
    /// right-hand side. Increments `√ε`-sized relative to max(|yⱼ|, floorⱼ) (floor: atol/rtol of
    /// each state).
    ///
    /// Panics when `y0`, `f0` or `floor` is shorter than `n` (a caller bug).
    pub fn eval_fd(&mut self, t: f64, y0: &[f64], f0: &[f64], floor: &[f64], f: &mut Rhs<'_>) {
        let n = self.n;
        assert!(
            y0.len() >= n && f0.len() >= n && floor.len() >= n,
            "SparseJacobian::eval_fd: inputs shorter than {n} states"
        );
        let y0 = &y0[..n];
        self.y.copy_from_slice(y0);
        let mut del = Vec::new();
        for g in &self.groups {
            del.clear();
            for &j in g {
                let d = 1.5e-8 * y0[j].abs().max(floor[j]);
                self.y[j] = y0[j] + d;
                del.push(self.y[j] - y0[j]);
            }
            f(t, &self.y, &mut self.f1);
            self.fd_evals += 1;
            for (k, &j) in g.iter().enumerate() {
                for &(i, idx) in &self.col_entries[j] {
                    self.val[idx] = (self.f1[i] - f0[i]) / del[k];
                }
                self.y[j] = y0[j];
            }
        }
    }
}

/// Sparse LU of `I − c·J` over a fixed pattern (see the module docs). Shapes: `n`×`n`.
#[derive(Debug, Clone)]
pub struct SparseLu {
    n: usize,
    /// `perm[new] = old` (elimination order) and its inverse.
    perm: Vec<usize>,
    iperm: Vec<usize>,
    /// Filled pattern in the new numbering: row `i` of L (columns < i, ascending) and of U
    /// (columns > i, ascending); `l_ptr`/`u_ptr` index `l_col`/`u_col` and the values.
    l_ptr: Vec<usize>,
    l_col: Vec<usize>,
    l_val: Vec<f64>,
    u_ptr: Vec<usize>,
    u_col: Vec<usize>,
    u_val: Vec<f64>,
    u_diag: Vec<f64>,
    w: Vec<f64>,
    z: Vec<f64>,
    /// Dense fallback (row-major LU with partial pivoting) when a diagonal pivot is unusable.
    dense: Option<(Vec<f64>, Vec<usize>)>,
    nz: Vec<usize>,
    /// Factorisations done (sparse, and of those with the dense fallback).
    pub n_factor: u64,
    /// Factorisations that fell back to the dense LU.
    pub n_dense: u64,
}

impl SparseLu {
    /// Ordering and symbolic factorisation for the pattern of `jac`.
    pub fn new(jac: &SparseJacobian) -> Self {
        let n = jac.n;
        let words = n.div_ceil(64).max(1);
        // Symmetric adjacency (no self loops) as bit sets.
        let mut adj = vec![0u64; n * words];
        for i in 0..n {
            for &j in &jac.col[jac.ptr[i]..jac.ptr[i + 1]] {
                if i != j {
                    adj[i * words + j / 64] |= 1 << (j % 64);
                    adj[j * words + i / 64] |= 1 << (i % 64);
                }
            }
        }
        let deg = |adj: &[u64], v: usize| -> u32 {
            adj[v * words..(v + 1) * words]
                .iter()
                .map(|w| w.count_ones())
                .sum()
        };
        let mut degree: Vec<u32> = (0..n).map(|v| deg(&adj, v)).collect();
        let mut alive = vec![true; n];
        let mut perm = Vec::with_capacity(n);
        // Neighbours of each vertex when eliminated (old numbering): its U row / L column.
        let mut elim_nb: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut nb_bits = vec![0u64; words];
        for _ in 0..n {
            let v = (0..n)
                .filter(|&v| alive[v])
                .min_by_key(|&v| (degree[v], v))
                .unwrap_or(0);
            alive[v] = false;
            perm.push(v);
            nb_bits.copy_from_slice(&adj[v * words..(v + 1) * words]);
            let mut nbs = Vec::new();
            for (w, &bits) in nb_bits.iter().enumerate() {
                let mut b = bits;
                while b != 0 {
                    let k = b.trailing_zeros() as usize;
                    nbs.push(w * 64 + k);
                    b &= b - 1;
                }
            }
            for &u in &nbs {
                let row = &mut adj[u * words..(u + 1) * words];
                for (r, &b) in row.iter_mut().zip(&nb_bits) {
                    *r |= b;
                }
                row[u / 64] &= !(1 << (u % 64));
                row[v / 64] &= !(1 << (v % 64));
                degree[u] = deg(&adj, u);
            }
            elim_nb[v] = nbs;
        }
        let mut iperm = vec![0; n];
        for (new, &old) in perm.iter().enumerate() {
            iperm[old] = new;
        }
        // U row i (new numbering) = eliminated neighbours of perm[i]; L row i = transpose.
        let mut u_rows: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut l_rows: Vec<Vec<usize>> = vec![Vec::new(); n];
        for i in 0..n {
            let mut r: Vec<usize> = elim_nb[perm[i]].iter().map(|&o| iperm[o]).collect();
            r.sort_unstable();
            for &j in &r {
                l_rows[j].push(i);
            }
            u_rows[i] = r;
        }
        let mut l_ptr = vec![0];
        let mut l_col = Vec::new();
        let mut u_ptr = vec![0];
        let mut u_col = Vec::new();
        for i in 0..n {
            l_rows[i].sort_unstable();
            l_col.extend_from_slice(&l_rows[i]);
            l_ptr.push(l_col.len());
            u_col.extend_from_slice(&u_rows[i]);
            u_ptr.push(u_col.len());
        }
        SparseLu {
            n,
            perm,
            iperm,
            l_val: vec![0.0; l_col.len()],
            u_val: vec![0.0; u_col.len()],
            l_ptr,
            l_col,
            u_ptr,
            u_col,
            u_diag: vec![0.0; n],
            w: vec![0.0; n],
            z: vec![0.0; n],
            dense: None,
            nz: Vec::new(),
            n_factor: 0,
            n_dense: 0,
        }
    }

    /// Order `n` of the matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Non-zeros of L and U (without the diagonal).
    pub fn fill(&self) -> usize {
        self.l_col.len() + self.u_col.len()
    }

    /// Factorise `M = I − c·J` (J's values in `jac.val`). Returns false when M is singular,
    /// or when `jac` has another size than the pattern this LU was built for.
    pub fn factor(&mut self, jac: &SparseJacobian, c: f64) -> bool {
        let n = self.n;
        if jac.n != n || jac.ptr.len() != n + 1 || jac.val.len() != jac.col.len() {
            return false;
        }
        self.n_factor += 1;
        self.dense = None;
        let mut ok = true;
        for i in 0..n {
            let oi = self.perm[i];
            let mut row_max = 0.0f64;
            for k in jac.ptr[oi]..jac.ptr[oi + 1] {
                let j = jac.col[k];
                let v = if j == oi { 1.0 } else { 0.0 } - c * jac.val[k];
                self.w[self.iperm[j]] = v;
                row_max = row_max.max(v.abs());
            }
            for p in self.l_ptr[i]..self.l_ptr[i + 1] {
                let k = self.l_col[p];
                let l = self.w[k] / self.u_diag[k];
                self.w[k] = 0.0;
                self.l_val[p] = l;
                if l != 0.0 {
                    let (a, e) = (self.u_ptr[k], self.u_ptr[k + 1]);
                    for (v, &c) in self.u_val[a..e].iter().zip(&self.u_col[a..e]) {
                        self.w[c] -= l * v;
                    }
                }
            }
            let d = self.w[i];
            self.w[i] = 0.0;
            for q in self.u_ptr[i]..self.u_ptr[i + 1] {
                let j = self.u_col[q];
                self.u_val[q] = self.w[j];
                self.w[j] = 0.0;
            }
            self.u_diag[i] = d;
            if !d.is_finite() || d.abs() <= 1e-10 * row_max {
                ok = false;
                // Finish clearing the work vector is not needed: every touched entry was
                // reset above. Stop and fall back.
                break;
            }
        }
        if ok {
            return true;
        }
        self.n_dense += 1;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for k in jac.ptr[i]..jac.ptr[i + 1] {
                let j = jac.col[k];
                a[i * n + j] = if j == i { 1.0 } else { 0.0 } - c * jac.val[k];
            }
        }
        let mut piv = vec![0; n];
        if !lu_factor(&mut a, n, &mut piv, &mut self.nz) {
            return false;
        }
        self.dense = Some((a, piv));
        true
    }

    /// Solve `M x = b` in place with the last factorisation (`b`: length `n`).
    ///
    /// Panics when `b` is shorter than `n` (a caller bug).
    pub fn solve(&mut self, b: &mut [f64]) {
        let n = self.n;
        assert!(
            b.len() >= n,
            "SparseLu::solve: right-hand side shorter than {n}"
        );
        if let Some((a, piv)) = &self.dense {
            lu_solve(a, n, piv, b);
            return;
        }
        let z = &mut self.z;
        for i in 0..n {
            let (a, e) = (self.l_ptr[i], self.l_ptr[i + 1]);
            let mut s = b[self.perm[i]];
            for (v, &c) in self.l_val[a..e].iter().zip(&self.l_col[a..e]) {
                s -= v * z[c];
            }
            z[i] = s;
        }
        for i in (0..n).rev() {
            let (a, e) = (self.u_ptr[i], self.u_ptr[i + 1]);
            let mut s = z[i];
            for (v, &c) in self.u_val[a..e].iter().zip(&self.u_col[a..e]) {
                s -= v * z[c];
            }
            z[i] = s / self.u_diag[i];
        }
        for (&p, &zi) in self.perm.iter().zip(z.iter()) {
            b[p] = zi;
        }
    }
}

/// In-place LU factorisation with partial pivoting of the `n`×`n` row-major matrix `a`
/// (LINPACK layout: row swaps touch only the columns from the pivot on; `piv[c]` is the row
/// swapped with `c`). Sparse-aware: only the pivot row's non-zeros take part in each update.
/// Returns false when the matrix is singular.
pub(crate) fn lu_factor(a: &mut [f64], n: usize, piv: &mut [usize], nz: &mut Vec<usize>) -> bool {
    for c in 0..n {
        let mut p = c;
        let mut best = a[c * n + c].abs();
        for r in c + 1..n {
            let v = a[r * n + c].abs();
            if v > best {
                best = v;
                p = r;
            }
        }
        if best == 0.0 || !best.is_finite() {
            return false;
        }
        piv[c] = p;
        if p != c {
            for k in c..n {
                a.swap(p * n + k, c * n + k);
            }
        }
        let inv = 1.0 / a[c * n + c];
        nz.clear();
        for k in c + 1..n {
            if a[c * n + k] != 0.0 {
                nz.push(k);
            }
        }
        for r in c + 1..n {
            let f = a[r * n + c];
            if f != 0.0 {
                let f = f * inv;
                a[r * n + c] = f;
                for &k in nz.iter() {
                    a[r * n + k] -= f * a[c * n + k];
                }
            }
        }
    }
    true
}

/// Solve with the factors of [`lu_factor`]: `b` becomes the solution.
pub(crate) fn lu_solve(a: &[f64], n: usize, piv: &[usize], b: &mut [f64]) {
    for c in 0..n {
        b.swap(c, piv[c]);
        let bc = b[c];
        if bc != 0.0 {
            for r in c + 1..n {
                b[r] -= a[r * n + c] * bc;
            }
        }
    }
    for c in (0..n).rev() {
        let mut s = b[c];
        for k in c + 1..n {
            s -= a[c * n + k] * b[k];
        }
        b[c] = s / a[c * n + c];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Jacobian structure from explicit rows (no model needed).
    fn jac_from(n: usize, entries: &[(usize, usize, f64)]) -> SparseJacobian {
        let mut rows = vec![Vec::new(); n];
        for &(i, j, _) in entries {
            rows[i].push(j);
        }
        let mut ptr = vec![0];
        let mut col = Vec::new();
        for (i, r) in rows.iter_mut().enumerate() {
            r.push(i);
            r.sort_unstable();
            r.dedup();
            col.extend_from_slice(r);
            ptr.push(col.len());
        }
        let mut val = vec![0.0; col.len()];
        for &(i, j, v) in entries {
            let k = (ptr[i]..ptr[i + 1]).find(|&k| col[k] == j).unwrap();
            val[k] += v;
        }
        SparseJacobian {
            n,
            ptr,
            col,
            val,
            groups: Vec::new(),
            col_entries: Vec::new(),
            y: vec![0.0; n],
            f1: vec![0.0; n],
            fd_evals: 0,
        }
    }

    #[allow(clippy::needless_range_loop)]
    fn check_solve(jac: &SparseJacobian, c: f64, lu: &mut SparseLu) {
        let n = jac.n;
        let x: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
        // b = (I − cJ) x
        let mut b = x.clone();
        for i in 0..n {
            for k in jac.ptr[i]..jac.ptr[i + 1] {
                b[i] -= c * jac.val[k] * x[jac.col[k]];
            }
        }
        assert!(lu.factor(jac, c));
        lu.solve(&mut b);
        for (g, w) in b.iter().zip(&x) {
            assert!((g - w).abs() < 1e-10 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn sparse_lu_solves_reaction_network_matrix() {
        // A chain with a hub (state 0 couples to all) and a cycle: fill-in appears.
        let n = 40;
        let mut e = Vec::new();
        for i in 0..n {
            e.push((i, i, -1.0 - i as f64 * 0.1));
            e.push(((i + 1) % n, i, 0.5));
            e.push((0, i, 0.01 * i as f64));
            e.push((i, 0, -0.02));
        }
        let jac = jac_from(n, &e);
        let mut lu = SparseLu::new(&jac);
        for c in [1e-3, 1.0, 1e3] {
            check_solve(&jac, c, &mut lu);
        }
        assert_eq!(lu.n_dense, 0, "diagonal pivots suffice here");
        // Minimum degree keeps the fill of a hub-and-cycle pattern linear, not quadratic.
        assert!(lu.fill() < 6 * n, "fill {}", lu.fill());
    }

    #[test]
    fn pattern_from_rows_and_grouped_finite_differences() {
        assert_eq!(
            SparseJacobian::new(3, Some(&[vec![0], vec![1]])).unwrap_err(),
            PatternError::RowCount { rows: 2, n: 3 }
        );
        // f = (x0·x1, x1², 2·x2 + x0): rows {0,1}, {1}, {0,2}; columns 1 and 2 share no row.
        let rows = [vec![1, 0, 0], vec![1, 7], vec![2, 0]];
        let mut j = SparseJacobian::new(3, Some(&rows)).unwrap();
        assert_eq!(j.ptr, [0, 2, 3, 5]);
        assert_eq!(j.col, [0, 1, 1, 0, 2]);
        assert_eq!(j.n_groups(), 2);
        let mut f = |_t: f64, x: &[f64], o: &mut [f64]| {
            o[0] = x[0] * x[1];
            o[1] = x[1] * x[1];
            o[2] = 2.0 * x[2] + x[0];
        };
        let x = [2.0, 3.0, 5.0];
        let mut f0 = [0.0; 3];
        f(0.0, &x, &mut f0);
        j.eval_fd(0.0, &x, &f0, &[1.0; 3], &mut f);
        let want = [3.0, 2.0, 6.0, 1.0, 2.0];
        for (g, w) in j.val.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{:?}", j.val);
        }
        assert_eq!(j.fd_evals, 2);
    }

    #[test]
    fn sparse_lu_falls_back_to_pivoting() {
        // I − cJ with c = 1 and J = [[1, 2], [3, 1]] has a zero (1,1) pivot.
        let jac = jac_from(2, &[(0, 0, 1.0), (0, 1, 2.0), (1, 0, 3.0), (1, 1, 1.0)]);
        let mut lu = SparseLu::new(&jac);
        check_solve(&jac, 1.0, &mut lu);
        assert_eq!(lu.n_dense, 1);
        // Singular: J = I, c = 1.
        let jac = jac_from(2, &[(0, 0, 1.0), (1, 1, 1.0)]);
        let mut lu = SparseLu::new(&jac);
        assert!(!lu.factor(&jac, 1.0));
    }

    #[test]
    fn lu_with_pivoting_solves() {
        // Needs row swaps at every column (small diagonal, large off-diagonal entries).
        let n = 4;
        let m = [
            1e-3, 2.0, 0.0, 1.0, //
            3.0, 1e-4, 1.0, 0.0, //
            0.0, 5.0, 1e-5, 2.0, //
            1.0, 0.0, 4.0, 1e-6,
        ];
        let x = [1.0, -2.0, 3.0, 0.5];
        let mut b: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| m[i * n + j] * x[j]).sum())
            .collect();
        let mut a = m.to_vec();
        let mut piv = vec![0; n];
        assert!(lu_factor(&mut a, n, &mut piv, &mut Vec::new()));
        assert!(piv.iter().enumerate().any(|(c, &p)| p != c));
        lu_solve(&a, n, &piv, &mut b);
        for (got, want) in b.iter().zip(&x) {
            assert!((got - want).abs() < 1e-12, "{b:?}");
        }
    }
}
