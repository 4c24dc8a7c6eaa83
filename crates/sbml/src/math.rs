//! MathML subset of SBML (SBML L3V2 §3.4, MathML 2.0 content markup): parse to an AST,
//! resolve identifiers to value slots, and compile to a flat stack-machine bytecode.
//!
//! Booleans are represented as `1.0` (true) and `0.0` (false); any non-zero value is true.

use crate::SbmlError;
use roxmltree::Node;
use std::collections::{HashMap, HashSet};

/// Operators of `<apply>` (and the constants/csymbols that behave like nullary operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Plus,
    Minus,
    Times,
    Divide,
    Power,
    Root,
    Abs,
    Exp,
    Ln,
    Log,
    Floor,
    Ceiling,
    Factorial,
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Sinh,
    Cosh,
    Tanh,
    Sech,
    Csch,
    Coth,
    ArcSin,
    ArcCos,
    ArcTan,
    ArcSec,
    ArcCsc,
    ArcCot,
    ArcSinh,
    ArcCosh,
    ArcTanh,
    ArcSech,
    ArcCsch,
    ArcCoth,
    Eq,
    Neq,
    Gt,
    Lt,
    Geq,
    Leq,
    And,
    Or,
    Xor,
    Not,
    Implies,
    Max,
    Min,
    Rem,
    Quotient,
}

impl Op {
    fn from_name(n: &str) -> Option<Op> {
        use Op::*;
        Some(match n {
            "plus" => Plus,
            "minus" => Minus,
            "times" => Times,
            "divide" => Divide,
            "power" => Power,
            "root" => Root,
            "abs" => Abs,
            "exp" => Exp,
            "ln" => Ln,
            "log" => Log,
            "floor" => Floor,
            "ceiling" => Ceiling,
            "factorial" => Factorial,
            "sin" => Sin,
            "cos" => Cos,
            "tan" => Tan,
            "sec" => Sec,
            "csc" => Csc,
            "cot" => Cot,
            "sinh" => Sinh,
            "cosh" => Cosh,
            "tanh" => Tanh,
            "sech" => Sech,
            "csch" => Csch,
            "coth" => Coth,
            "arcsin" => ArcSin,
            "arccos" => ArcCos,
            "arctan" => ArcTan,
            "arcsec" => ArcSec,
            "arccsc" => ArcCsc,
            "arccot" => ArcCot,
            "arcsinh" => ArcSinh,
            "arccosh" => ArcCosh,
            "arctanh" => ArcTanh,
            "arcsech" => ArcSech,
            "arccsch" => ArcCsch,
            "arccoth" => ArcCoth,
            "eq" => Eq,
            "neq" => Neq,
            "gt" => Gt,
            "lt" => Lt,
            "geq" => Geq,
            "leq" => Leq,
            "and" => And,
            "or" => Or,
            "xor" => Xor,
            "not" => Not,
            "implies" => Implies,
            "max" => Max,
            "min" => Min,
            "rem" => Rem,
            "quotient" => Quotient,
            _ => return None,
        })
    }
}

/// Parsed MathML expression with identifiers still as names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Num(f64),
    Sym(String),
    Time,
    Avogadro,
    Apply(Op, Vec<Expr>),
    Call(String, Vec<Expr>),
    Piecewise(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    Delay(Box<Expr>, Box<Expr>),
    RateOf(Box<Expr>),
}

/// Avogadro's number as fixed by SBML L3 (CODATA 2006 value, SBML L3V1 §3.4.6).
pub(crate) const AVOGADRO: f64 = 6.022_141_79e23;

fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

