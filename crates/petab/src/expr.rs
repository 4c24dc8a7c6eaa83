//! Infix math of PEtab formulas (`observableFormula`, `noiseFormula`; PEtab v1 specification,
//! "Math expressions", sympy syntax): `+ - * /`, powers `^` and `**` (right-associative, binding
//! tighter than unary minus), numbers, identifiers (model entities, parameter-table ids,
//! `observableParameterN_obs` / `noiseParameterN_obs` placeholders, `time`), functions `exp`,
//! `log` (natural; `log(x, b)` base b), `ln`, `log10`, `log2`, `sqrt`, `abs`, `sin`, `cos`,
//! `tan`, `sinh`, `cosh`, `tanh`, `pow`, `min`, `max`, `sign`, and the constants `pi`, `e`.

/// A parsed formula.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Num(f64),
    /// An identifier, resolved at evaluation.
    Var(String),
    /// Negation.
    Neg(Box<Expr>),
    /// Binary operator `+ - * / ^`.
    Bin(char, Box<Expr>, Box<Expr>),
    /// Function call.
    Call(String, Vec<Expr>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] as char).is_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn err(&self, what: &str) -> String {
        format!("{what} at character {}", self.i + 1)
    }
    fn sum(&mut self) -> Result<Expr, String> {
        let mut a = self.product()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let b = self.product()?;
            a = Expr::Bin(c as char, Box::new(a), Box::new(b));
        }
        Ok(a)
    }
    fn product(&mut self) -> Result<Expr, String> {
        let mut a = self.unary()?;
        loop {
            match self.peek() {
                Some(b'*') if self.s.get(self.i + 1) != Some(&b'*') => {}
                Some(b'/') => {}
                _ => return Ok(a),
            }
            let c = self.s[self.i] as char;
            self.i += 1;
            let b = self.unary()?;
            a = Expr::Bin(c, Box::new(a), Box::new(b));
        }
    }
    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(b'+') => {
                self.i += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }
    fn power(&mut self) -> Result<Expr, String> {
        let base = self.atom()?;
        let is_pow = match self.peek() {
            Some(b'^') => {
                self.i += 1;
                true
            }
            Some(b'*') if self.s.get(self.i + 1) == Some(&b'*') => {
                self.i += 2;
                true
            }
            _ => false,
        };
        if is_pow {
            let e = self.unary()?;
            return Ok(Expr::Bin('^', Box::new(base), Box::new(e)));
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        let Some(c) = self.peek() else {
            return Err(self.err("unexpected end"));
        };
        if c == b'(' {
            self.i += 1;
            let e = self.sum()?;
            if self.peek() != Some(b')') {
                return Err(self.err("expected ')'"));
            }
            self.i += 1;
            return Ok(e);
        }
        if c.is_ascii_digit() || c == b'.' {
            let st = self.i;
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.')
            {
                self.i += 1;
            }
            if self.i < self.s.len() && (self.s[self.i] == b'e' || self.s[self.i] == b'E') {
                let save = self.i;
                self.i += 1;
                if self.i < self.s.len() && (self.s[self.i] == b'+' || self.s[self.i] == b'-') {
                    self.i += 1;
                }
                if self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                } else {
                    self.i = save;
                }
            }
            let t = std::str::from_utf8(&self.s[st..self.i]).unwrap_or("");
            return t
                .parse()
                .map(Expr::Num)
                .map_err(|_| self.err(&format!("bad number '{t}'")));
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let st = self.i;
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
            {
                self.i += 1;
            }
            let name = std::str::from_utf8(&self.s[st..self.i])
                .unwrap_or("")
                .to_string();
            if self.peek() == Some(b'(') {
                self.i += 1;
                let mut args = Vec::new();
                if self.peek() != Some(b')') {
                    loop {
                        args.push(self.sum()?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b')') => break,
                            _ => return Err(self.err("expected ',' or ')'")),
                        }
                    }
                }
                self.i += 1;
                check_call(&name, args.len()).map_err(|e| self.err(&e))?;
                return Ok(Expr::Call(name, args));
            }
            return Ok(match name.as_str() {
                "pi" => Expr::Num(std::f64::consts::PI),
                "inf" | "Inf" => Expr::Num(f64::INFINITY),
                _ => Expr::Var(name),
            });
        }
        Err(self.err(&format!("unexpected '{}'", c as char)))
    }
}

