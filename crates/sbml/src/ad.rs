//! Analytic Jacobian of the right-hand side by sparse forward differentiation of the register
//! tape (`math::Tape`): every tape instruction whose operands depend on the state gets a
//! gradient with a fixed sparsity pattern (the union of its operands' patterns, computed once
//! when the model is prepared), and evaluating the Jacobian runs the tape once more while
//! accumulating `∂result/∂operand × gradient(operand)` over those patterns (the chain rule of
//! forward-mode automatic differentiation, Griewank & Walther, *Evaluating Derivatives*, 2nd ed.
//! 2008, ch. 3, with static sparsity). Subexpressions of parameters only carry no gradient and
//! cost nothing; a mass-action network's Jacobian costs a few right-hand sides instead of one
//! per column group.
//!
//! Piecewise expressions are differentiated branch-wise: the gradient follows the branch
//! taken, and the value's gradient at the join is kept in one storage with the union of the
//! branches' patterns (each incoming branch scatters its gradient there).
//!
//! Not differentiated (the caller falls back to finite differences): operators without a derivative rule here applied to state-dependent operands
//! (e.g. `rem`, `factorial`, inverse trigonometric functions), state-dependent bases of `log`
//! or degrees of `root`, and models whose derivative pattern is not inside the structural
//! pattern of [`Jacobian`].

use crate::math::{apply, Code, Op, RIns, Tape};
use crate::model::{Deriv, SbmlModel, Stoich};
use crate::sparse::Jacobian;

/// Gradient of one tape instruction: output storage and its operands' contributions.
#[derive(Debug, Clone, Copy)]
struct GOp {
    /// Offset and length of the output gradient in the gradient storage.
    out: u32,
    len: u32,
    /// Range of this instruction's sources in `srcs`.
    src_start: u32,
    src_end: u32,
}

/// One operand's contribution: which operand (0, 1, … of the instruction), its gradient's
/// offset and length, and where its entries go in the output (`maps[map..map + len]`).
#[derive(Debug, Clone, Copy)]
struct Src {
    which: u32,
    off: u32,
    len: u32,
    map: u32,
}

/// At a piecewise join: copy gradient `src` (None: zero) into the join's storage `dst`.
#[derive(Debug, Clone, Copy)]
struct JoinOp {
    dst: u32,
    dst_len: u32,
    /// (offset, length, map start) of the incoming gradient.
    src: Option<(u32, u32, u32)>,
}

/// A contribution to row `i` of the Jacobian: `coef · gradient(node)` scattered into `J.val`
/// at `maps[map..map + len]`, with `coef = c · v[r1] · v[r2]` (absent registers count as 1).
#[derive(Debug, Clone, Copy)]
struct RowTerm {
    c: f64,
    r1: Option<u32>,
    r2: Option<u32>,
    off: u32,
    len: u32,
    map: u32,
}

/// Gradients arriving at a piecewise join: (instruction after which the copy runs, node).
type Incoming = Vec<(usize, Option<usize>)>;

/// Sparse-pattern node at build time.
#[derive(Debug, Clone)]
struct Node {
    off: u32,
    pat: Vec<u32>,
}

/// The analytic Jacobian program of a model (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct AnalyticJac {
    tape: Tape,
    /// Slots of the model plus one per rate-rule output.
    n_regs_slots: usize,
    /// Per tape instruction: its gradient operation (None: constant w.r.t. the state).
    gops: Vec<Option<GOp>>,
    srcs: Vec<Src>,
    maps: Vec<u32>,
    /// Join copies run after instruction `k`: `joins[join_ptr[k]..join_ptr[k + 1]]`.
    joins: Vec<JoinOp>,
    join_ptr: Vec<u32>,
    terms: Vec<RowTerm>,
    /// Gradient storage (entries of unit gradients of the states stay 1).
    g: Vec<f64>,
    regs: Vec<f64>,
    pbuf: Vec<f64>,
}

/// Run the join copies attached to instruction `k`.
fn join_copies(joins: &[JoinOp], join_ptr: &[u32], maps: &[u32], g: &mut [f64], k: usize) {
    let (a, b) = (join_ptr[k] as usize, join_ptr[k + 1] as usize);
    for j in &joins[a..b] {
        let dst = j.dst as usize;
        g[dst..dst + j.dst_len as usize]
            .iter_mut()
            .for_each(|x| *x = 0.0);
        if let Some((off, len, map)) = j.src {
            for e in 0..len as usize {
                let pos = maps[map as usize + e] as usize;
                g[dst + pos] = g[off as usize + e];
            }
        }
    }
}

fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let x = if j >= b.len() || (i < a.len() && a[i] < b[j]) {
            i += 1;
            a[i - 1]
        } else if i >= a.len() || b[j] < a[i] {
            j += 1;
            b[j - 1]
        } else {
            i += 1;
            j += 1;
            a[i - 1]
        };
        out.push(x);
    }
    out
}

/// Whether operator `op` (as a tape `Un`/`Gen` instruction) has a derivative rule here; the
/// relational and logical operators (piecewise-constant) have derivative zero.
fn zero_derivative(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        Eq | Neq | Gt | Lt | Geq | Leq | And | Or | Xor | Not | Implies | Floor | Ceiling
    )
}

#[allow(clippy::type_complexity)]
impl AnalyticJac {
    /// Build for model `m` with Jacobian structure `jac`; None when some construct is not
    /// differentiated (see the module docs).
    pub(crate) fn new(m: &SbmlModel, jac: &Jacobian) -> Option<AnalyticJac> {
        if !m.alg_vars.is_empty() || !m.delays.is_empty() {
            return None;
        }
        let n_slots = m.slots.len();
        // Rate-rule outputs are extra registers after the slots.
        let mut prog: Vec<(usize, Code)> = m.derived.clone();
        let mut rule_reg: Vec<Option<usize>> = vec![None; m.derivs.len()];
        let mut k = n_slots;
        for (i, d) in m.derivs.iter().enumerate() {
            if let Deriv::Rule(c) = d {
                prog.push((k, c.clone()));
                rule_reg[i] = Some(k);
                k += 1;
            }
        }
        let n_regs_slots = k;
        let tape = Tape::build(&prog, n_regs_slots)?;
        let n_regs = n_regs_slots + tape.extra.len();
        let mut node_of: Vec<Option<usize>> = vec![None; n_regs];
        let mut nodes: Vec<Node> = Vec::new();
        let mut g_len = 0u32;
        let mut init_ones = Vec::new();
        for (i, &s) in m.state_slots.iter().enumerate() {
            nodes.push(Node {
                off: g_len,
                pat: vec![i as u32],
            });
            init_ones.push(g_len);
            g_len += 1;
            node_of[s] = Some(nodes.len() - 1);
        }
        let mut gops = Vec::with_capacity(tape.ins.len());
        let mut srcs = Vec::new();
        let mut maps = Vec::new();
        const MAX_G: u32 = 20_000_000;
        // Jump targets (end of piecewise) with their join register and incoming gradients:
        // (instruction after which the copy runs, node).
        let mut incoming: std::collections::HashMap<u32, (u32, Incoming)> =
            std::collections::HashMap::new();
        let mut join_list: Vec<(usize, JoinOp)> = Vec::new();
        for (k, ins) in tape.ins.iter().enumerate() {
            if let Some((jreg, inc)) = incoming.remove(&(k as u32)) {
                // Fall-through from the previous instruction (the last piece's value).
                let mut inc = inc;
                if k > 0 && !matches!(tape.ins[k - 1], RIns::Jmp(..)) {
                    inc.push((k - 1, node_of[jreg as usize]));
                }
                let mut pat: Vec<u32> = Vec::new();
                for (_, nd) in &inc {
                    if let Some(nd) = nd {
                        pat = union(&pat, &nodes[*nd].pat);
                    }
                }
                if pat.is_empty() {
                    node_of[jreg as usize] = None;
                } else {
                    let off = g_len;
                    g_len = g_len.checked_add(pat.len() as u32)?;
                    for (after, nd) in inc {
                        let src = match nd {
                            Some(nd) => {
                                let map = maps.len() as u32;
                                for x in &nodes[nd].pat {
                                    maps.push(pat.binary_search(x).ok()? as u32);
                                }
                                Some((nodes[nd].off, nodes[nd].pat.len() as u32, map))
                            }
                            None => None,
                        };
                        join_list.push((
                            after,
                            JoinOp {
                                dst: off,
                                dst_len: pat.len() as u32,
                                src,
                            },
                        ));
                    }
                    nodes.push(Node { off, pat });
                    node_of[jreg as usize] = Some(nodes.len() - 1);
                }
            }
            let (dst, operands): (u32, Vec<u32>) = match *ins {
                RIns::Jz(..) => {
                    gops.push(None);
                    continue;
                }
                RIns::Jmp(tg, j) => {
                    let e = incoming.entry(tg).or_insert((j, Vec::new()));
                    if e.0 != j {
                        return None;
                    }
                    e.1.push((k, node_of[j as usize]));
                    gops.push(None);
                    continue;
                }
                RIns::Copy(d, a) => {
                    node_of[d as usize] = node_of[a as usize];
                    gops.push(None);
                    continue;
                }
                RIns::Add(d, a, b)
                | RIns::Sub(d, a, b)
                | RIns::Mul(d, a, b)
                | RIns::Div(d, a, b)
                | RIns::Pow(d, a, b) => (d, vec![a, b]),
                RIns::Add3(d, a, b, c) | RIns::Mul3(d, a, b, c) => (d, vec![a, b, c]),
                RIns::Neg(d, a) => (d, vec![a]),
                RIns::Un(op, d, a) => {
                    if zero_derivative(op) {
                        node_of[d as usize] = None;
                        gops.push(None);
                        continue;
                    }
                    (d, vec![a])
                }
                RIns::Gen(op, d, s, n) => {
                    let args = tape.args[s as usize..(s + n) as usize].to_vec();
                    if zero_derivative(op) {
                        node_of[d as usize] = None;
                        gops.push(None);
                        continue;
                    }
                    let has = |r: u32| node_of[r as usize].is_some();
                    let ok = match op {
                        Op::Max | Op::Min => true,
                        Op::Root | Op::Log => args.len() == 2 && !has(args[0]),
                        _ => !args.iter().any(|&r| has(r)),
                    };
                    if !ok {
                        return None;
                    }
                    (d, args)
                }
            };
            let with: Vec<(usize, usize)> = operands
                .iter()
                .enumerate()
                .filter_map(|(w, &r)| node_of[r as usize].map(|nd| (w, nd)))
                .collect();
            if with.is_empty() {
                node_of[dst as usize] = None;
                gops.push(None);
                continue;
            }
            if let RIns::Un(op, ..) = ins {
                use Op::*;
                if !matches!(op, Exp | Ln | Abs | Sin | Cos | Tan | Sinh | Cosh | Tanh) {
                    return None;
                }
            }
            let mut pat: Vec<u32> = Vec::new();
            for &(_, nd) in &with {
                pat = union(&pat, &nodes[nd].pat);
            }
            let out = g_len;
            g_len = g_len.checked_add(pat.len() as u32)?;
            if g_len > MAX_G {
                return None;
            }
            let src_start = srcs.len() as u32;
            for &(w, nd) in &with {
                let map = maps.len() as u32;
                for x in &nodes[nd].pat {
                    maps.push(pat.binary_search(x).ok()? as u32);
                }
                srcs.push(Src {
                    which: w as u32,
                    off: nodes[nd].off,
                    len: nodes[nd].pat.len() as u32,
                    map,
                });
            }
            gops.push(Some(GOp {
                out,
                len: pat.len() as u32,
                src_start,
                src_end: srcs.len() as u32,
            }));
            nodes.push(Node { off: out, pat });
            node_of[dst as usize] = Some(nodes.len() - 1);
        }
        if !incoming.is_empty() {
            return None; // a jump past the end of the tape (not produced by the builder)
        }
        join_list.sort_by_key(|(k, _)| *k);
        let mut join_ptr = vec![0u32; tape.ins.len() + 1];
        let mut joins = Vec::with_capacity(join_list.len());
        for (k, j) in &join_list {
            join_ptr[k + 1] += 1;
            joins.push(*j);
        }
        for k in 0..tape.ins.len() {
            join_ptr[k + 1] += join_ptr[k];
        }
        // Rows of the Jacobian.
        let mut terms = Vec::new();
        // (row, c, r1, r2, node): coefficient c·v[r1]·v[r2] times the node's gradient.
        let mut row_terms: Vec<(usize, f64, Option<u32>, Option<u32>, usize)> = Vec::new();
        for (i, d) in m.derivs.iter().enumerate() {
            match d {
                Deriv::Zero => {}
                Deriv::Rule(_) => {
                    if let Some(nd) = rule_reg[i].and_then(|r| node_of[r]) {
                        row_terms.push((i, 1.0, None, None, nd));
                    }
                }
                Deriv::Reactions(ts) => {
                    for t in ts {
                        let f = t.flux as u32;
                        let fac = t.factor.map(|x| x as u32);
                        let (c, q) = match t.stoich {
                            Stoich::Const(c) => (c, None),
                            Stoich::Slot(q, sign) => (sign, Some(q as u32)),
                        };
                        // d(c·q·f·F) = c·q·F·df + c·q·f·dF + c·f·F·dq
                        if let Some(nd) = node_of[t.flux] {
                            row_terms.push((i, c, q, fac, nd));
                        }
                        if let Some(nd) = fac.and_then(|x| node_of[x as usize]) {
                            row_terms.push((i, c, q, Some(f), nd));
                        }
                        if let Some(nd) = q.and_then(|x| node_of[x as usize]) {
                            row_terms.push((i, c, Some(f), fac, nd));
                        }
                    }
                }
            }
        }
        for (i, c, r1, r2, nd) in row_terms {
            let map = maps.len() as u32;
            let row = &jac.col[jac.ptr[i]..jac.ptr[i + 1]];
            for &x in &nodes[nd].pat {
                let k = row.binary_search(&(x as usize)).ok()?;
                maps.push((jac.ptr[i] + k) as u32);
            }
            terms.push(RowTerm {
                c,
                r1,
                r2,
                off: nodes[nd].off,
                len: nodes[nd].pat.len() as u32,
                map,
            });
        }
        let mut g = vec![0.0; g_len as usize];
        for o in init_ones {
            g[o as usize] = 1.0;
        }
        Some(AnalyticJac {
            tape,
            n_regs_slots,
            gops,
            srcs,
            maps,
            joins,
            join_ptr,
            terms,
            g,
            regs: Vec::new(),
            pbuf: Vec::new(),
        })
    }