fn text_of(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn parse_num(s: &str, ctx: &str) -> Result<f64, SbmlError> {
    let t = s.trim();
    let v = match t {
        "INF" | "inf" | "Infinity" | "infinity" => f64::INFINITY,
        "-INF" | "-inf" | "-Infinity" | "-infinity" => f64::NEG_INFINITY,
        "NaN" | "nan" => f64::NAN,
        _ => t
            .parse::<f64>()
            .map_err(|_| SbmlError::Invalid(format!("bad number '{t}' in {ctx}")))?,
    };
    Ok(v)
}

/// Parse the content of a `<math>` element (its first element child).
pub(crate) fn parse_math(math: Node, ctx: &str) -> Result<Option<Expr>, SbmlError> {
    match elements(math).next() {
        None => Ok(None),
        Some(n) => parse_node(n, ctx).map(Some),
    }
}

/// Parse a `<lambda>` of a function definition: bound variable names and body.
pub(crate) fn parse_lambda(
    math: Node,
    ctx: &str,
) -> Result<Option<(Vec<String>, Expr)>, SbmlError> {
    let mut lam = match elements(math).next() {
        None => return Ok(None),
        Some(n) => n,
    };
    while lam.tag_name().name() == "semantics" {
        lam = match elements(lam).next() {
            Some(n) => n,
            None => return Ok(None),
        };
    }
    if lam.tag_name().name() != "lambda" {
        return Err(SbmlError::Invalid(format!(
            "{ctx}: function definition without <lambda>"
        )));
    }
    let mut args = Vec::new();
    let mut body = None;
    for c in elements(lam) {
        if c.tag_name().name() == "bvar" {
            let ci = elements(c)
                .next()
                .ok_or_else(|| SbmlError::Invalid(format!("{ctx}: empty bvar")))?;
            args.push(text_of(ci));
        } else {
            body = Some(parse_node(c, ctx)?);
        }
    }
    match body {
        Some(b) => Ok(Some((args, b))),
        None => Ok(None),
    }
}

fn parse_node(n: Node, ctx: &str) -> Result<Expr, SbmlError> {
    let name = n.tag_name().name();
    match name {
        "cn" => {
            let ty = n.attribute("type").unwrap_or("real");
            let parts: Vec<String> = n
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            match ty {
                "e-notation" | "rational" if parts.len() == 2 => {
                    let a = parse_num(&parts[0], ctx)?;
                    let b = parse_num(&parts[1], ctx)?;
                    Ok(Expr::Num(if ty == "rational" {
                        a / b
                    } else {
                        a * 10f64.powf(b)
                    }))
                }
                _ => Ok(Expr::Num(parse_num(&parts.join(""), ctx)?)),
            }
        }
        "ci" => Ok(Expr::Sym(text_of(n))),
        "true" => Ok(Expr::Num(1.0)),
        "false" => Ok(Expr::Num(0.0)),
        "pi" => Ok(Expr::Num(std::f64::consts::PI)),
        "exponentiale" => Ok(Expr::Num(std::f64::consts::E)),
        "notanumber" => Ok(Expr::Num(f64::NAN)),
        "infinity" => Ok(Expr::Num(f64::INFINITY)),
        "csymbol" => {
            let url = n.attribute("definitionURL").unwrap_or("");
            if url.ends_with("/time") {
                Ok(Expr::Time)
            } else if url.ends_with("/avogadro") {
                Ok(Expr::Avogadro)
            } else {
                Err(SbmlError::Unsupported(format!(
                    "csymbol '{url}' used as a value in {ctx}"
                )))
            }
        }
        "semantics" => {
            let c = elements(n)
                .next()
                .ok_or_else(|| SbmlError::Invalid(format!("{ctx}: empty semantics")))?;
            parse_node(c, ctx)
        }
        "piecewise" => {
            let mut pieces = Vec::new();
            let mut other = None;
            for c in elements(n) {
                match c.tag_name().name() {
                    "piece" => {
                        let ch: Vec<Node> = elements(c).collect();
                        if ch.len() != 2 {
                            return Err(SbmlError::Invalid(format!(
                                "{ctx}: <piece> needs 2 children"
                            )));
                        }
                        pieces.push((parse_node(ch[0], ctx)?, parse_node(ch[1], ctx)?));
                    }
                    "otherwise" => {
                        let c0 = elements(c)
                            .next()
                            .ok_or_else(|| SbmlError::Invalid(format!("{ctx}: empty otherwise")))?;
                        other = Some(Box::new(parse_node(c0, ctx)?));
                    }
                    t => {
                        return Err(SbmlError::Unsupported(format!(
                            "MathML <{t}> inside piecewise in {ctx}"
                        )))
                    }
                }
            }
            Ok(Expr::Piecewise(pieces, other))
        }
        "apply" => {
            let mut it = elements(n);
            let head = it
                .next()
                .ok_or_else(|| SbmlError::Invalid(format!("{ctx}: empty <apply>")))?;
            let mut args = Vec::new();
            let mut qual: Option<Expr> = None;
            for c in it {
                match c.tag_name().name() {
                    "degree" | "logbase" => {
                        let q = elements(c)
                            .next()
                            .ok_or_else(|| SbmlError::Invalid(format!("{ctx}: empty qualifier")))?;
                        qual = Some(parse_node(q, ctx)?);
                    }
                    "bvar" => {
                        return Err(SbmlError::Unsupported(format!(
                            "MathML <bvar> outside lambda in {ctx}"
                        )))
                    }
                    _ => args.push(parse_node(c, ctx)?),
                }
            }
            let hname = head.tag_name().name();
            match hname {
                "ci" => Ok(Expr::Call(text_of(head), args)),
                "csymbol" => {
                    let url = head.attribute("definitionURL").unwrap_or("");
                    if url.ends_with("/delay") && args.len() == 2 {
                        let mut a = args.into_iter();
                        let x = a.next().unwrap_or(Expr::Num(0.0));
                        let d = a.next().unwrap_or(Expr::Num(0.0));
                        Ok(Expr::Delay(Box::new(x), Box::new(d)))
                    } else if url.ends_with("/rateOf") && args.len() == 1 {
                        Ok(Expr::RateOf(Box::new(
                            args.into_iter().next().unwrap_or(Expr::Num(0.0)),
                        )))
                    } else {
                        Err(SbmlError::Unsupported(format!(
                            "csymbol function '{url}' in {ctx}"
                        )))
                    }
                }
                _ => {
                    let op = Op::from_name(hname).ok_or_else(|| {
                        SbmlError::Unsupported(format!("MathML operator <{hname}> in {ctx}"))
                    })?;
                    match (op, qual) {
                        (Op::Root, q) => {
                            let deg = q.unwrap_or(Expr::Num(2.0));
                            let mut v = vec![deg];
                            v.extend(args);
                            Ok(Expr::Apply(Op::Root, v))
                        }
                        (Op::Log, q) => {
                            let base = q.unwrap_or(Expr::Num(10.0));
                            let mut v = vec![base];
                            v.extend(args);
                            Ok(Expr::Apply(Op::Log, v))
                        }
                        (_, Some(_)) => Err(SbmlError::Unsupported(format!(
                            "qualifier on MathML operator <{hname}> in {ctx}"
                        ))),
                        (op, None) => Ok(Expr::Apply(op, args)),
                    }
                }
            }
        }
        t => Err(SbmlError::Unsupported(format!(
            "MathML element <{t}> in {ctx}"
        ))),
    }
}

/// Expression with identifiers resolved to slots of the value vector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RExpr {
    Num(f64),
    Slot(usize),
    Time,
    Apply(Op, Vec<RExpr>),
    Piecewise(Vec<(RExpr, RExpr)>, Option<Box<RExpr>>),
    /// `delay(x, d)`: number `k` of the model's delayed expressions, `x`, and the delay `d`.
    Delay(usize, Box<RExpr>, Box<RExpr>),
    /// `rateOf(..)`, already expanded to the rate expression (zero before the start).
    RateOf(Box<RExpr>),
}