fn check_call(name: &str, n: usize) -> Result<(), String> {
    let ok = match name {
        "exp" | "ln" | "log10" | "log2" | "sqrt" | "abs" | "sin" | "cos" | "tan" | "sinh"
        | "cosh" | "tanh" | "sign" | "floor" | "ceil" => n == 1,
        "log" => n == 1 || n == 2,
        "pow" => n == 2,
        "min" | "max" => n >= 1,
        _ => return Err(format!("unknown function '{name}'")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("wrong number of arguments ({n}) to '{name}'"))
    }
}

/// Parse a formula. Errors: a message with the 1-based character position.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let e = p.sum()?;
    if p.peek().is_some() {
        return Err(p.err("unexpected trailing input"));
    }
    Ok(e)
}

impl Expr {
    /// Every identifier the formula reads, in order of first appearance.
    pub fn vars(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }
    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) => {
                if !out.contains(v) {
                    out.push(v.clone())
                }
            }
            Expr::Neg(a) => a.collect(out),
            Expr::Bin(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect(out)),
        }
    }

    /// Evaluate with identifiers resolved by `env`. Errors: the first unresolved identifier.
    pub fn eval(&self, env: &dyn Fn(&str) -> Option<f64>) -> Result<f64, String> {
        Ok(match self {
            Expr::Num(x) => *x,
            Expr::Var(v) => match env(v) {
                Some(x) => x,
                None if v == "e" => std::f64::consts::E,
                None => return Err(format!("unknown identifier '{v}'")),
            },
            Expr::Neg(a) => -a.eval(env)?,
            Expr::Bin(op, a, b) => {
                let (x, y) = (a.eval(env)?, b.eval(env)?);
                match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    '/' => x / y,
                    _ => x.powf(y),
                }
            }
            Expr::Call(f, args) => {
                let a: Vec<f64> = args.iter().map(|e| e.eval(env)).collect::<Result<_, _>>()?;
                match f.as_str() {
                    "exp" => a[0].exp(),
                    "ln" => a[0].ln(),
                    "log" if a.len() == 2 => a[0].ln() / a[1].ln(),
                    "log" => a[0].ln(),
                    "log10" => a[0].log10(),
                    "log2" => a[0].log2(),
                    "sqrt" => a[0].sqrt(),
                    "abs" => a[0].abs(),
                    "sin" => a[0].sin(),
                    "cos" => a[0].cos(),
                    "tan" => a[0].tan(),
                    "sinh" => a[0].sinh(),
                    "cosh" => a[0].cosh(),
                    "tanh" => a[0].tanh(),
                    "floor" => a[0].floor(),
                    "ceil" => a[0].ceil(),
                    "sign" => {
                        if a[0] == 0.0 {
                            0.0
                        } else {
                            a[0].signum()
                        }
                    }
                    "pow" => a[0].powf(a[1]),
                    "min" => a.iter().copied().fold(f64::INFINITY, f64::min),
                    _ => a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> f64 {
        parse(s)
            .unwrap()
            .eval(&|v| (v == "x").then_some(2.0))
            .unwrap()
    }

    #[test]
    fn precedence_and_functions() {
        assert_eq!(ev("1 + 2 * 3"), 7.0);
        assert_eq!(ev("-x^2"), -4.0);
        assert_eq!(ev("2**3**2"), 512.0);
        assert_eq!(ev("x / 4 * 2"), 1.0);
        assert!((ev("log10(1E3) + log(exp(1.5)) + log(8, 2)") - 7.5).abs() < 1e-12);
        assert_eq!(ev("2e-1*10"), 2.0);
        assert_eq!(ev("(x + 1) * 3 - -1"), 10.0);
        assert!(parse("1 +").is_err());
        assert!(parse("foo(1)").unwrap_err().contains("unknown function"));
        assert!(parse("x")
            .unwrap()
            .eval(&|_| None)
            .unwrap_err()
            .contains("'x'"));
    }
}
