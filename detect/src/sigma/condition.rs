//! A rule's `condition`: `and`, `or`, `not`, parentheses, and `1 of` / `any of` / `all of` a
//! pattern of search identifiers (`filter_main_*`) or `them`, resolved to selection indices when
//! the rule loads.

/// A parsed condition over a rule's selections (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Sel(usize),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    pub fn eval(&self, sel: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::And(v) => v.iter().all(|e| e.eval(sel)),
            Expr::Or(v) => v.iter().any(|e| e.eval(sel)),
            Expr::Not(e) => !e.eval(sel),
        }
    }
}

/// Parses `text`; `names` are the rule's search identifiers, in selection order.
pub fn parse(text: &str, names: &[String]) -> Result<Expr, String> {
    if text.contains('|') {
        return Err("aggregations (`| count() ...`) are not supported: write a Sigma correlation rule instead".into());
    }
    let tokens = tokenize(text);
    let mut p = Parser { tokens: &tokens, pos: 0, names, depth: 0 };
    let e = p.or()?;
    match p.tokens.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(format!("condition {text:?}: unexpected {t:?}")),
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parser<'a> {
    tokens: &'a [String],
    pos: usize,
    names: &'a [String],
    /// Nesting of parentheses and `not`, bounded so a hostile rule cannot exhaust the stack.
    depth: usize,
}

/// Deeper conditions are refused (the community's deepest is 3).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<&str> {
        let t = self.tokens.get(self.pos).map(String::as_str);
        self.pos += 1;
        t
    }

    fn keyword(&self, k: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::Or(v) })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.not()?];
        while self.keyword("and") {
            self.pos += 1;
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::And(v) })
    }

    fn not(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the condition nests deeper than {MAX_DEPTH}"));
        }
        let e = if self.keyword("not") {
            self.pos += 1;
            self.not().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.atom()
        };
        self.depth -= 1;
        e
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let t = self.next().ok_or("the condition ends too early")?.to_string();
        if t == "(" {
            let e = self.or()?;
            return match self.next() {
                Some(")") => Ok(e),
                _ => Err("a `(` is not closed".into()),
            };
        }
        let quant = t.to_ascii_lowercase();
        if matches!(quant.as_str(), "1" | "any" | "all") && self.keyword("of") {
            self.pos += 1;
            let pat = self.next().ok_or("`of` needs a pattern or `them`")?.to_string();
            let picked: Vec<Expr> = (0..self.names.len())
                .filter(|&i| {
                    pat.eq_ignore_ascii_case("them") && !self.names[i].starts_with('_') || glob(&pat, &self.names[i])
                })
                .map(Expr::Sel)
                .collect();
            if picked.is_empty() {
                return Err(format!("no search identifier matches {pat:?}"));
            }
            return Ok(if quant == "all" { Expr::And(picked) } else { Expr::Or(picked) });
        }
        match self.names.iter().position(|n| *n == t) {
            Some(i) => Ok(Expr::Sel(i)),
            None => Err(format!("the condition names {t:?}, which is not a search identifier of the rule")),
        }
    }
}

/// `*` matches any run of characters; everything else literally. Greedy with one backtrack
/// point, so time is linear in practice and never exponential whatever the pattern.
fn glob(pat: &str, name: &str) -> bool {
    let (p, n) = (pat.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_quantifiers_and_errors() {
        let n = names(&["selection", "filter_main_a", "filter_main_b", "filter_optional"]);
        let e = parse("selection and not 1 of filter_main_*", &n).unwrap();
        assert_eq!(e, Expr::And(vec![Expr::Sel(0), Expr::Not(Box::new(Expr::Or(vec![Expr::Sel(1), Expr::Sel(2)])))]));
        let e = parse("selection or filter_main_a and filter_main_b", &n).unwrap();
        assert_eq!(e, Expr::Or(vec![Expr::Sel(0), Expr::And(vec![Expr::Sel(1), Expr::Sel(2)])]));
        let e = parse("(selection or filter_main_a) and not (filter_main_b)", &n).unwrap();
        assert!(e.eval(&mut |i| i == 0));
        assert!(!e.eval(&mut |i| i == 0 || i == 2));
        assert_eq!(parse("all of them", &n).unwrap(), Expr::And((0..4).map(Expr::Sel).collect()));
        assert!(parse("selection | count() > 5", &n).unwrap_err().contains("correlation"));
        assert!(parse("selection and nope", &n).unwrap_err().contains("\"nope\""));
        assert!(parse("1 of x*", &n).unwrap_err().contains("x*"));
        assert!(parse("(selection", &n).is_err());
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab c") && glob("filter_*", "filter_") && glob("*", ""));
        assert!(!glob(&"*a".repeat(30), &"a".repeat(29)), "no exponential backtracking");
        let deep = format!("{}selection{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep, &n).unwrap_err().contains("deeper"));
    }
}