impl RExpr {
    /// Slots read at the current time by this expression (with repetitions); a delayed
    /// expression reads only its delay at the current time.
    pub(crate) fn deps(&self, out: &mut Vec<usize>) {
        match self {
            RExpr::Slot(s) => out.push(*s),
            RExpr::Delay(_, _, d) => d.deps(out),
            RExpr::RateOf(e) => e.deps(out),
            RExpr::Apply(_, a) => a.iter().for_each(|e| e.deps(out)),
            RExpr::Piecewise(p, o) => {
                for (v, c) in p {
                    v.deps(out);
                    c.deps(out);
                }
                if let Some(o) = o {
                    o.deps(out);
                }
            }
            _ => {}
        }
    }
}

impl RExpr {
    /// Replace `time` by `time - d`.
    fn shift_time(&self, d: &RExpr) -> RExpr {
        match self {
            RExpr::Time => RExpr::Apply(Op::Minus, vec![RExpr::Time, d.clone()]),
            RExpr::Apply(op, a) => RExpr::Apply(*op, a.iter().map(|x| x.shift_time(d)).collect()),
            RExpr::Piecewise(p, o) => RExpr::Piecewise(
                p.iter()
                    .map(|(v, c)| (v.shift_time(d), c.shift_time(d)))
                    .collect(),
                o.as_ref().map(|o| Box::new(o.shift_time(d))),
            ),
            RExpr::Delay(k, x, dd) => {
                RExpr::Delay(*k, Box::new(x.shift_time(d)), Box::new(dd.shift_time(d)))
            }
            RExpr::RateOf(e) => RExpr::RateOf(Box::new(e.shift_time(d))),
            e => e.clone(),
        }
    }

    /// The expression as evaluated at the initial time: `delay(x, d)` reads the history before
    /// the start, i.e. [`RExpr::before_start`] of `x` with `time` replaced by `time - d`.
    pub(crate) fn at_initial_time(&self, init: &HashMap<usize, RExpr>) -> RExpr {
        match self {
            RExpr::Apply(op, a) => {
                RExpr::Apply(*op, a.iter().map(|x| x.at_initial_time(init)).collect())
            }
            RExpr::Piecewise(p, o) => RExpr::Piecewise(
                p.iter()
                    .map(|(v, c)| (v.at_initial_time(init), c.at_initial_time(init)))
                    .collect(),
                o.as_ref().map(|o| Box::new(o.at_initial_time(init))),
            ),
            RExpr::Delay(_, x, d) => {
                let d = d.at_initial_time(init);
                x.before_start(init, 0).shift_time(&d)
            }
            RExpr::RateOf(e) => RExpr::RateOf(Box::new(e.at_initial_time(init))),
            e => e.clone(),
        }
    }

    /// The expression's value before the simulation start (SBML: the model is at rest in its
    /// initial condition, whose initial assignments may read `time`): every slot with an
    /// initial-value expression in `init` is inlined, rates of change are zero, and nested
    /// delays look further back.
    pub(crate) fn before_start(&self, init: &HashMap<usize, RExpr>, depth: usize) -> RExpr {
        match self {
            RExpr::Slot(s) if depth < 64 => match init.get(s) {
                Some(e) => e.before_start(init, depth + 1),
                None => self.clone(),
            },
            RExpr::Apply(op, a) => {
                RExpr::Apply(*op, a.iter().map(|x| x.before_start(init, depth)).collect())
            }
            RExpr::Piecewise(p, o) => RExpr::Piecewise(
                p.iter()
                    .map(|(v, c)| (v.before_start(init, depth), c.before_start(init, depth)))
                    .collect(),
                o.as_ref().map(|o| Box::new(o.before_start(init, depth))),
            ),
            RExpr::Delay(_, x, d) => {
                let d = d.before_start(init, depth);
                x.before_start(init, depth).shift_time(&d)
            }
            RExpr::RateOf(_) => RExpr::Num(0.0),
            e => e.clone(),
        }
    }

    /// Whether the expression contains `delay()`.
    pub(crate) fn has_delay(&self) -> bool {
        match self {
            RExpr::Delay(..) => true,
            RExpr::RateOf(e) => e.has_delay(),
            RExpr::Apply(_, a) => a.iter().any(|x| x.has_delay()),
            RExpr::Piecewise(p, o) => {
                p.iter().any(|(v, c)| v.has_delay() || c.has_delay())
                    || o.as_ref().is_some_and(|o| o.has_delay())
            }
            _ => false,
        }
    }
}

