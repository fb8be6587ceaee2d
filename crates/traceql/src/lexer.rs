//! Tokens of TraceQL, with their byte positions (for error messages).

use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    AndAnd,
    OrOr,
    Not,
    Eq,
    NotEq,
    Gt,
    Gte,
    Lt,
    Lte,
    Regex,
    NotRegex,
    Descendant,
    Ancestor,
    Tilde,
    /// `!>`, `!>>`, `!<`, `!<<` (`!~` is `NotRegex`, read as not-sibling between spansets).
    NotChild,
    NotDescendant,
    NotParent,
    NotAncestor,
    /// `&>`, `&>>`, `&<`, `&<<`, `&~`.
    UnionChild,
    UnionDescendant,
    UnionParent,
    UnionAncestor,
    UnionSibling,
    Percent,
    Caret,
    Plus,
    Minus,
    Star,
    Slash,
    Str(String),
    Int(i64),
    Float(f64),
    /// A duration in nanoseconds.
    Duration(u64),
    /// An identifier or keyword (`name`, `true`, `count`, `span.http.method`, `.foo`, ...).
    Ident(String),
    End,
}

impl Token {
    pub fn describe(&self) -> String {
        match self {
            Token::Str(s) => format!("string {s:?}"),
            Token::Int(i) => format!("number {i}"),
            Token::Float(f) => format!("number {f}"),
            Token::Duration(d) => format!("duration {d}ns"),
            Token::Ident(i) => format!("{i:?}"),
            Token::End => "the end of the query".into(),
            other => format!("{:?}", symbol(other)),
        }
    }
}

fn symbol(token: &Token) -> &'static str {
    match token {
        Token::LBrace => "{",
        Token::RBrace => "}",
        Token::LParen => "(",
        Token::RParen => ")",
        Token::Comma => ",",
        Token::Pipe => "|",
        Token::AndAnd => "&&",
        Token::OrOr => "||",
        Token::Not => "!",
        Token::Eq => "=",
        Token::NotEq => "!=",
        Token::Gt => ">",
        Token::Gte => ">=",
        Token::Lt => "<",
        Token::Lte => "<=",
        Token::Regex => "=~",
        Token::NotRegex => "!~",
        Token::Descendant => ">>",
        Token::Ancestor => "<<",
        Token::Tilde => "~",
        Token::NotChild => "!>",
        Token::NotDescendant => "!>>",
        Token::NotParent => "!<",
        Token::NotAncestor => "!<<",
        Token::UnionChild => "&>",
        Token::UnionDescendant => "&>>",
        Token::UnionParent => "&<",
        Token::UnionAncestor => "&<<",
        Token::UnionSibling => "&~",
        Token::Percent => "%",
        Token::Caret => "^",
        Token::Plus => "+",
        Token::Minus => "-",
        Token::Star => "*",
        Token::Slash => "/",
        _ => "?",
    }
}

/// Splits the query into tokens, each with its byte offset.
pub fn tokenize(query: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two = bytes.get(i..i + 2).unwrap_or(&[]);
        let three = bytes.get(i..i + 3).unwrap_or(&[]);
        let (token, len) = match (three, two) {
            (b"!>>", _) => (Token::NotDescendant, 3),
            (b"!<<", _) => (Token::NotAncestor, 3),
            (b"&>>", _) => (Token::UnionDescendant, 3),
            (b"&<<", _) => (Token::UnionAncestor, 3),
            (_, b"!>") => (Token::NotChild, 2),
            (_, b"!<") => (Token::NotParent, 2),
            (_, b"&>") => (Token::UnionChild, 2),
            (_, b"&<") => (Token::UnionParent, 2),
            (_, b"&~") => (Token::UnionSibling, 2),
            (_, two) => match two {
                b"&&" => (Token::AndAnd, 2),
                b"||" => (Token::OrOr, 2),
                b"!=" => (Token::NotEq, 2),
                b">=" => (Token::Gte, 2),
                b"<=" => (Token::Lte, 2),
                b"=~" => (Token::Regex, 2),
                b"!~" => (Token::NotRegex, 2),
                b">>" => (Token::Descendant, 2),
                b"<<" => (Token::Ancestor, 2),
                _ => match c {
                    b'{' => (Token::LBrace, 1),
                    b'}' => (Token::RBrace, 1),
                    b'(' => (Token::LParen, 1),
                    b')' => (Token::RParen, 1),
                    b',' => (Token::Comma, 1),
                    b'|' => (Token::Pipe, 1),
                    b'!' => (Token::Not, 1),
                    b'=' => (Token::Eq, 1),
                    b'>' => (Token::Gt, 1),
                    b'<' => (Token::Lt, 1),
                    b'~' => (Token::Tilde, 1),
                    b'+' => (Token::Plus, 1),
                    b'-' => (Token::Minus, 1),
                    b'*' => (Token::Star, 1),
                    b'/' => (Token::Slash, 1),
                    b'%' => (Token::Percent, 1),
                    b'^' => (Token::Caret, 1),
                    b'"' | b'`' => {
                        let (text, len) = string(query, i)?;
                        (Token::Str(text), len)
                    }
                    b'0'..=b'9' => number(query, i)?,
                    _ if c == b'.' && bytes.get(i + 1).is_some_and(|n| n.is_ascii_digit()) => {
                        number(query, i)?
                    }
                    _ if is_ident_start(c) => {
                        let len = identifier(query, i)?;
                        (Token::Ident(query[i..i + len].to_string()), len)
                    }
                    _ => {
                        let ch = query[i..].chars().next().unwrap_or('?');
                        return Err(ParseError::new(
                            query,
                            i,
                            format!("unexpected character {ch:?}"),
                        ));
                    }
                },
            },
        };
        tokens.push((token, start));
        i += len;
    }
    tokens.push((Token::End, query.len()));
    Ok(tokens)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'.' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-') || c >= 0x80
}

