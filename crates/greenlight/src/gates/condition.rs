//! Threshold conditions such as `< 0.01` or `>= 0.99`, and the rule that a value that is not a
//! number is never compared: it is inconclusive.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub op: Op,
    pub bound: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error(
        "'{0}' is not a condition; write an operator (<, <=, >, >=, ==, !=) and a number, e.g. '< 0.01'"
    )]
    Malformed(String),
    #[error("'{0}': the threshold must be a finite number")]
    NotFinite(String),
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Self, ConditionError> {
        let s = text.trim();
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(sym, op)| s.strip_prefix(sym).map(|rest| (op, rest)))
        .ok_or_else(|| ConditionError::Malformed(text.to_string()))?;
        let bound: f64 = rest
            .trim()
            .parse()
            .map_err(|_| ConditionError::Malformed(text.to_string()))?;
        if !bound.is_finite() {
            return Err(ConditionError::NotFinite(text.to_string()));
        }
        Ok(Self { op, bound })
    }

    /// `None` when the value is NaN or ±Inf: no comparison with those means anything (a
    /// division by zero must never pass `> 0.99`).
    pub fn holds(&self, value: f64) -> Option<bool> {
        if !value.is_finite() {
            return None;
        }
        Some(match self.op {
            Op::Lt => value < self.bound,
            Op::Le => value <= self.bound,
            Op::Gt => value > self.bound,
            Op::Ge => value >= self.bound,
            Op::Eq => value == self.bound,
            Op::Ne => value != self.bound,
        })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sym = match self.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{sym} {}", self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_parse_and_compare() {
        assert!(Threshold::parse("< 0.01").unwrap().holds(0.005).unwrap());
        assert!(!Threshold::parse("<0.01").unwrap().holds(0.01).unwrap());
        assert!(Threshold::parse("<= 0.01").unwrap().holds(0.01).unwrap());
        assert!(Threshold::parse(">= 0.99").unwrap().holds(0.995).unwrap());
        assert!(Threshold::parse("> 5").unwrap().holds(6.0).unwrap());
        assert!(Threshold::parse("== 0").unwrap().holds(0.0).unwrap());
        assert!(Threshold::parse("!= 0").unwrap().holds(1.0).unwrap());
        assert!(Threshold::parse(" < 1e-3 ").unwrap().holds(0.0001).unwrap());
    }

    #[test]
    fn nan_and_infinities_are_never_compared() {
        for c in ["< 1", "> 1", ">= 1", "!= 1", "== 1"] {
            for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert_eq!(Threshold::parse(c).unwrap().holds(v), None, "{v} {c}");
            }
        }
    }

    #[test]
    fn malformed_conditions_are_rejected() {
        for c in ["", "0.01", "< ", "=< 1", "< abc", "~ 1", "< NaN", "> inf"] {
            assert!(Threshold::parse(c).is_err(), "{c:?} should be rejected");
        }
    }
}