/// Supplies the value of delayed expression `k` at time `t - d` (the simulation's history).
pub(crate) trait DelayHook {
    fn delayed(&self, k: usize, d: f64, t: f64) -> f64;
}

/// One stack-machine instruction.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ins {
    Const(f64),
    Load(u32),
    Time,
    /// Apply `op` to the top `n` stack entries, replacing them by the result.
    Op(Op, u32),
    /// Pop; jump to target if the popped value is false (0).
    JumpIfFalse(u32),
    Jump(u32),
    /// Pop the delay `d`; push delayed expression `k` at time `t - d`.
    Delay(u32),
}

/// Compiled expression: flattened postfix bytecode evaluated on a value stack.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Code {
    ins: Vec<Ins>,
    max_stack: usize,
}

impl Code {
    pub(crate) fn compile(e: &RExpr) -> Code {
        let mut ins = Vec::new();
        emit(e, &mut ins);
        // Compute the stack depth needed.
        let mut depth: i64 = 0;
        let mut max = 1i64;
        for i in &ins {
            match i {
                Ins::Const(_) | Ins::Load(_) | Ins::Time => depth += 1,
                Ins::Op(_, n) => depth += 1 - *n as i64,
                Ins::JumpIfFalse(_) => depth -= 1,
                Ins::Jump(_) | Ins::Delay(_) => {}
            }
            max = max.max(depth);
        }
        Code {
            ins,
            max_stack: max as usize + 1,
        }
    }

    /// Slots the code loads (with repetitions).
    pub(crate) fn slots(&self, out: &mut Vec<usize>) {
        for i in &self.ins {
            if let Ins::Load(s) = i {
                out.push(*s as usize);
            }
        }
    }

    /// Whether the code reads `time` (or a delayed value).
    pub(crate) fn reads_time(&self) -> bool {
        self.ins
            .iter()
            .any(|i| matches!(i, Ins::Time | Ins::Delay(_)))
    }

    /// Evaluate with slot values `v` at time `t`. `stack` is scratch space (grown as needed).
    pub(crate) fn eval(&self, v: &[f64], t: f64, stack: &mut Vec<f64>) -> f64 {
        self.eval_h(v, t, stack, None)
    }

    /// [`Code::eval`] with a history for `delay()` (without one, delayed values are NaN).
    pub(crate) fn eval_h(
        &self,
        v: &[f64],
        t: f64,
        stack: &mut Vec<f64>,
        hook: Option<&dyn DelayHook>,
    ) -> f64 {
        stack.clear();
        if stack.capacity() < self.max_stack {
            stack.reserve(self.max_stack);
        }
        let mut pc = 0usize;
        let n = self.ins.len();
        while pc < n {
            match self.ins[pc] {
                Ins::Const(c) => stack.push(c),
                Ins::Load(s) => stack.push(v[s as usize]),
                Ins::Time => stack.push(t),
                Ins::Op(op, k) => {
                    let k = k as usize;
                    let base = stack.len() - k;
                    let r = apply(op, &stack[base..]);
                    stack.truncate(base);
                    stack.push(r);
                }
                Ins::JumpIfFalse(tg) => {
                    let c = stack.pop().unwrap_or(0.0);
                    if c == 0.0 {
                        pc = tg as usize;
                        continue;
                    }
                }
                Ins::Jump(tg) => {
                    pc = tg as usize;
                    continue;
                }
                Ins::Delay(k) => {
                    let d = stack.pop().unwrap_or(f64::NAN);
                    stack.push(match hook {
                        Some(h) => h.delayed(k as usize, d, t),
                        None => f64::NAN,
                    });
                }
            }
            pc += 1;
        }
        stack.pop().unwrap_or(f64::NAN)
    }
}

/// One register-machine instruction of a [`Tape`]; operands are register indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RIns {
    Add(u32, u32, u32),
    /// `(a + b) + c`.
    Add3(u32, u32, u32, u32),
    Sub(u32, u32, u32),
    Mul(u32, u32, u32),
    /// `(a · b) · c` (mass-action rate laws).
    Mul3(u32, u32, u32, u32),
    Div(u32, u32, u32),
    Pow(u32, u32, u32),
    Neg(u32, u32),
    Copy(u32, u32),
    /// Unary operator `op` (dst, arg).
    Un(Op, u32, u32),
    /// Any operator on `n` argument registers listed in `Tape::args[start..start + n]`.
    Gen(Op, u32, u32, u32),
    /// Jump to the target if the register is 0 (false).
    Jz(u32, u32),
    /// Jump to the target; the second register is the join register that holds the value of
    /// the piecewise at the target (for the analytic Jacobian).
    Jmp(u32, u32),
}

/// A whole ordered program of [`Code`]s (the derived quantities: assignment rules,
/// concentrations, reaction fluxes) translated into one register-machine tape: no value stack,
/// constants in registers, binary arithmetic specialised, each result written straight into
/// its slot. Register file: the model's slots, then `time`, then constants, then temporaries
/// (one per stack depth of the original bytecode).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tape {
    pub(crate) ins: Vec<RIns>,
    pub(crate) args: Vec<u32>,
    /// Values of the registers after the slots: `time` (placeholder), constants, temporaries.
    pub(crate) extra: Vec<f64>,
    pub(crate) n_slots: usize,
}

