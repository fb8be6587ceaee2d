//! Recursive-descent parser of TraceQL (precedence climbing for expressions), following the
//! grammar and precedences of Tempo's `pkg/traceql/expr.y` (grafana/tempo ad33aa8f): `&&` and
//! `||` share one level, left-associative, in fields and between spansets alike.

use crate::ast::*;
use crate::lexer::{tokenize, Token};
use crate::model::{SpanKind, StatusCode};
use crate::ParseError;

pub fn parse(query: &str) -> Result<RootExpr, ParseError> {
    let tokens = tokenize(query)?;
    let mut parser = Parser {
        query,
        tokens,
        at: 0,
    };
    parser.root()
}

pub(crate) struct Parser<'q> {
    pub(crate) query: &'q str,
    pub(crate) tokens: Vec<(Token, usize)>,
    pub(crate) at: usize,
}

/// Names that start a metrics stage after `|`.
pub(crate) const METRICS_FUNCTIONS: &[&str] = &[
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "avg_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
];

impl<'q> Parser<'q> {
    pub(crate) fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    pub(crate) fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.at + ahead).min(self.tokens.len() - 1)].0
    }

    pub(crate) fn position(&self) -> usize {
        self.tokens[self.at.min(self.tokens.len() - 1)].1
    }

    pub(crate) fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    pub(crate) fn error(&self, expected: &str) -> ParseError {
        ParseError::new(
            self.query,
            self.position(),
            format!("expected {expected}, found {}", self.peek().describe()),
        )
    }

    pub(crate) fn expect(&mut self, token: Token, expected: &str) -> Result<(), ParseError> {
        if *self.peek() == token {
            self.next();
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    pub(crate) fn is_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Token::Ident(i) if i == name)
    }

    /// Runs `parse`, rewinding to where it started when it fails.
    pub(crate) fn attempt<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        let start = self.at;
        let result = parse(self);
        if result.is_err() {
            self.at = start;
        }
        result
    }

    fn root(&mut self) -> Result<RootExpr, ParseError> {
        // A metrics query (possibly arithmetic between several), else a spanset pipeline; the
        // error reported is the one that got further into the query.
        let metrics = self.attempt(|p| {
            let m = p.metrics_root()?;
            p.root_end()?;
            Ok(m)
        });
        let root = match metrics {
            Ok(m) => Root::Metrics(m),
            Err(metrics_error) => match self.attempt(|p| {
                let pipeline = p.pipeline()?;
                p.root_end()?;
                Ok(pipeline)
            }) {
                Ok(pipeline) => Root::Spans(pipeline),
                Err(spans_error) => {
                    return Err(if metrics_error.position > spans_error.position {
                        metrics_error
                    } else {
                        spans_error
                    })
                }
            },
        };
        let hints = self.hints()?;
        if *self.peek() != Token::End {
            return Err(self.error("the end of the query"));
        }
        Ok(RootExpr { root, hints })
    }

    /// What may follow a whole query: its end or `with(...)`.
    fn root_end(&self) -> Result<(), ParseError> {
        match self.peek() {
            Token::End => Ok(()),
            Token::Ident(w) if w == "with" => Ok(()),
            _ => Err(self.error(
                "a spanset operator (&&, ||, >, >>, <, <<, ~, !>, &>, ...), '|', with(...) or the end of the query",
            )),
        }
    }

    /// `with(name=value, ...)`.
    fn hints(&mut self) -> Result<Vec<(String, Literal)>, ParseError> {
        let mut hints = Vec::new();
        if !self.is_ident("with") {
            return Ok(hints);
        }
        self.next();
        self.expect(Token::LParen, "'(' after with")?;
        loop {
            let Token::Ident(name) = self.peek().clone() else {
                return Err(self.error("a hint name such as most_recent or sample"));
            };
            self.next();
            self.expect(Token::Eq, "'=' after the hint name")?;
            let position = self.position();
            let value = match self.unary()? {
                FieldExpr::Literal(l) => l,
                _ => {
                    return Err(ParseError::new(
                        self.query,
                        position,
                        format!("expected a value (true, 0.1, 5, \"x\", ...) for hint {name}"),
                    ))
                }
            };
            hints.push((name, value));
            if *self.peek() == Token::Comma {
                self.next();
                continue;
            }
            self.expect(Token::RParen, "',' or ')' after a hint")?;
            return Ok(hints);
        }
    }

    pub(crate) fn pipeline(&mut self) -> Result<Pipeline, ParseError> {
        let spanset = self.spanset(0)?;
        let mut stages = Vec::new();
        while *self.peek() == Token::Pipe {
            if matches!(self.peek_at(1), Token::Ident(name) if METRICS_FUNCTIONS.contains(&name.as_str()) || name == "topk" || name == "bottomk")
            {
                // Left to the metrics parser: `{ } | rate()`.
                break;
            }
            self.next();
            stages.push(self.stage()?);
        }
        Ok(Pipeline { spanset, stages })
    }

    fn spanset_op(&self) -> Option<(SpansetOp, u8)> {
        use SpansetOp::*;
        Some(match self.peek() {
            Token::OrOr => (Or, 1),
            Token::AndAnd => (And, 1),
            Token::Gt => (Child, 2),
            Token::Descendant => (Descendant, 2),
            Token::Lt => (Parent, 2),
            Token::Ancestor => (Ancestor, 2),
            Token::Tilde => (Sibling, 2),
            Token::NotChild => (NotChild, 2),
            Token::NotDescendant => (NotDescendant, 2),
            Token::NotParent => (NotParent, 2),
            Token::NotAncestor => (NotAncestor, 2),
            Token::NotRegex => (NotSibling, 2),
            Token::UnionChild => (UnionChild, 2),
            Token::UnionDescendant => (UnionDescendant, 2),
            Token::UnionParent => (UnionParent, 2),
            Token::UnionAncestor => (UnionAncestor, 2),
            Token::UnionSibling => (UnionSibling, 2),
            _ => return None,
        })
    }

    fn spanset(&mut self, min_precedence: u8) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_primary()?;
        while let Some((op, precedence)) = self.spanset_op() {
            if precedence < min_precedence {
                break;
            }
            self.next();
            let rhs = self.spanset(precedence + 1)?;
            lhs = SpansetExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr, ParseError> {
        match self.peek() {
            Token::LBrace => Ok(SpansetExpr::Filter(self.filter()?)),
            Token::LParen => {
                self.next();
                let inner = self.pipeline()?;
                self.expect(Token::RParen, "')'")?;
                if inner.stages.is_empty() {
                    Ok(inner.spanset)
                } else {
                    Ok(SpansetExpr::Pipeline(Box::new(inner)))
                }
            }
            _ => Err(self.error("a spanset filter such as { status = error }")),
        }
    }

    /// `{ expr }` or `{}`.
    pub(crate) fn filter(&mut self) -> Result<Option<FieldExpr>, ParseError> {
        self.expect(Token::LBrace, "'{'")?;
        if *self.peek() == Token::RBrace {
            self.next();
            return Ok(None);
        }
        let expr = self.field(0)?;
        self.expect(Token::RBrace, "'}' or an operator")?;
        Ok(Some(expr))
    }

    /// `a, b, c)` up to and including the closing parenthesis.
    pub(crate) fn field_list(&mut self) -> Result<Vec<FieldExpr>, ParseError> {
        let mut fields = vec![self.field(0)?];
        while *self.peek() == Token::Comma {
            self.next();
            fields.push(self.field(0)?);
        }
        self.expect(Token::RParen, "')' or ','")?;
        Ok(fields)
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        const EXPECTED: &str = "count(), avg(), min(), max(), sum(), select(), by(), coalesce(), a { filter } or a metrics function (rate(), count_over_time(), ...) after '|'";
        if *self.peek() == Token::LBrace {
            return Ok(Stage::Filter(self.filter()?));
        }
        let Token::Ident(name) = self.peek().clone() else {
            return Err(self.error(EXPECTED));
        };
        let function = match name.as_str() {
            "count" => Aggregate::Count,
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            "select" => {
                self.next();
                self.expect(Token::LParen, "'(' after select")?;
                return Ok(Stage::Select(self.field_list()?));
            }
            "by" => {
                self.next();
                self.expect(Token::LParen, "'(' after by")?;
                let field = self.field(0)?;
                self.expect(Token::RParen, "')' after the by() expression")?;
                return Ok(Stage::By(field));
            }
            "coalesce" => {
                self.next();
                self.expect(Token::LParen, "'(' after coalesce")?;
                self.expect(Token::RParen, "')': coalesce() takes no arguments")?;
                return Ok(Stage::Coalesce);
            }
            _ => return Err(self.error(EXPECTED)),
        };
        self.next();
        self.expect(Token::LParen, &format!("'(' after {name}"))?;
        let field = if function == Aggregate::Count {
            None
        } else {
            Some(self.field(0)?)
        };
        self.expect(Token::RParen, "')'")?;
        let op = match self.comparison() {
            Some(op) => op,
            None => {
                return Err(self.error(&format!(
                    "a comparison (=, !=, >, >=, <, <=) after {name}()"
                )))
            }
        };
        let position = self.position();
        let value = match self.unary()? {
            FieldExpr::Literal(value) => value,
            _ => {
                return Err(ParseError::new(
                    self.query,
                    position,
                    format!("expected a number or duration to compare {name}() with"),
                ))
            }
        };
        Ok(Stage::Aggregate {
            function,
            field,
            op,
            value,
        })
    }

    /// A comparison operator, consumed.
    pub(crate) fn comparison(&mut self) -> Option<BinaryOp> {
        let op = match self.peek() {
            Token::Eq => BinaryOp::Eq,
            Token::NotEq => BinaryOp::NotEq,
            Token::Gt => BinaryOp::Gt,
            Token::Gte => BinaryOp::Gte,
            Token::Lt => BinaryOp::Lt,
            Token::Lte => BinaryOp::Lte,
            _ => return None,
        };
        self.next();
        Some(op)
    }

    fn binary_op(&self) -> Option<(BinaryOp, u8, bool)> {
        // (operator, precedence, right-associative)
        Some(match self.peek() {
            Token::OrOr => (BinaryOp::Or, 1, false),
            Token::AndAnd => (BinaryOp::And, 1, false),
            Token::Eq => (BinaryOp::Eq, 2, false),
            Token::NotEq => (BinaryOp::NotEq, 2, false),
            Token::Gt => (BinaryOp::Gt, 2, false),
            Token::Gte => (BinaryOp::Gte, 2, false),
            Token::Lt => (BinaryOp::Lt, 2, false),
            Token::Lte => (BinaryOp::Lte, 2, false),
            Token::Regex => (BinaryOp::Regex, 2, false),
            Token::NotRegex => (BinaryOp::NotRegex, 2, false),
            Token::Plus => (BinaryOp::Add, 3, false),
            Token::Minus => (BinaryOp::Sub, 3, false),
            Token::Star => (BinaryOp::Mul, 4, false),
            Token::Slash => (BinaryOp::Div, 4, false),
            Token::Percent => (BinaryOp::Mod, 4, false),
            Token::Caret => (BinaryOp::Pow, 5, true),
            _ => return None,
        })
    }

    pub(crate) fn field(&mut self, min_precedence: u8) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, precedence, right)) = self.binary_op() {
            if precedence < min_precedence {
                break;
            }
            let op_position = self.position();
            self.next();
            if matches!(self.peek(), Token::RBrace | Token::RParen | Token::End) {
                return Err(self.error(&format!(
                    "a value after {}",
                    Token::describe(&self.tokens[self.at - 1].0)
                )));
            }
            let rhs = self.field(if right { precedence } else { precedence + 1 })?;
            let regex = if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
                match &rhs {
                    FieldExpr::Literal(Literal::Str(pattern)) => Some(Pattern(
                        // Anchored, as Tempo matches the whole value.
                        regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                            ParseError::new(
                                self.query,
                                op_position,
                                format!("invalid regular expression {pattern:?}: {e}"),
                            )
                        })?,
                    )),
                    _ => {
                        return Err(ParseError::new(
                            self.query,
                            op_position,
                            "a regular expression must be a string",
                        ))
                    }
                }
            } else {
                None
            };
            lhs = FieldExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                regex,
            };
        }
        Ok(lhs)
    }

    pub(crate) fn unary(&mut self) -> Result<FieldExpr, ParseError> {
        match self.peek() {
            Token::Not => {
                self.next();
                Ok(FieldExpr::Not(Box::new(self.unary()?)))
            }
            Token::Minus => {
                self.next();
                // A negative number is a literal, so that `-1` prints and parses back the same.
                Ok(match self.unary()? {
                    FieldExpr::Literal(Literal::Int(i)) if i != i64::MIN => {
                        FieldExpr::Literal(Literal::Int(-i))
                    }
                    FieldExpr::Literal(Literal::Float(f)) if f > 0.0 => {
                        FieldExpr::Literal(Literal::Float(-f))
                    }
                    other => FieldExpr::Negate(Box::new(other)),
                })
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<FieldExpr, ParseError> {
        let position = self.position();
        Ok(match self.next() {
            Token::Str(s) => FieldExpr::Literal(Literal::Str(s)),
            Token::Int(i) => FieldExpr::Literal(Literal::Int(i)),
            Token::Float(f) => FieldExpr::Literal(Literal::Float(f)),
            Token::Duration(d) => FieldExpr::Literal(Literal::Duration(d)),
            Token::LParen => {
                let inner = self.field(0)?;
                self.expect(Token::RParen, "')'")?;
                inner
            }
            Token::Ident(name) => self.identifier(&name, position)?,
            _ => {
                self.at -= 1;
                return Err(self.error("a value, an attribute (span.x, resource.x, event.x, link.x, instrumentation.x, .x) or an intrinsic (name, status, duration, span:id, ...)"));
            }
        })
    }

    fn identifier(&self, name: &str, position: usize) -> Result<FieldExpr, ParseError> {
        let literal = |l| Ok(FieldExpr::Literal(l));
        match name {
            "true" => return literal(Literal::Bool(true)),
            "false" => return literal(Literal::Bool(false)),
            "nil" => return literal(Literal::Nil),
            "error" => return literal(Literal::Status(StatusCode::Error)),
            "ok" => return literal(Literal::Status(StatusCode::Ok)),
            "unset" => return literal(Literal::Status(StatusCode::Unset)),
            "server" => return literal(Literal::Kind(SpanKind::Server)),
            "client" => return literal(Literal::Kind(SpanKind::Client)),
            "producer" => return literal(Literal::Kind(SpanKind::Producer)),
            "consumer" => return literal(Literal::Kind(SpanKind::Consumer)),
            "internal" => return literal(Literal::Kind(SpanKind::Internal)),
            "unspecified" => return literal(Literal::Kind(SpanKind::Unspecified)),
            "minInt" => return literal(Literal::Int(i64::MIN)),
            "maxInt" => return literal(Literal::Int(i64::MAX)),
            _ => {}
        }
        if let Some(intrinsic) = Intrinsic::from_name(name) {
            return Ok(FieldExpr::Intrinsic(intrinsic));
        }
        const SCOPES: &[(&str, Scope)] = &[
            ("span.", Scope::Span),
            ("resource.", Scope::Resource),
            ("event.", Scope::Event),
            ("link.", Scope::Link),
            ("instrumentation.", Scope::Instrumentation),
            (".", Scope::Unscoped),
        ];
        let Some((scope, rest)) = SCOPES
            .iter()
            .find_map(|(prefix, scope)| Some((*scope, name.strip_prefix(prefix)?)))
        else {
            let hint = if let Some((scope, field)) = name.split_once(':') {
                format!("unknown intrinsic {field:?} of scope {scope:?}")
            } else {
                format!("unknown identifier {name:?}: attributes are written span.{name}, resource.{name} or .{name}")
            };
            return Err(ParseError::new(
                self.query,
                position,
                format!("{hint}; intrinsics are {}", intrinsic_list()),
            ));
        };
        let attribute = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => unescape(quoted),
            None => rest.to_string(),
        };
        if attribute.is_empty() {
            return Err(ParseError::new(
                self.query,
                position,
                "expected an attribute name after the scope",
            ));
        }
        Ok(FieldExpr::Attribute {
            scope,
            name: attribute,
        })
    }
}

fn unescape(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn intrinsic_list() -> String {
    let names: Vec<&str> = Intrinsic::SPELLINGS.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}
