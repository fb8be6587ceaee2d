//! Recursive-descent parser of TraceQL (precedence climbing for expressions).

use crate::ast::*;
use crate::lexer::{tokenize, Token};
use crate::model::{SpanKind, StatusCode};
use crate::ParseError;

pub fn parse(query: &str) -> Result<Pipeline, ParseError> {
    let tokens = tokenize(query)?;
    let mut parser = Parser {
        query,
        tokens,
        at: 0,
    };
    let pipeline = parser.pipeline()?;
    parser.expect_end()?;
    Ok(pipeline)
}

struct Parser<'q> {
    query: &'q str,
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl<'q> Parser<'q> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    fn position(&self) -> usize {
        self.tokens[self.at.min(self.tokens.len() - 1)].1
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn error(&self, expected: &str) -> ParseError {
        ParseError::new(
            self.query,
            self.position(),
            format!("expected {expected}, found {}", self.peek().describe()),
        )
    }

    fn expect(&mut self, token: Token, expected: &str) -> Result<(), ParseError> {
        if *self.peek() == token {
            self.next();
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        if *self.peek() == Token::End {
            Ok(())
        } else {
            Err(self.error("a spanset operator (&&, ||, >, >>, <, <<, ~) or '|'"))
        }
    }

    fn pipeline(&mut self) -> Result<Pipeline, ParseError> {
        let spanset = self.spanset(0)?;
        let mut stages = Vec::new();
        while *self.peek() == Token::Pipe {
            self.next();
            stages.push(self.stage()?);
        }
        Ok(Pipeline { spanset, stages })
    }

    fn spanset_op(&self) -> Option<(SpansetOp, u8)> {
        Some(match self.peek() {
            Token::OrOr => (SpansetOp::Or, 1),
            Token::AndAnd => (SpansetOp::And, 2),
            Token::Gt => (SpansetOp::Child, 3),
            Token::Descendant => (SpansetOp::Descendant, 3),
            Token::Lt => (SpansetOp::Parent, 3),
            Token::Ancestor => (SpansetOp::Ancestor, 3),
            Token::Tilde => (SpansetOp::Sibling, 3),
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
    fn filter(&mut self) -> Result<Option<FieldExpr>, ParseError> {
        self.expect(Token::LBrace, "'{'")?;
        if *self.peek() == Token::RBrace {
            self.next();
            return Ok(None);
        }
        let expr = self.field(0)?;
        self.expect(Token::RBrace, "'}' or an operator")?;
        Ok(Some(expr))
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        if *self.peek() == Token::LBrace {
            return Ok(Stage::Filter(self.filter()?));
        }
        let Token::Ident(name) = self.peek().clone() else {
            return Err(self
                .error("count(), avg(), min(), max(), sum(), select() or a { filter } after '|'"));
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
                let mut fields = vec![self.field(0)?];
                while *self.peek() == Token::Comma {
                    self.next();
                    fields.push(self.field(0)?);
                }
                self.expect(Token::RParen, "')' or ','")?;
                return Ok(Stage::Select(fields));
            }
            "by" | "coalesce" | "rate" | "count_over_time" | "quantile_over_time" | "histogram_over_time" => {
                return Err(ParseError::new(
                    self.query,
                    self.position(),
                    format!("{name}() is not supported yet (supported after '|': count, avg, min, max, sum, select, {{ filter }})"),
                ))
            }
            _ => return Err(self.error("count(), avg(), min(), max(), sum(), select() or a { filter } after '|'")),
        };
        self.next();
        self.expect(Token::LParen, &format!("'(' after {name}"))?;
        let field = if function == Aggregate::Count {
            None
        } else {
            Some(self.field(0)?)
        };
        self.expect(Token::RParen, "')'")?;
        let op = match self.next() {
            Token::Eq => BinaryOp::Eq,
            Token::NotEq => BinaryOp::NotEq,
            Token::Gt => BinaryOp::Gt,
            Token::Gte => BinaryOp::Gte,
            Token::Lt => BinaryOp::Lt,
            Token::Lte => BinaryOp::Lte,
            _ => {
                self.at -= 1;
                return Err(self.error(&format!(
                    "a comparison (=, !=, >, >=, <, <=) after {name}()"
                )));
            }
        };
        let value = match self.primary()? {
            FieldExpr::Literal(value) => value,
            _ => {
                return Err(ParseError::new(
                    self.query,
                    self.tokens[self.at - 1].1,
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

    fn binary_op(&self) -> Option<(BinaryOp, u8)> {
        Some(match self.peek() {
            Token::OrOr => (BinaryOp::Or, 1),
            Token::AndAnd => (BinaryOp::And, 2),
            Token::Eq => (BinaryOp::Eq, 3),
            Token::NotEq => (BinaryOp::NotEq, 3),
            Token::Gt => (BinaryOp::Gt, 3),
            Token::Gte => (BinaryOp::Gte, 3),
            Token::Lt => (BinaryOp::Lt, 3),
            Token::Lte => (BinaryOp::Lte, 3),
            Token::Regex => (BinaryOp::Regex, 3),
            Token::NotRegex => (BinaryOp::NotRegex, 3),
            Token::Plus => (BinaryOp::Add, 4),
            Token::Minus => (BinaryOp::Sub, 4),
            Token::Star => (BinaryOp::Mul, 5),
            Token::Slash => (BinaryOp::Div, 5),
            _ => return None,
        })
    }

    fn field(&mut self, min_precedence: u8) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, precedence)) = self.binary_op() {
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
            let rhs = self.field(precedence + 1)?;
            let regex = if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
                match &rhs {
                    FieldExpr::Literal(Literal::Str(pattern)) => Some(
                        // Anchored, as Tempo matches the whole value.
                        regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                            ParseError::new(
                                self.query,
                                op_position,
                                format!("invalid regular expression {pattern:?}: {e}"),
                            )
                        })?,
                    ),
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

    fn unary(&mut self) -> Result<FieldExpr, ParseError> {
        match self.peek() {
            Token::Not => {
                self.next();
                Ok(FieldExpr::Not(Box::new(self.unary()?)))
            }
            Token::Minus => {
                self.next();
                Ok(FieldExpr::Negate(Box::new(self.unary()?)))
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
                return Err(self.error("a value, an attribute (span.x, resource.x, .x) or an intrinsic (name, status, duration, ...)"));
            }
        })
    }

    fn identifier(&self, name: &str, position: usize) -> Result<FieldExpr, ParseError> {
        let literal = |l| Ok(FieldExpr::Literal(l));
        let intrinsic = |i| Ok(FieldExpr::Intrinsic(i));
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
            "name" | "span:name" => return intrinsic(Intrinsic::Name),
            "status" | "span:status" => return intrinsic(Intrinsic::Status),
            "statusMessage" | "span:statusMessage" => return intrinsic(Intrinsic::StatusMessage),
            "kind" | "span:kind" => return intrinsic(Intrinsic::Kind),
            "duration" | "span:duration" => return intrinsic(Intrinsic::Duration),
            "rootName" | "trace:rootName" => return intrinsic(Intrinsic::RootName),
            "rootServiceName" | "trace:rootService" => {
                return intrinsic(Intrinsic::RootServiceName)
            }
            "traceDuration" | "trace:duration" => return intrinsic(Intrinsic::TraceDuration),
            _ => {}
        }
        let (scope, rest) = if let Some(rest) = name.strip_prefix("span.") {
            (Scope::Span, rest)
        } else if let Some(rest) = name.strip_prefix("resource.") {
            (Scope::Resource, rest)
        } else if let Some(rest) = name.strip_prefix('.') {
            (Scope::Unscoped, rest)
        } else {
            return Err(ParseError::new(
                self.query,
                position,
                format!("unknown identifier {name:?}: attributes are written span.{name}, resource.{name} or .{name}; intrinsics are name, status, statusMessage, kind, duration, rootName, rootServiceName, traceDuration"),
            ));
        };
        let attribute = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\""),
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