impl Tape {
    /// Translate `prog` (slot, code) for a model with `n_slots` slots. None when a code uses
    /// `delay()` (it needs the simulation history).
    pub(crate) fn build(prog: &[(usize, Code)], n_slots: usize) -> Option<Tape> {
        let time_reg = n_slots as u32;
        let mut consts: Vec<f64> = Vec::new();
        let mut const_idx: HashMap<u64, u32> = HashMap::new();
        let max_depth = prog.iter().map(|(_, c)| c.max_stack).max().unwrap_or(1) + 1;
        // Constants are placed after time; temporaries after the constants (fixed at the end).
        let mut ins: Vec<RIns> = Vec::new();
        let mut args: Vec<u32> = Vec::new();
        // Temporaries are numbered provisionally as u32::MAX - depth and relocated at the end.
        let tmp = |d: usize| u32::MAX - d as u32;
        for (sl, code) in prog {
            let code_start = ins.len();
            let mut st: Vec<u32> = Vec::new();
            // Map from bytecode index to tape index (for jump targets), patched afterwards.
            let mut at: Vec<u32> = vec![0; code.ins.len() + 1];
            let mut fix: Vec<(usize, usize)> = Vec::new();
            let targets: HashSet<usize> = code
                .ins
                .iter()
                .filter_map(|i| match i {
                    Ins::JumpIfFalse(t) | Ins::Jump(t) => Some(*t as usize),
                    _ => None,
                })
                .collect();
            for (pc, i) in code.ins.iter().enumerate() {
                at[pc] = ins.len() as u32;
                match *i {
                    Ins::Const(c) => {
                        let r = *const_idx.entry(c.to_bits()).or_insert_with(|| {
                            consts.push(c);
                            (n_slots + consts.len()) as u32
                        });
                        st.push(r);
                    }
                    Ins::Load(s) => st.push(s),
                    Ins::Time => st.push(time_reg),
                    Ins::Delay(_) => return None,
                    Ins::Op(op, k) => {
                        let k = k as usize;
                        if st.len() < k || k == 0 && !matches!(op, Op::Plus | Op::Times) {
                            return None;
                        }
                        let base = st.len() - k;
                        let d = tmp(base);
                        let a = &st[base..];
                        match (op, k) {
                            (Op::Plus, 0) | (Op::Times, 0) => {
                                let c: f64 = if op == Op::Plus { 0.0 } else { 1.0 };
                                let r = *const_idx.entry(c.to_bits()).or_insert_with(|| {
                                    consts.push(c);
                                    (n_slots + consts.len()) as u32
                                });
                                ins.push(RIns::Copy(d, r));
                            }
                            (Op::Plus | Op::Times, 1) => ins.push(RIns::Copy(d, a[0])),
                            (Op::Plus, _) => {
                                let rest = if k >= 3 {
                                    ins.push(RIns::Add3(d, a[0], a[1], a[2]));
                                    &a[3..]
                                } else {
                                    ins.push(RIns::Add(d, a[0], a[1]));
                                    &a[2..]
                                };
                                for &x in rest {
                                    ins.push(RIns::Add(d, d, x));
                                }
                            }
                            (Op::Times, _) => {
                                let rest = if k >= 3 {
                                    ins.push(RIns::Mul3(d, a[0], a[1], a[2]));
                                    &a[3..]
                                } else {
                                    ins.push(RIns::Mul(d, a[0], a[1]));
                                    &a[2..]
                                };
                                for &x in rest {
                                    ins.push(RIns::Mul(d, d, x));
                                }
                            }
                            (Op::Minus, 1) => ins.push(RIns::Neg(d, a[0])),
                            (Op::Minus, 2) => ins.push(RIns::Sub(d, a[0], a[1])),
                            (Op::Divide, 2) => ins.push(RIns::Div(d, a[0], a[1])),
                            (Op::Power, 2) => ins.push(RIns::Pow(d, a[0], a[1])),
                            (
                                Op::Exp
                                | Op::Ln
                                | Op::Abs
                                | Op::Floor
                                | Op::Ceiling
                                | Op::Sin
                                | Op::Cos
                                | Op::Tan
                                | Op::Sinh
                                | Op::Cosh
                                | Op::Tanh
                                | Op::Not,
                                1,
                            ) => ins.push(RIns::Un(op, d, a[0])),
                            _ => {
                                let start = args.len() as u32;
                                args.extend_from_slice(a);
                                ins.push(RIns::Gen(op, d, start, k as u32));
                            }
                        }
                        st.truncate(base);
                        st.push(d);
                    }
                    Ins::JumpIfFalse(t) => {
                        let c = st.pop()?;
                        fix.push((ins.len(), t as usize));
                        ins.push(RIns::Jz(c, 0));
                    }
                    Ins::Jump(t) => {
                        // End of a piece's value: move it to the join register.
                        let top = st.pop()?;
                        let d = tmp(st.len());
                        if top != d {
                            ins.push(RIns::Copy(d, top));
                        }
                        fix.push((ins.len(), t as usize));
                        ins.push(RIns::Jmp(0, d));
                        // The value at the join is in `d` (pushed when the target is reached).
                    }
                }
                // Reaching a join target by fall-through (the `otherwise` value): the next
                // instruction index is a jump target reached after a value was pushed.
                if targets.contains(&(pc + 1)) && !matches!(i, Ins::Jump(_) | Ins::JumpIfFalse(_)) {
                    // Only the end-of-piecewise join has a value on the stack at the target;
                    // a `JumpIfFalse` target (start of the next piece) is reached only by the jump.
                    if is_end_join(code, pc + 1) {
                        let top = st.pop()?;
                        let d = tmp(st.len());
                        if top != d {
                            ins.push(RIns::Copy(d, top));
                        }
                        st.push(d);
                    }
                }
            }
            at[code.ins.len()] = ins.len() as u32;
            for (k, t) in fix {
                let tg = at[t];
                ins[k] = match ins[k] {
                    RIns::Jz(c, _) => RIns::Jz(c, tg),
                    RIns::Jmp(_, j) => RIns::Jmp(tg, j),
                    x => x,
                };
            }
            let top = st.pop()?;
            // Write the result into its slot: retarget the last instruction when it produced
            // the value into a temporary and nothing jumps past it.
            let is_tmp = top >= u32::MAX - max_depth as u32;
            let retarget = is_tmp
                && ins.len() > code_start
                && !targets.contains(&code.ins.len())
                && ins.last().and_then(|l| dst_of(*l)) == Some(top);
            let dst = *sl as u32;
            let single_chain = retarget && chain_is_private(&ins, top);
            if single_chain {
                let last = ins.len() - 1;
                ins[last] = set_dst(ins[last], dst);
            } else {
                ins.push(RIns::Copy(dst, top));
            }
        }
        // Relocate the temporaries after the constants.
        let t0 = (n_slots + 1 + consts.len()) as u32;
        let reloc = |r: u32| -> u32 {
            if r > u32::MAX - max_depth as u32 - 1 {
                t0 + (u32::MAX - r)
            } else {
                r
            }
        };
        for i in ins.iter_mut() {
            *i = match *i {
                RIns::Add(d, a, b) => RIns::Add(reloc(d), reloc(a), reloc(b)),
                RIns::Add3(d, a, b, c) => RIns::Add3(reloc(d), reloc(a), reloc(b), reloc(c)),
                RIns::Mul3(d, a, b, c) => RIns::Mul3(reloc(d), reloc(a), reloc(b), reloc(c)),
                RIns::Sub(d, a, b) => RIns::Sub(reloc(d), reloc(a), reloc(b)),
                RIns::Mul(d, a, b) => RIns::Mul(reloc(d), reloc(a), reloc(b)),
                RIns::Div(d, a, b) => RIns::Div(reloc(d), reloc(a), reloc(b)),
                RIns::Pow(d, a, b) => RIns::Pow(reloc(d), reloc(a), reloc(b)),
                RIns::Neg(d, a) => RIns::Neg(reloc(d), reloc(a)),
                RIns::Copy(d, a) => RIns::Copy(reloc(d), reloc(a)),
                RIns::Un(op, d, a) => RIns::Un(op, reloc(d), reloc(a)),
                RIns::Gen(op, d, s, n) => RIns::Gen(op, reloc(d), s, n),
                RIns::Jz(c, t) => RIns::Jz(reloc(c), t),
                RIns::Jmp(t, j) => RIns::Jmp(t, reloc(j)),
            };
        }
        for a in args.iter_mut() {
            *a = reloc(*a);
        }
        let mut extra = vec![0.0];
        extra.extend_from_slice(&consts);
        extra.extend(std::iter::repeat_n(0.0, max_depth + 1));
        Some(Tape {
            ins,
            args,
            extra,
            n_slots,
        })
    }

