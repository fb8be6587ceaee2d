//! The metrics part of the grammar: `{ ... } | rate() by (...)`, second stages (`topk`,
//! `bottomk`, comparisons) and arithmetic between metrics queries and numbers.

use crate::ast::*;
use crate::lexer::Token;
use crate::parser::{Parser, METRICS_FUNCTIONS};
use crate::ParseError;

impl Parser<'_> {
    /// `sum second_stage*`.
    pub(crate) fn metrics_root(&mut self) -> Result<MetricsExpr, ParseError> {
        let expr = self.metrics_sum()?;
        let stages = self.second_stages()?;
        if stages.is_empty() {
            Ok(expr)
        } else {
            Ok(MetricsExpr::Staged {
                inner: Box::new(expr),
                stages,
            })
        }
    }

    fn metrics_sum(&mut self) -> Result<MetricsExpr, ParseError> {
        self.metrics_left_assoc(Self::metrics_product, |token| match token {
            Token::Plus => Some(BinaryOp::Add),
            Token::Minus => Some(BinaryOp::Sub),
            _ => None,
        })
    }

    fn metrics_product(&mut self) -> Result<MetricsExpr, ParseError> {
        self.metrics_left_assoc(Self::metrics_operand, |token| match token {
            Token::Star => Some(BinaryOp::Mul),
            Token::Slash => Some(BinaryOp::Div),
            _ => None,
        })
    }

    /// One precedence level of metrics arithmetic: `operand (op operand)*`, left-associative.
    fn metrics_left_assoc(
        &mut self,
        operand: fn(&mut Self) -> Result<MetricsExpr, ParseError>,
        operator: fn(&Token) -> Option<BinaryOp>,
    ) -> Result<MetricsExpr, ParseError> {
        let mut lhs = operand(self)?;
        while let Some(op) = operator(self.peek()) {
            self.next();
            let rhs = operand(self)?;
            lhs = MetricsExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn metrics_operand(&mut self) -> Result<MetricsExpr, ParseError> {
        let negative = *self.peek() == Token::Minus;
        let number_at = if negative { 1 } else { 0 };
        if let Some(value) = match self.peek_at(number_at) {
            Token::Int(i) => Some(*i as f64),
            Token::Float(f) => Some(*f),
            Token::Duration(d) => Some(*d as f64 / 1e9),
            _ => None,
        } {
            self.at += number_at + 1;
            return Ok(MetricsExpr::Scalar(if negative { -value } else { value }));
        }
        if negative {
            self.next();
            return Err(self.error("a number after '-'"));
        }
        let pipeline = self.attempt(|p| p.metrics_pipeline());
        match pipeline {
            Ok(m) => Ok(m),
            Err(pipeline_error) if *self.peek() == Token::LParen => {
                match self.attempt(|p| {
                    p.next();
                    let inner = p.metrics_root()?;
                    p.expect(Token::RParen, "')'")?;
                    Ok(inner)
                }) {
                    Ok(inner) => Ok(inner),
                    Err(e) if e.position >= pipeline_error.position => Err(e),
                    Err(_) => Err(pipeline_error),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `pipeline | metricsFunction(...) [by (...)]`.
    fn metrics_pipeline(&mut self) -> Result<MetricsExpr, ParseError> {
        let pipeline = self.pipeline()?;
        if *self.peek() != Token::Pipe {
            return Err(self.error(
                "'|' and a metrics function (rate(), count_over_time(), quantile_over_time(), ...)",
            ));
        }
        self.next();
        let aggregation = self.metrics_aggregation()?;
        Ok(MetricsExpr::Pipeline {
            pipeline,
            aggregation,
        })
    }

    fn metrics_aggregation(&mut self) -> Result<MetricsAggregation, ParseError> {
        let Token::Ident(name) = self.peek().clone() else {
            return Err(self.error("a metrics function"));
        };
        if !METRICS_FUNCTIONS.contains(&name.as_str()) {
            return Err(self.error(&format!(
                "a metrics function ({})",
                METRICS_FUNCTIONS.join(", ")
            )));
        }
        self.next();
        self.expect(Token::LParen, &format!("'(' after {name}"))?;
        let function = match name.as_str() {
            "rate" | "count_over_time" => {
                self.expect(Token::RParen, &format!("')': {name}() takes no arguments"))?;
                if name == "rate" {
                    MetricsFunction::Rate
                } else {
                    MetricsFunction::CountOverTime
                }
            }
            "quantile_over_time" => {
                let field = self.field(0)?;
                let mut quantiles = Vec::new();
                while *self.peek() == Token::Comma {
                    self.next();
                    let position = self.position();
                    let q = match self.next() {
                        Token::Int(i) => i as f64,
                        Token::Float(f) => f,
                        _ => {
                            self.at -= 1;
                            return Err(self.error("a quantile between 0 and 1"));
                        }
                    };
                    if !(0.0..=1.0).contains(&q) {
                        return Err(ParseError::new(
                            self.query,
                            position,
                            format!("quantile must be between 0 and 1: {q}"),
                        ));
                    }
                    quantiles.push(q);
                }
                if quantiles.is_empty() {
                    return Err(self.error("',' and at least one quantile (0.5, 0.9, ...)"));
                }
                self.expect(Token::RParen, "',' or ')'")?;
                MetricsFunction::QuantileOverTime(field, quantiles)
            }
            "compare" => {
                let selection = self.filter()?;
                let mut numbers = Vec::new();
                while *self.peek() == Token::Comma {
                    self.next();
                    match self.next() {
                        Token::Int(i) if i >= 0 => numbers.push(i as u64),
                        _ => {
                            self.at -= 1;
                            return Err(self.error("a non-negative integer"));
                        }
                    }
                }
                self.expect(Token::RParen, "',' or ')'")?;
                let (top, start, end) = match numbers[..] {
                    [] => (10, 0, 0),
                    [top] => (top, 0, 0),
                    [top, start, end] => (top, start, end),
                    _ => {
                        return Err(ParseError::new(
                            self.query,
                            self.tokens[self.at - 1].1,
                            "compare() takes a filter, then topN, or topN, start and end",
                        ))
                    }
                };
                MetricsFunction::Compare {
                    selection,
                    top,
                    start,
                    end,
                }
            }
            _ => {
                let field = self.field(0)?;
                self.expect(Token::RParen, &format!("')' after the field of {name}()"))?;
                match name.as_str() {
                    "min_over_time" => MetricsFunction::MinOverTime(field),
                    "max_over_time" => MetricsFunction::MaxOverTime(field),
                    "sum_over_time" => MetricsFunction::SumOverTime(field),
                    "avg_over_time" => MetricsFunction::AvgOverTime(field),
                    _ => MetricsFunction::HistogramOverTime(field),
                }
            }
        };
        let mut by = Vec::new();
        if self.is_ident("by") {
            self.next();
            self.expect(Token::LParen, "'(' after by")?;
            by = self.field_list()?;
        }
        Ok(MetricsAggregation { function, by })
    }

    /// `| topk(n)`, `| bottomk(n)`, `> 5`, ...
    fn second_stages(&mut self) -> Result<Vec<SecondStage>, ParseError> {
        let mut stages = Vec::new();
        loop {
            if *self.peek() == Token::Pipe {
                let Token::Ident(name) = self.peek_at(1).clone() else {
                    return Err(self.error("the end of the metrics query"));
                };
                if name != "topk" && name != "bottomk" {
                    self.next();
                    return Err(self.error("topk(n) or bottomk(n) after a metrics function"));
                }
                self.next();
                self.next();
                self.expect(Token::LParen, &format!("'(' after {name}"))?;
                let k = match self.next() {
                    Token::Int(k) if k > 0 => k as u64,
                    _ => {
                        self.at -= 1;
                        return Err(self.error(&format!("a positive integer in {name}()")));
                    }
                };
                self.expect(Token::RParen, "')'")?;
                stages.push(if name == "topk" {
                    SecondStage::TopK(k)
                } else {
                    SecondStage::BottomK(k)
                });
                continue;
            }
            let start = self.at;
            let Some(op) = self.comparison() else {
                return Ok(stages);
            };
            let negative = *self.peek() == Token::Minus;
            if negative {
                self.next();
            }
            let value = match self.next() {
                Token::Int(i) => i as f64,
                Token::Float(f) => f,
                Token::Duration(d) => d as f64 / 1e9,
                _ => {
                    self.at -= 1;
                    let e = self.error("a number to compare the series with");
                    self.at = start;
                    return Err(e);
                }
            };
            stages.push(SecondStage::Filter {
                op,
                value: if negative { -value } else { value },
            });
        }
    }
}
