//! Placeholders in PromQL are data, never code. A query template may name the release's facts
//! (`{{version}}`, `{{canary}}`, ...) only inside the double quotes of a label matcher's value;
//! [`QueryTemplate::compile`] checks that with a real PromQL parser (`promql-parser`). Each
//! value is then escaped as a PromQL string (and as a regular expression inside `=~` and `!~`),
//! and the query is parsed again after substitution: one whose shape changed is refused.

use std::collections::BTreeMap;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};
use promql_parser::util::visitor::{ExprVisitorMut, walk_expr_mut};

use super::GateContext;

/// The names a template may use, each read from the gate's context.
pub const PLACEHOLDERS: [&str; 8] = [
    "release",
    "version",
    "stage",
    "namespace",
    "pipeline",
    "primary",
    "canary",
    // The workload measured: the canary's, or for a compare gate's baseline the primary's.
    "workload",
];

/// What stands in for the i-th placeholder while the template is parsed.
fn sentinel(i: usize) -> String {
    format!("__greenlight_placeholder_{i}__")
}

const SENTINEL_PREFIX: &str = "__greenlight_placeholder_";

/// How a value is written where its placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Inside an `=` or `!=` matcher: a PromQL string.
    Text,
    /// Inside an `=~` or `!~` matcher: a literal regular expression, then a PromQL string.
    Regex,
}

/// A query with placeholders, checked once when its Gate compiles.
#[derive(Debug, Clone)]
pub struct QueryTemplate {
    /// The text between placeholders: one more piece than there are placeholders.
    pieces: Vec<String>,
    /// Each placeholder's name and how its value is escaped, in order.
    slots: Vec<(&'static str, Escape)>,
    /// The parsed query's shape, with every matcher value and string blanked.
    shape: String,
    widest: std::time::Duration,
    /// The placeholders that are the whole value of an `=` matcher in every selector.
    pinned: Vec<&'static str>,
    /// When the whole query is one instant selector, without `offset`, `@` or `or`: its
    /// matchers as text, the metric name as `__name__`, each placeholder as `{{name}}`.
    selector: Option<std::collections::BTreeSet<String>>,
}

impl QueryTemplate {
    /// Parses `template`, or says why it is refused.
    pub fn compile(template: &str) -> Result<Self, String> {
        let (pieces, names) = split(template);
        let mut with_sentinels = pieces[0].clone();
        for (i, piece) in pieces[1..].iter().enumerate() {
            with_sentinels.push_str(&sentinel(i));
            with_sentinels.push_str(piece);
        }
        let quoting = quote_contexts(&pieces);
        if let Some((i, _)) = quoting.iter().enumerate().find(|(_, q)| **q != Some('"')) {
            return Err(format!(
                "{{{{{}}}}} may appear only inside the double quotes of a label matcher's value, e.g. version=\"{{{{{}}}}}\"",
                names[i], names[i]
            ));
        }
        let mut expr = parser::parse(&with_sentinels).map_err(|e| format!("not PromQL: {e}"))?;
        let selector = selector_terms(&expr, &names);
        let mut pins = Pins::default();
        let _ = walk_expr_mut(&mut pins, &mut expr);
        let pinned = pinned_everywhere(&names, &pins);
        let mut kinds = Kinds::default();
        let _ = walk_expr_mut(&mut kinds, &mut expr);
        let shape = format!("{expr:?}");
        if let Some(i) = (0..names.len()).find(|i| !kinds.found.contains_key(i)) {
            return Err(format!(
                "{{{{{}}}}} may appear only inside a label matcher's value, not in a metric name, function argument or string",
                names[i]
            ));
        }
        if shape.contains(SENTINEL_PREFIX) {
            return Err("a placeholder may appear only inside a label matcher's value".into());
        }
        let slots = names
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, kinds.found[&i]))
            .collect();
        Ok(Self {
            pieces,
            slots,
            shape,
            widest: kinds.widest,
            pinned,
            selector,
        })
    }

    /// Whether every selector of the query has an `=` matcher whose whole value is the
    /// placeholder `name`: then each series it reads belongs to that value alone.
    pub fn pins_everywhere(&self, name: &str) -> bool {
        self.pinned.contains(&name)
    }

    /// Whether the query is one instant vector selector (`metric{label="..."}`), without an
    /// `offset` or `@` that would move it in time.
    pub fn is_selector(&self) -> bool {
        self.selector.is_some()
    }

    /// A plain selector's matchers (see [`Self::is_selector`]), the metric name among them as
    /// `__name__="..."` and placeholders as `{{name}}`: one selector whose terms include all
    /// of another's selects a subset of its series.
    pub fn selector_terms(&self) -> Option<&std::collections::BTreeSet<String>> {
        self.selector.as_ref()
    }

    /// Whether the template uses the placeholder `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.slots.iter().any(|(n, _)| *n == name)
    }

    /// The widest range the query reads back over (`[5m]`, a subquery's range): samples
    /// closer together than this share data.
    pub fn widest_range(&self) -> std::time::Duration {
        self.widest
    }

    /// The query for `ctx`, each value escaped where it stands; refused if the result does not
    /// parse to the template's shape.
    pub fn render(&self, ctx: &GateContext) -> Result<String, String> {
        let mut query = self.pieces[0].clone();
        for ((name, escape), piece) in self.slots.iter().zip(&self.pieces[1..]) {
            let value = value_of(name, ctx);
            let value = match escape {
                Escape::Text => value.to_string(),
                Escape::Regex => regex::escape(value),
            };
            query.push_str(&escape_string(&value));
            query.push_str(piece);
        }
        let mut expr = parser::parse(&query).map_err(|e| {
            format!("the query with the release's facts filled in is not PromQL ({e}); refused")
        })?;
        let _ = walk_expr_mut(&mut Kinds::default(), &mut expr);
        if format!("{expr:?}") != self.shape {
            return Err(
                "the release's facts would change the query's shape; refused, as an injection"
                    .into(),
            );
        }
        Ok(query)
    }
}