    /// Run the tape on `regs`, which holds the slot values (`n_slots` entries; the tape's
    /// constants and temporaries are appended).
    pub(crate) fn run(&self, regs: &mut Vec<f64>, t: f64) {
        regs.truncate(self.n_slots);
        regs.extend_from_slice(&self.extra);
        regs[self.n_slots] = t;
        let r = regs.as_mut_slice();
        let mut pc = 0usize;
        let n = self.ins.len();
        let mut buf = [0.0f64; 8];
        while pc < n {
            match self.ins[pc] {
                RIns::Add(d, a, b) => r[d as usize] = r[a as usize] + r[b as usize],
                RIns::Add3(d, a, b, c) => {
                    r[d as usize] = r[a as usize] + r[b as usize] + r[c as usize]
                }
                RIns::Mul3(d, a, b, c) => {
                    r[d as usize] = r[a as usize] * r[b as usize] * r[c as usize]
                }
                RIns::Sub(d, a, b) => r[d as usize] = r[a as usize] - r[b as usize],
                RIns::Mul(d, a, b) => r[d as usize] = r[a as usize] * r[b as usize],
                RIns::Div(d, a, b) => r[d as usize] = r[a as usize] / r[b as usize],
                RIns::Pow(d, a, b) => r[d as usize] = r[a as usize].powf(r[b as usize]),
                RIns::Neg(d, a) => r[d as usize] = -r[a as usize],
                RIns::Copy(d, a) => r[d as usize] = r[a as usize],
                RIns::Un(op, d, a) => r[d as usize] = apply(op, &[r[a as usize]]),
                RIns::Gen(op, d, s, k) => {
                    let a = &self.args[s as usize..(s + k) as usize];
                    let v = if a.len() <= buf.len() {
                        for (b, &x) in buf.iter_mut().zip(a) {
                            *b = r[x as usize];
                        }
                        apply(op, &buf[..a.len()])
                    } else {
                        let v: Vec<f64> = a.iter().map(|&x| r[x as usize]).collect();
                        apply(op, &v)
                    };
                    r[d as usize] = v;
                }
                RIns::Jz(c, tg) => {
                    if r[c as usize] == 0.0 {
                        pc = tg as usize;
                        continue;
                    }
                }
                RIns::Jmp(tg, _) => {
                    pc = tg as usize;
                    continue;
                }
            }
            pc += 1;
        }
    }
}