    /// Evaluate ∂f/∂x at (t, y) into `jac.val` (its structural pattern).
    pub(crate) fn eval(&mut self, m: &SbmlModel, t: f64, y: &[f64], jac: &mut Jacobian) {
        let regs = &mut self.regs;
        regs.clear();
        regs.extend_from_slice(&m.base);
        regs.resize(self.n_regs_slots, 0.0);
        for (i, &s) in m.state_slots.iter().enumerate() {
            regs[s] = y[i];
        }
        regs.extend_from_slice(&self.tape.extra);
        regs[self.n_regs_slots] = t;
        let r = regs.as_mut_slice();
        let g = self.g.as_mut_slice();
        let tape = &self.tape;
        let mut pc = 0usize;
        while pc < tape.ins.len() {
            let (ins, gop) = (&tape.ins[pc], &self.gops[pc]);
            // Value and partial derivatives with respect to the operands.
            let p = &mut self.pbuf;
            p.clear();
            let (dst, v) = match *ins {
                RIns::Add(d, a, b) => {
                    p.extend([1.0, 1.0]);
                    (d, r[a as usize] + r[b as usize])
                }
                RIns::Add3(d, a, b, c) => {
                    p.extend([1.0, 1.0, 1.0]);
                    (d, r[a as usize] + r[b as usize] + r[c as usize])
                }
                RIns::Mul3(d, a, b, c) => {
                    let (x, y, z) = (r[a as usize], r[b as usize], r[c as usize]);
                    p.extend([y * z, x * z, x * y]);
                    (d, x * y * z)
                }
                RIns::Sub(d, a, b) => {
                    p.extend([1.0, -1.0]);
                    (d, r[a as usize] - r[b as usize])
                }
                RIns::Mul(d, a, b) => {
                    let (x, z) = (r[a as usize], r[b as usize]);
                    p.extend([z, x]);
                    (d, x * z)
                }
                RIns::Div(d, a, b) => {
                    let (x, z) = (r[a as usize], r[b as usize]);
                    let v = x / z;
                    p.extend([1.0 / z, -v / z]);
                    (d, v)
                }
                RIns::Pow(d, a, b) => {
                    let (x, z) = (r[a as usize], r[b as usize]);
                    let v = x.powf(z);
                    if gop.is_some() {
                        let dx = if z == 0.0 { 0.0 } else { z * x.powf(z - 1.0) };
                        p.extend([dx, v * x.ln()]);
                    }
                    (d, v)
                }
                RIns::Neg(d, a) => {
                    p.push(-1.0);
                    (d, -r[a as usize])
                }
                RIns::Copy(d, a) => (d, r[a as usize]),
                RIns::Un(op, d, a) => {
                    let x = r[a as usize];
                    let v = apply(op, &[x]);
                    if gop.is_some() {
                        p.push(match op {
                            Op::Exp => v,
                            Op::Ln => 1.0 / x,
                            Op::Abs => x.signum(),
                            Op::Sin => x.cos(),
                            Op::Cos => -x.sin(),
                            Op::Tan => 1.0 + v * v,
                            Op::Sinh => x.cosh(),
                            Op::Cosh => x.sinh(),
                            Op::Tanh => 1.0 - v * v,
                            _ => 0.0,
                        });
                    }
                    (d, v)
                }
                RIns::Gen(op, d, s, n) => {
                    let args = &tape.args[s as usize..(s + n) as usize];
                    p.extend(args.iter().map(|&x| r[x as usize]));
                    let v = apply(op, p);
                    if gop.is_some() {
                        match op {
                            Op::Max | Op::Min => {
                                let k = p.iter().position(|&x| x == v).unwrap_or(0);
                                p.iter_mut().for_each(|x| *x = 0.0);
                                if let Some(x) = p.get_mut(k) {
                                    *x = 1.0;
                                }
                            }
                            Op::Root => {
                                // [degree, value]: d/dv v^(1/deg) = v^(1/deg) / (deg · v)
                                let (dg, x) = (p[0], p[1]);
                                p[0] = 0.0;
                                p[1] = v / (dg * x);
                            }
                            Op::Log => {
                                // [base, value]: 1 / (v ln base)
                                let (b, x) = (p[0], p[1]);
                                p[0] = 0.0;
                                p[1] = 1.0 / (x * b.ln());
                            }
                            _ => p.iter_mut().for_each(|x| *x = 0.0),
                        }
                    }
                    (d, v)
                }
                RIns::Jz(c, tg) => {
                    if r[c as usize] == 0.0 {
                        pc = tg as usize;
                    } else {
                        pc += 1;
                    }
                    continue;
                }
                RIns::Jmp(tg, _) => {
                    join_copies(&self.joins, &self.join_ptr, &self.maps, g, pc);
                    pc = tg as usize;
                    continue;
                }
            };
            if let Some(go) = gop {
                let out = go.out as usize;
                g[out..out + go.len as usize]
                    .iter_mut()
                    .for_each(|x| *x = 0.0);
                for s in &self.srcs[go.src_start as usize..go.src_end as usize] {
                    let pk = p[s.which as usize];
                    if pk == 0.0 {
                        continue;
                    }
                    let map = &self.maps[s.map as usize..(s.map + s.len) as usize];
                    for (e, &pos) in map.iter().enumerate() {
                        g[out + pos as usize] += pk * g[s.off as usize + e];
                    }
                }
            }
            r[dst as usize] = v;
            join_copies(&self.joins, &self.join_ptr, &self.maps, g, pc);
            pc += 1;
        }
        let r = self.regs.as_slice();
        let g = self.g.as_slice();
        jac.val.iter_mut().for_each(|x| *x = 0.0);
        for t in &self.terms {
            let mut c = t.c;
            if let Some(a) = t.r1 {
                c *= r[a as usize];
            }
            if let Some(b) = t.r2 {
                c *= r[b as usize];
            }
            if c == 0.0 {
                continue;
            }
            let map = &self.maps[t.map as usize..(t.map + t.len) as usize];
            for (e, &pos) in map.iter().enumerate() {
                jac.val[pos as usize] += c * g[t.off as usize + e];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Analytic vs finite-difference Jacobian of `m` at a state perturbed away from the initial
    /// one; returns whether the analytic Jacobian was built, and the worst scaled difference.
    fn compare(m: &SbmlModel, t: f64) -> Option<f64> {
        let mut jac = crate::sparse::model_pattern(m);
        let mut ad = AnalyticJac::new(m, &jac)?;
        let n = m.state_slots.len();
        let y: Vec<f64> = m
            .initial_state()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v * (1.0 + 0.1 * ((i % 7) as f64 - 3.0) / 3.0) + 0.05 * (1 + i % 3) as f64
            })
            .collect();
        ad.eval(m, t, &y, &mut jac);
        let analytic = jac.val.clone();
        let (mut vals, mut stack) = (Vec::new(), Vec::new());
        let mut f0 = vec![0.0; n];
        m.fill(t, &y, &mut vals, &mut stack);
        m.derivs_from(t, &vals, &mut f0, &mut stack);
        let mut rhs = |t: f64, y: &[f64], out: &mut [f64]| {
            m.fill(t, y, &mut vals, &mut stack);
            m.derivs_from(t, &vals, out, &mut stack);
        };
        // Central differences for a tighter reference (O(δ²) truncation error).
        let mut fd = vec![0.0; analytic.len()];
        // Round-off of each central difference: ε·|f| / δ.
        let mut roundoff = vec![0.0; analytic.len()];
        let mut yp = y.clone();
        let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
        for j in 0..n {
            let d = 1e-5 * y[j].abs().max(1e-3);
            yp[j] = y[j] + d;
            rhs(t, &yp, &mut fp);
            yp[j] = y[j] - d;
            rhs(t, &yp, &mut fm);
            yp[j] = y[j];
            for i in 0..n {
                if let Ok(k) = jac.col[jac.ptr[i]..jac.ptr[i + 1]].binary_search(&j) {
                    fd[jac.ptr[i] + k] = (fp[i] - fm[i]) / (2.0 * d);
                    roundoff[jac.ptr[i] + k] = f64::EPSILON * fp[i].abs().max(fm[i].abs()) / d;
                }
            }
        }
        let mut worst = 0.0f64;
        for i in 0..n {
            let row = jac.ptr[i]..jac.ptr[i + 1];
            let scale = row
                .clone()
                .map(|k| analytic[k].abs().max(fd[k].abs()))
                .fold(0.0, f64::max)
                .max(1e-300);
            for k in row {
                if !(analytic[k].is_finite() && fd[k].is_finite()) {
                    continue;
                }
                // Scaled difference beyond 100× the finite differences' round-off.
                let excess = ((analytic[k] - fd[k]).abs() - 100.0 * roundoff[k]).max(0.0);
                worst = worst.max(excess / scale);
            }
        }
        Some(worst)
    }

    #[test]
    fn analytic_jacobian_matches_finite_differences_on_suite_models() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/sbml-test-suite/semantic");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("SBML test suite not found at {}: skipped", dir.display());
            return;
        };
        let (mut built, mut bad) = (0, Vec::new());
        for e in entries.flatten() {
            let case = e.file_name().to_string_lossy().to_string();
            let f = e.path().join(format!("{case}-sbml-l3v2.xml"));
            let Ok(m) = crate::load_sbml(&f) else {
                continue;
            };
            if let Some(w) = compare(&m, 0.3) {
                built += 1;
                if w > 1e-5 {
                    bad.push((case, w));
                }
            }
        }
        assert!(
            built > 1000,
            "analytic Jacobian built for only {built} models"
        );
        assert!(
            bad.is_empty(),
            "{} models differ: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }

    #[test]
    fn analytic_jacobian_matches_finite_differences_on_petab_models() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/petab-benchmarks/Benchmark-Models");
        for name in [
            "Boehm_JProteomeRes2014",
            "Bachmann_MSB2011",
            "Lucarelli_CellSystems2018",
            "Smith_BMCSystBiol2013",
            "Chen_MSB2009",
        ] {
            let f = dir.join(name).join(format!("model_{name}.xml"));
            if !f.exists() {
                eprintln!("{} not found: skipped", f.display());
                continue;
            }
            let m = crate::load_sbml(&f).unwrap();
            let w = compare(&m, 1.0).unwrap_or_else(|| panic!("{name}: no analytic Jacobian"));
            assert!(w < 1e-5, "{name}: worst scaled difference {w}");
        }
    }
}
