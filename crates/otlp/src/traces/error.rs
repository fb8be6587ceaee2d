//! Decode errors, with the path of the offending field.

use std::fmt::Write as _;

use super::schema::Message;
use crate::wire::{read_varint, FieldIter, WireError, WireType};

/// Why an encoded `ExportTraceServiceRequest` was refused.
///
/// Receivers answer these with HTTP 400 / gRPC `InvalidArgument`. `path` names the field, e.g.
/// `resource_spans[0].scope_spans[1].spans[3].trace_id`, or `request` for the top level.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{path}: {error}")]
    Wire { path: String, error: WireError },
    #[error("{path}: wrong wire type {found}, expected {expected}")]
    WrongWireType {
        path: String,
        expected: WireType,
        found: WireType,
    },
    #[error("{path}: expected {expected} bytes, got {actual}")]
    InvalidIdLength {
        path: String,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: string is not valid UTF-8")]
    InvalidUtf8 { path: String },
    #[error("{path}: messages nested more than {limit} levels deep")]
    TooDeep { path: String, limit: u32 },
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl DecodeError {
    /// The path of the offending field, when known.
    pub fn path(&self) -> Option<&str> {
        match self {
            DecodeError::Wire { path, .. }
            | DecodeError::WrongWireType { path, .. }
            | DecodeError::InvalidIdLength { path, .. }
            | DecodeError::InvalidUtf8 { path }
            | DecodeError::TooDeep { path, .. } => Some(path),
            DecodeError::Protobuf(_) => None,
        }
    }
}

/// What is wrong, before the path is known.
#[derive(Debug)]
pub(crate) enum Problem {
    Wire(WireError),
    WrongWireType { expected: WireType, found: WireType },
    IdLength { expected: usize, actual: usize },
    InvalidUtf8,
    TooDeep { limit: u32 },
}

/// A validation failure on its way up the message tree.
///
/// Each enclosing message appends the segment naming the field the failure came from, so the
/// success path never builds paths. Boxed to keep `Result<(), Failure>` one word wide.
#[derive(Debug)]
pub(crate) struct Failure(Box<FailureInner>);

#[derive(Debug)]
struct FailureInner {
    problem: Problem,
    /// Innermost segment first.
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    message: Message,
    number: u32,
    index: Option<usize>,
}

impl Failure {
    #[cold]
    pub(crate) fn new(problem: Problem) -> Failure {
        Failure(Box::new(FailureInner {
            problem,
            segments: Vec::new(),
        }))
    }

    /// Records that the failure happened inside the field of `message` whose tag starts at
    /// `field_start` in `message_bytes`.
    #[cold]
    pub(crate) fn within(
        mut self,
        message: Message,
        message_bytes: &[u8],
        field_start: usize,
    ) -> Failure {
        let mut pos = field_start;
        let number = read_varint(message_bytes, &mut pos).map_or(0, |key| (key >> 3) as u32);
        let repeated = message.field(number).is_some_and(|field| field.repeated);
        // The index among same-numbered siblings is only needed for the message, so it is counted
        // here rather than tracked while walking.
        let index = repeated.then(|| {
            FieldIter::new(&message_bytes[..field_start])
                .filter(|field| matches!(field, Ok((n, _)) if *n == number))
                .count()
        });
        self.0.segments.push(Segment {
            message,
            number,
            index,
        });
        self
    }

    fn path(&self) -> String {
        if self.0.segments.is_empty() {
            return "request".to_owned();
        }
        let mut path = String::new();
        for segment in self.0.segments.iter().rev() {
            if !path.is_empty() {
                path.push('.');
            }
            match segment.message.field(segment.number) {
                Some(field) => path.push_str(field.name),
                None => {
                    let _ = write!(path, "#{}", segment.number);
                }
            }
            if let Some(index) = segment.index {
                let _ = write!(path, "[{index}]");
            }
        }
        path
    }
}

impl From<WireError> for Failure {
    #[cold]
    fn from(error: WireError) -> Failure {
        Failure::new(Problem::Wire(error))
    }
}

impl From<Failure> for DecodeError {
    #[cold]
    fn from(failure: Failure) -> DecodeError {
        let path = failure.path();
        match failure.0.problem {
            Problem::Wire(error) => DecodeError::Wire { path, error },
            Problem::WrongWireType { expected, found } => DecodeError::WrongWireType {
                path,
                expected,
                found,
            },
            Problem::IdLength { expected, actual } => DecodeError::InvalidIdLength {
                path,
                expected,
                actual,
            },
            Problem::InvalidUtf8 => DecodeError::InvalidUtf8 { path },
            Problem::TooDeep { limit } => DecodeError::TooDeep { path, limit },
        }
    }
}