/// Whether bytecode index `t` is the end-of-piecewise join (a target of some `Jump`).
fn is_end_join(code: &Code, t: usize) -> bool {
    code.ins
        .iter()
        .any(|i| matches!(i, Ins::Jump(x) if *x as usize == t))
}

/// Whether temporary `r` is written only by the last instruction of the code so far that
/// writes it — i.e. retargeting the last instruction's destination is safe: `r` must not be
/// read by that instruction itself (chained `Add(d, d, x)`).
fn chain_is_private(ins: &[RIns], r: u32) -> bool {
    match ins.last() {
        Some(RIns::Add(_, a, b))
        | Some(RIns::Sub(_, a, b))
        | Some(RIns::Mul(_, a, b))
        | Some(RIns::Div(_, a, b))
        | Some(RIns::Pow(_, a, b)) => *a != r && *b != r,
        Some(RIns::Add3(_, a, b, c)) | Some(RIns::Mul3(_, a, b, c)) => {
            *a != r && *b != r && *c != r
        }
        Some(RIns::Neg(_, a)) | Some(RIns::Copy(_, a)) | Some(RIns::Un(_, _, a)) => *a != r,
        Some(RIns::Gen(..)) => true,
        _ => false,
    }
}

/// The register an instruction writes (None for jumps).
fn dst_of(i: RIns) -> Option<u32> {
    match i {
        RIns::Add(d, ..)
        | RIns::Add3(d, ..)
        | RIns::Sub(d, ..)
        | RIns::Mul(d, ..)
        | RIns::Mul3(d, ..)
        | RIns::Div(d, ..)
        | RIns::Pow(d, ..)
        | RIns::Neg(d, _)
        | RIns::Copy(d, _)
        | RIns::Un(_, d, _)
        | RIns::Gen(_, d, _, _) => Some(d),
        RIns::Jz(..) | RIns::Jmp(..) => None,
    }
}

fn set_dst(i: RIns, d: u32) -> RIns {
    match i {
        RIns::Add(_, a, b) => RIns::Add(d, a, b),
        RIns::Add3(_, a, b, c) => RIns::Add3(d, a, b, c),
        RIns::Mul3(_, a, b, c) => RIns::Mul3(d, a, b, c),
        RIns::Sub(_, a, b) => RIns::Sub(d, a, b),
        RIns::Mul(_, a, b) => RIns::Mul(d, a, b),
        RIns::Div(_, a, b) => RIns::Div(d, a, b),
        RIns::Pow(_, a, b) => RIns::Pow(d, a, b),
        RIns::Neg(_, a) => RIns::Neg(d, a),
        RIns::Copy(_, a) => RIns::Copy(d, a),
        RIns::Un(op, _, a) => RIns::Un(op, d, a),
        RIns::Gen(op, _, s, n) => RIns::Gen(op, d, s, n),
        x => x,
    }
}

fn emit(e: &RExpr, out: &mut Vec<Ins>) {
    match e {
        RExpr::Num(c) => out.push(Ins::Const(*c)),
        RExpr::Slot(s) => out.push(Ins::Load(*s as u32)),
        RExpr::Time => out.push(Ins::Time),
        RExpr::Apply(op, args) => {
            for a in args {
                emit(a, out);
            }
            out.push(Ins::Op(*op, args.len() as u32));
        }
        RExpr::RateOf(e) => emit(e, out),
        RExpr::Delay(k, _, d) => {
            emit(d, out);
            out.push(Ins::Delay(*k as u32));
        }
        RExpr::Piecewise(pieces, other) => {
            let mut end_jumps = Vec::new();
            for (val, cond) in pieces {
                emit(cond, out);
                let jf = out.len();
                out.push(Ins::JumpIfFalse(0));
                emit(val, out);
                end_jumps.push(out.len());
                out.push(Ins::Jump(0));
                let next = out.len() as u32;
                out[jf] = Ins::JumpIfFalse(next);
            }
            match other {
                Some(o) => emit(o, out),
                None => out.push(Ins::Const(f64::NAN)),
            }
            let end = out.len() as u32;
            for j in end_jumps {
                out[j] = Ins::Jump(end);
            }
        }
    }
}