/// The terms of `expr` if it is one plain instant selector; see [`QueryTemplate::selector_terms`].
fn selector_terms(
    expr: &Expr,
    names: &[&'static str],
) -> Option<std::collections::BTreeSet<String>> {
    let Expr::VectorSelector(v) = expr else {
        return None;
    };
    if v.offset.is_some() || v.at.is_some() || !v.matchers.or_matchers.is_empty() {
        return None;
    }
    let named = v.name.as_ref().map(|n| format!("__name__=\"{n}\""));
    let mut terms: std::collections::BTreeSet<String> = v
        .matchers
        .matchers
        .iter()
        .map(|m| m.to_string())
        .chain(named)
        .collect();
    terms = terms
        .into_iter()
        .map(|mut t| {
            for (i, name) in names.iter().enumerate() {
                t = t.replace(&sentinel(i), &format!("{{{{{name}}}}}"));
            }
            t
        })
        .collect();
    Some(terms)
}

fn value_of<'a>(name: &str, ctx: &'a GateContext) -> &'a str {
    match name {
        "release" => &ctx.release,
        "version" => &ctx.version,
        "stage" => &ctx.stage,
        "namespace" => &ctx.namespace,
        "pipeline" => &ctx.pipeline,
        "primary" => &ctx.primary_workload,
        _ => &ctx.canary_workload,
    }
}

/// A value as the inside of a double-quoted PromQL string.
fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The template cut at each known placeholder, and the placeholders' names in order.
fn split(template: &str) -> (Vec<String>, Vec<&'static str>) {
    let mut pieces = vec![String::new()];
    let mut names = vec![];
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for name in PLACEHOLDERS {
            let token = format!("{{{{{name}}}}}");
            if let Some(after) = rest.strip_prefix(token.as_str()) {
                names.push(name);
                pieces.push(String::new());
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        pieces.last_mut().expect("one piece at least").push(c);
        rest = &rest[c.len_utf8()..];
    }
    (pieces, names)
}

/// For each placeholder (between two pieces), the quote it stands inside, if any: PromQL's
/// strings are `"..."` and `'...'` with backslash escapes, and raw `` `...` ``.
fn quote_contexts(pieces: &[String]) -> Vec<Option<char>> {
    let mut open: Option<char> = None;
    let mut escaped = false;
    let mut contexts = vec![];
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            // Right after a backslash, the value's first character would be taken as escaped.
            contexts.push(if escaped { Some('\\') } else { open });
        }
        for c in piece.chars() {
            match open {
                Some('#') if c == '\n' => open = None,
                Some('#') => {}
                Some(_) if escaped => escaped = false,
                Some('`') if c == '`' => open = None,
                Some(q) if q != '`' && c == '\\' => escaped = true,
                Some(q) if c == q => open = None,
                Some(_) => {}
                // A comment runs to the end of the line: a placeholder there is not data.
                None if matches!(c, '"' | '\'' | '`' | '#') => open = Some(c),
                None => {}
            }
        }
    }
    contexts
}