/// An identifier: letters, digits, `_ . : / -`, and quoted parts (`span."a b"`).
fn identifier(query: &str, start: usize) -> Result<usize, ParseError> {
    let bytes = query.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'"' && i > start && bytes[i - 1] == b'.' {
            let (_, len) = string(query, i)?;
            i += len;
            continue;
        }
        if !is_ident_char(bytes[i]) {
            break;
        }
        // A '-' only continues a name when a letter follows (`http.status-code`), so `a-1` stays
        // arithmetic.
        if bytes[i] == b'-' && !bytes.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic()) {
            break;
        }
        i += 1;
    }
    Ok(i - start)
}

fn string(query: &str, start: usize) -> Result<(String, usize), ParseError> {
    let bytes = query.as_bytes();
    let quote = bytes[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < bytes.len() {
        let c = bytes[i];
        if c == quote {
            return Ok((text, i + 1 - start));
        }
        if c == b'\\' && quote == b'"' {
            let escaped = bytes.get(i + 1).copied();
            match escaped {
                Some(b'n') => text.push('\n'),
                Some(b't') => text.push('\t'),
                Some(b'\\') => text.push('\\'),
                Some(b'"') => text.push('"'),
                _ => return Err(ParseError::new(query, i, "invalid escape in string")),
            }
            i += 2;
            continue;
        }
        let ch = query[i..].chars().next().unwrap_or('?');
        text.push(ch);
        i += ch.len_utf8();
    }
    Err(ParseError::new(query, start, "unterminated string"))
}

const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// A number, or a duration such as `1.5s` or `1h30m`.
fn number(query: &str, start: usize) -> Result<(Token, usize), ParseError> {
    let bytes = query.as_bytes();
    let mut i = start;
    let mut total_nanos: f64 = 0.0;
    let mut is_duration = false;
    loop {
        let num_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let digits = &query[num_start..i];
        let rest = &query[i..];
        // The longest unit that the text starts with, not followed by another letter.
        let unit = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .filter(|(u, _)| {
                !rest[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
            });
        match unit {
            Some((u, nanos)) => {
                let value: f64 = digits.parse().map_err(|_| {
                    ParseError::new(query, num_start, format!("invalid number {digits:?}"))
                })?;
                total_nanos += value * (*nanos as f64);
                i += u.len();
                is_duration = true;
                if i < bytes.len() && bytes[i].is_ascii_digit() {
                    continue;
                }
                break;
            }
            None if is_duration => {
                return Err(ParseError::new(
                    query,
                    num_start,
                    "a duration needs a unit (ns, us, ms, s, m, h)",
                ));
            }
            None => {
                if i < bytes.len()
                    && is_ident_char(bytes[i])
                    && bytes[i] != b'.'
                    && bytes[i] != b'-'
                {
                    let end = query[i..].chars().next().map_or(i, |c| i + c.len_utf8());
                    return Err(ParseError::new(
                        query,
                        i,
                        format!("unknown unit in {:?}", &query[start..end]),
                    ));
                }
                let token = if digits.contains('.') {
                    Token::Float(digits.parse().map_err(|_| {
                        ParseError::new(query, num_start, format!("invalid number {digits:?}"))
                    })?)
                } else {
                    Token::Int(digits.parse().map_err(|_| {
                        ParseError::new(query, num_start, format!("invalid number {digits:?}"))
                    })?)
                };
                return Ok((token, i - start));
            }
        }
    }
    Ok((Token::Duration(total_nanos.round() as u64), i - start))
}