fn b(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

fn factorial(x: f64) -> f64 {
    if x < 0.0 || x.fract() != 0.0 {
        return f64::NAN;
    }
    if x > 170.0 {
        return f64::INFINITY;
    }
    let mut r = 1.0;
    let mut i = 2.0;
    while i <= x {
        r *= i;
        i += 1.0;
    }
    r
}

pub(crate) fn apply(op: Op, a: &[f64]) -> f64 {
    use Op::*;
    let x = a.first().copied().unwrap_or(f64::NAN);
    let y = a.get(1).copied().unwrap_or(f64::NAN);
    match op {
        Plus => a.iter().sum(),
        Minus => {
            if a.len() == 1 {
                -x
            } else {
                x - y
            }
        }
        Times => a.iter().product(),
        Divide => x / y,
        Power => x.powf(y),
        Root => {
            // a = [degree, value]
            let (d, v) = (x, y);
            if v < 0.0 && d.fract() == 0.0 && (d as i64) % 2 != 0 {
                -(-v).powf(1.0 / d)
            } else if d == 2.0 {
                v.sqrt()
            } else {
                v.powf(1.0 / d)
            }
        }
        Abs => x.abs(),
        Exp => x.exp(),
        Ln => x.ln(),
        Log => {
            // a = [base, value]
            if x == 10.0 {
                y.log10()
            } else if x == 2.0 {
                y.log2()
            } else {
                y.ln() / x.ln()
            }
        }
        Floor => x.floor(),
        Ceiling => x.ceil(),
        Factorial => factorial(x),
        Sin => x.sin(),
        Cos => x.cos(),
        Tan => x.tan(),
        Sec => 1.0 / x.cos(),
        Csc => 1.0 / x.sin(),
        Cot => 1.0 / x.tan(),
        Sinh => x.sinh(),
        Cosh => x.cosh(),
        Tanh => x.tanh(),
        Sech => 1.0 / x.cosh(),
        Csch => 1.0 / x.sinh(),
        Coth => 1.0 / x.tanh(),
        ArcSin => x.asin(),
        ArcCos => x.acos(),
        ArcTan => x.atan(),
        ArcSec => (1.0 / x).acos(),
        ArcCsc => (1.0 / x).asin(),
        ArcCot => {
            if x == 0.0 {
                std::f64::consts::FRAC_PI_2
            } else {
                (1.0 / x).atan()
            }
        }
        ArcSinh => x.asinh(),
        ArcCosh => x.acosh(),
        ArcTanh => x.atanh(),
        ArcSech => (1.0 / x).acosh(),
        ArcCsch => (1.0 / x).asinh(),
        ArcCoth => (1.0 / x).atanh(),
        Eq => b(a.windows(2).all(|w| w[0] == w[1])),
        Neq => b(a.windows(2).all(|w| w[0] != w[1])),
        Gt => b(a.windows(2).all(|w| w[0] > w[1])),
        Lt => b(a.windows(2).all(|w| w[0] < w[1])),
        Geq => b(a.windows(2).all(|w| w[0] >= w[1])),
        Leq => b(a.windows(2).all(|w| w[0] <= w[1])),
        And => b(a.iter().all(|v| *v != 0.0)),
        Or => b(a.iter().any(|v| *v != 0.0)),
        Xor => b(a.iter().filter(|v| **v != 0.0).count() % 2 == 1),
        Not => b(x == 0.0),
        Implies => b(x == 0.0 || y != 0.0),
        Max => a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Min => a.iter().copied().fold(f64::INFINITY, f64::min),
        Rem => x % y,
        Quotient => (x / y).trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(xml: &str) -> f64 {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let e = parse_math(doc.root_element(), "test").unwrap().unwrap();
        let r = resolve_simple(&e);
        Code::compile(&r).eval(&[], 2.0, &mut Vec::new())
    }

    fn resolve_simple(e: &Expr) -> RExpr {
        match e {
            Expr::Num(c) => RExpr::Num(*c),
            Expr::Time => RExpr::Time,
            Expr::Apply(op, a) => RExpr::Apply(*op, a.iter().map(resolve_simple).collect()),
            Expr::Piecewise(p, o) => RExpr::Piecewise(
                p.iter()
                    .map(|(v, c)| (resolve_simple(v), resolve_simple(c)))
                    .collect(),
                o.as_ref().map(|o| Box::new(resolve_simple(o))),
            ),
            _ => panic!("unsupported in test"),
        }
    }

    #[test]
    fn arithmetic_and_piecewise() {
        let m = r#"<math xmlns="http://www.w3.org/1998/Math/MathML"><apply><plus/><cn>1</cn>
            <apply><times/><cn type="e-notation">2<sep/>1</cn><csymbol definitionURL="http://www.sbml.org/sbml/symbols/time"/></apply></apply></math>"#;
        assert_eq!(ev(m), 41.0);
        let m = r#"<math xmlns="http://www.w3.org/1998/Math/MathML"><piecewise>
            <piece><cn>5</cn><apply><lt/><csymbol definitionURL="http://www.sbml.org/sbml/symbols/time"/><cn>1</cn></apply></piece>
            <otherwise><apply><root/><degree><cn>3</cn></degree><cn>-8</cn></apply></otherwise></piecewise></math>"#;
        assert_eq!(ev(m), -2.0);
        let m = r#"<math xmlns="http://www.w3.org/1998/Math/MathML"><apply><log/><logbase><cn>2</cn></logbase><cn>8</cn></apply></math>"#;
        assert_eq!(ev(m), 3.0);
        let m = r#"<math xmlns="http://www.w3.org/1998/Math/MathML"><apply><factorial/><cn>5</cn></apply></math>"#;
        assert_eq!(ev(m), 120.0);
    }
}