/// For each selector of a query with sentinels, the sentinels that are the whole value of
/// one of its `=` matchers (none for a selector with `or` alternatives).
#[derive(Default)]
struct Pins {
    selectors: Vec<Vec<String>>,
}

impl ExprVisitorMut for Pins {
    type Error = ();

    fn pre_visit(&mut self, expr: &mut Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(v) => v,
            Expr::MatrixSelector(m) => &m.vs,
            _ => return Ok(true),
        };
        let exact = selector
            .matchers
            .matchers
            .iter()
            .filter(|m| m.op == MatchOp::Equal && m.value.starts_with(SENTINEL_PREFIX))
            .map(|m| m.value.clone());
        let alternatives = !selector.matchers.or_matchers.is_empty();
        self.selectors.push(match alternatives {
            true => vec![],
            false => exact.collect(),
        });
        Ok(true)
    }
}

/// The placeholder names pinned by every selector (none when there is no selector).
fn pinned_everywhere(names: &[&'static str], pins: &Pins) -> Vec<&'static str> {
    let pinned_by = |selector: &Vec<String>, name: &str| {
        names
            .iter()
            .enumerate()
            .any(|(i, n)| *n == name && selector.contains(&sentinel(i)))
    };
    let mut pinned: Vec<&'static str> = names
        .iter()
        .copied()
        .filter(|_| !pins.selectors.is_empty())
        .filter(|name| pins.selectors.iter().all(|s| pinned_by(s, name)))
        .collect();
    pinned.sort_unstable();
    pinned.dedup();
    pinned
}

/// Blanks every matcher value and string literal (so two queries compare by shape) and notes
/// which placeholder sentinels stood in matcher values, and with which kind of matcher.
#[derive(Default)]
struct Kinds {
    found: BTreeMap<usize, Escape>,
    /// The widest range selector or subquery range in the query.
    widest: std::time::Duration,
}

impl Kinds {
    fn blank(&mut self, matcher: &mut Matcher) {
        let escape = match matcher.op {
            MatchOp::Re(_) | MatchOp::NotRe(_) => Escape::Regex,
            _ => Escape::Text,
        };
        for (i, _) in matcher.value.match_indices(SENTINEL_PREFIX) {
            let digits: String = matcher.value[i + SENTINEL_PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                self.found.insert(n, escape);
            }
        }
        matcher.value.clear();
        matcher.op = match matcher.op {
            MatchOp::Equal => MatchOp::Equal,
            MatchOp::NotEqual => MatchOp::NotEqual,
            MatchOp::Re(_) => MatchOp::Re(empty_regex()),
            MatchOp::NotRe(_) => MatchOp::NotRe(empty_regex()),
        };
    }
}

fn empty_regex() -> regex::Regex {
    regex::Regex::new("").expect("the empty regular expression")
}

impl ExprVisitorMut for Kinds {
    type Error = ();

    fn pre_visit(&mut self, expr: &mut Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => {
                self.widest = self.widest.max(m.range);
                Some(&mut m.vs)
            }
            Expr::Subquery(s) => {
                self.widest = self.widest.max(s.range);
                None
            }
            Expr::StringLiteral(s) => {
                s.val.clear();
                None
            }
            _ => None,
        };
        if let Some(v) = selector {
            for m in v.matchers.matchers.iter_mut() {
                self.blank(m);
            }
            for group in v.matchers.or_matchers.iter_mut() {
                for m in group.iter_mut() {
                    self.blank(m);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: &str) -> GateContext {
        GateContext {
            namespace: "shop".into(),
            pipeline: "shop".into(),
            stage: "prod".into(),
            release: "web-2".into(),
            version: version.into(),
            artifacts: vec![],
            release_stages: Default::default(),
            primary_workload: "web-primary".into(),
            canary_workload: "web-canary".into(),
            secrets: Default::default(),
            approvals: vec![],
            release_author: Ok("ci".into()),
            release_ref: None,
            configuration: None,
            gate: "g".into(),
            list: crate::api::gate::GateList::Gates,
            attempt: 1,
            run: None,
            stage_uid: String::new(),
            measuring: false,
            service_port: 80,
            change_ticket: None,
            ticket_used_by: vec![],
            emergency: None,
            now: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    const ERROR_RATE: &str = r#"sum(rate(http_requests_total{version="{{version}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{version="{{version}}"}[5m]))"#;

    #[test]
    fn a_version_is_written_into_the_matcher_as_a_string() {
        let t = QueryTemplate::compile(ERROR_RATE).unwrap();
        let q = t.render(&ctx("1.4.2")).unwrap();
        assert!(q.contains(r#"version="1.4.2""#), "{q}");
    }

    #[test]
    fn a_version_that_tries_to_close_the_quote_stays_inside_it() {
        let t = QueryTemplate::compile(ERROR_RATE).unwrap();
        let attack = r#"x"}[5m])*0) or vector(0) #"#;
        let q = t.render(&ctx(attack)).unwrap();
        let expr = parser::parse(&q).unwrap();
        let shown = format!("{expr:?}");
        assert!(
            !shown.contains(r#"name: "vector""#),
            "no vector() call: {shown}"
        );
        assert!(
            shown.contains(r#"value: "x\"}[5m])*0) or vector(0) #""#),
            "{shown}"
        );
    }

    proptest::proptest! {
        /// Whatever CI writes as a version, the escaping keeps it a string inside its
        /// matcher: the query is never refused (render refuses any change of shape), and the
        /// matcher compares against exactly that version.
        #[test]
        fn any_version_stays_a_string_inside_its_matcher(version in proptest::prelude::any::<String>()) {
            let t = QueryTemplate::compile(ERROR_RATE).unwrap();
            let q = t.render(&ctx(&version));
            proptest::prop_assert!(q.is_ok(), "{:?}", q);
            let shown = format!("{:?}", parser::parse(&q.unwrap()).unwrap());
            let value = format!("value: {:?}", version);
            proptest::prop_assert!(shown.contains(&value), "{} lacks {}", shown, value);
        }
    }

    #[test]
    fn a_value_in_a_regex_matcher_matches_only_itself() {
        let t = QueryTemplate::compile(r#"up{pod=~"{{canary}}-.*"}"#).unwrap();
        let mut c = ctx("1");
        c.canary_workload = ".*|web".into();
        let q = t.render(&c).unwrap();
        assert_eq!(q, r#"up{pod=~"\\.\\*\\|web-.*"}"#);
    }

    #[test]
    fn a_placeholder_outside_a_matchers_quotes_is_refused() {
        for template in [
            "up{job={{version}}}",
            "{{canary}}_requests_total",
            r#"label_replace(up, "v", "{{version}}", "", "")"#,
            "up{job='{{version}}'}",
            "up{job=`{{version}}`}",
            "up # {{version}}",
            "up offset {{version}}",
            r#"up{v="\{{version}}"}"#,
        ] {
            let refused = QueryTemplate::compile(template);
            assert!(refused.is_err(), "{template} was accepted");
        }
    }

    #[test]
    fn control_characters_and_backslashes_cannot_end_the_string() {
        let t = QueryTemplate::compile(r#"up{v="{{version}}"}"#).unwrap();
        for attack in ["a\\", "a\\\"}", "a\n\"} or vector(1)", "\u{0}\"", "é\"}"] {
            let q = t.render(&ctx(attack)).expect(attack);
            let expr = parser::parse(&q).unwrap();
            assert!(matches!(expr, Expr::VectorSelector(_)), "{attack}: {q}");
        }
    }

    #[test]
    fn a_template_without_placeholders_is_used_as_written() {
        let t = QueryTemplate::compile("vector(0.01)").unwrap();
        assert_eq!(t.render(&ctx("1")).unwrap(), "vector(0.01)");
    }

    #[test]
    fn an_unknown_placeholder_is_text_the_parser_judges() {
        assert!(QueryTemplate::compile(r#"up{v="{{other}}"}"#).is_ok());
        assert!(QueryTemplate::compile("up{{other}}").is_err());
    }
}
