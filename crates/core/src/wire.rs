//! How an invocation and its outcome travel between nodes. The cluster's
//! transport moves these bytes; nothing here knows how.
//!
//! A **message** is one byte of [`VERSION`], four bytes of head length (big
//! endian), the head as JSON (ids, the input or outcome without its body
//! bytes), then the first body bytes, raw. A body longer than the sender's
//! inline limit, or one that streams, continues as **frames** (one byte of
//! kind, then the bytes: data, an error's message, or the end), which the
//! sender pulls from a [`BodyTail`] and sends in order, one per message
//! of the transport.
//!
//! A worker that receives an invocation looks its deployment up by id (the
//! code does not travel), and refuses it if it has a different one.

use crate::{
    BodyChunk, BodyStream, FunctionError, FunctionSource, Invocation, InvocationInput,
    InvocationOutput, Outcome,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The version of the format; a message of another version is refused.
pub const VERSION: u8 = 1;

/// Why bytes could not be read as a message or frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a message of this format (truncated, another version, bad JSON).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The invocation is for another deployment than the one found.
    #[error("the invocation is for deployment {wanted}, not {found}")]
    WrongDeployment { wanted: String, found: String },
}

/// The head of an invocation.
#[derive(Debug, Serialize, Deserialize)]
struct InvocationHead {
    id: String,
    function: String,
    deployment: String,
    /// With an HTTP request's body emptied: its bytes follow the head.
    input: InvocationInput,
    /// Whether frames follow.
    streamed: bool,
}

/// The head of an outcome.
#[derive(Debug, Serialize, Deserialize)]
struct OutcomeHead {
    /// With an HTTP response's body emptied: its bytes follow the head.
    result: Result<InvocationOutput, FunctionError>,
    logs: Vec<crate::LogEntry>,
    metrics: crate::InvocationMetrics,
    streamed: bool,
}

/// What is left of a body to send as frames: the bytes past the inline
/// limit, then the stream, if any.
#[derive(Debug, Default)]
pub struct BodyTail {
    pending: VecDeque<Vec<u8>>,
    rest: Option<mpsc::Receiver<BodyChunk>>,
    ended: bool,
    /// Most bytes in one frame: a longer streamed chunk is split.
    chunk: usize,
}

impl BodyTail {
    /// Whether frames follow the message at all.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.rest.is_none()
    }

    /// The next frame to send; `None` after the end frame.
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        if let Some(bytes) = self.pending.pop_front() {
            return Some(frame(Frame::Data(bytes)));
        }
        let next = match &mut self.rest {
            Some(rest) => rest.recv().await,
            None => None,
        };
        Some(frame(match next {
            Some(Ok(mut bytes)) => {
                if self.chunk > 0 && bytes.len() > self.chunk {
                    let rest = bytes.split_off(self.chunk);
                    self.pending
                        .extend(rest.chunks(self.chunk).map(<[u8]>::to_vec));
                }
                Frame::Data(bytes)
            }
            Some(Err(message)) => {
                self.ended = true;
                Frame::Failed(message)
            }
            None => {
                self.ended = true;
                Frame::End
            }
        }))
    }
}

/// One frame of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Body bytes.
    Data(Vec<u8>),
    /// The body failed with this message (the last frame).
    Failed(String),
    /// The body ended (the last frame).
    End,
}

impl Frame {
    /// The chunk to hand the reader, or `None` at the end.
    pub fn into_chunk(self) -> Option<BodyChunk> {
        match self {
            Self::Data(bytes) => Some(Ok(bytes)),
            Self::Failed(message) => Some(Err(message)),
            Self::End => None,
        }
    }
}

fn frame(frame: Frame) -> Vec<u8> {
    match frame {
        Frame::Data(bytes) => [&[0u8][..], &bytes].concat(),
        Frame::Failed(message) => [&[1u8][..], message.as_bytes()].concat(),
        Frame::End => vec![2],
    }
}

/// Reads a frame.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, WireError> {
    match bytes.split_first() {
        Some((0, data)) => Ok(Frame::Data(data.to_vec())),
        Some((1, message)) => Ok(Frame::Failed(String::from_utf8_lossy(message).into())),
        Some((2, [])) => Ok(Frame::End),
        _ => Err(WireError::Malformed("not a body frame".into())),
    }
}

/// `body` split at `inline` bytes (the rest in `chunk`-sized pieces), with
/// `rest` after it.
fn split(
    mut body: Vec<u8>,
    rest: Option<mpsc::Receiver<BodyChunk>>,
    inline: usize,
    chunk: usize,
) -> (Vec<u8>, BodyTail) {
    let mut pending = VecDeque::new();
    if body.len() > inline {
        let tail = body.split_off(inline);
        pending.extend(tail.chunks(chunk.max(1)).map(<[u8]>::to_vec));
    }
    let streamed = rest.is_some() || !pending.is_empty();
    let tail = BodyTail {
        pending,
        rest,
        ended: !streamed,
        chunk,
    };
    (body, tail)
}

fn message(head: &impl Serialize, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(head).expect("heads serialise");
    let mut bytes = Vec::with_capacity(5 + head.len() + body.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&(head.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(body);
    bytes
}

fn read_message<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<(T, Vec<u8>), WireError> {
    let malformed = |what: &str| WireError::Malformed(what.to_string());
    let (&version, rest) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
    if version != VERSION {
        return Err(WireError::Malformed(format!(
            "version {version}, this node reads {VERSION}"
        )));
    }
    let length: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("truncated head length"))?;
    let length = u32::from_be_bytes(length) as usize;
    let head = rest
        .get(4..4 + length)
        .ok_or_else(|| malformed("truncated head"))?;
    let head = serde_json::from_slice(head).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((head, rest[4 + length..].to_vec()))
}

/// An invocation as a message of at most about `inline` body bytes, and
/// the frames to send after it (in pieces of at most `chunk` bytes).
pub fn encode_invocation(
    invocation: Invocation,
    inline: usize,
    chunk: usize,
) -> (Vec<u8>, BodyTail) {
    let Invocation {
        id,
        function,
        mut input,
    } = invocation;
    let (body, tail) = match &mut input {
        InvocationInput::Http(request) => split(
            std::mem::take(&mut request.body),
            request.rest.take(),
            inline,
            chunk,
        ),
        InvocationInput::Json(_) => (Vec::new(), BodyTail::default()),
    };
    let head = InvocationHead {
        id,
        function: function.name.clone(),
        deployment: function.id.clone(),
        input,
        streamed: !tail.is_empty(),
    };
    (message(&head, &body), tail)
}

/// An invocation read from a message, waiting for its deployment.
#[derive(Debug)]
pub struct ReceivedInvocation {
    /// Its id.
    pub id: String,
    /// The function's name.
    pub function: String,
    /// The deployment (`FunctionSource::id`) it is for.
    pub deployment: String,
    /// Whether body frames follow.
    pub streamed: bool,
    input: InvocationInput,
}

/// Reads an invocation message.
pub fn decode_invocation(bytes: &[u8]) -> Result<ReceivedInvocation, WireError> {
    let (head, body): (InvocationHead, _) = read_message(bytes)?;
    let mut input = head.input;
    if let InvocationInput::Http(request) = &mut input {
        request.body = body;
    }
    Ok(ReceivedInvocation {
        id: head.id,
        function: head.function,
        deployment: head.deployment,
        streamed: head.streamed,
        input,
    })
}

impl ReceivedInvocation {
    /// The invocation, to run `function` (which must be its deployment),
    /// its streamed body read from `rest`.
    pub fn into_invocation(
        self,
        function: Arc<FunctionSource>,
        rest: Option<mpsc::Receiver<BodyChunk>>,
    ) -> Result<Invocation, WireError> {
        if function.id != self.deployment {
            return Err(WireError::WrongDeployment {
                wanted: self.deployment,
                found: function.id.clone(),
            });
        }
        let mut input = self.input;
        if let (InvocationInput::Http(request), Some(rest)) = (&mut input, rest) {
            request.rest = BodyStream::new(rest);
        }
        Ok(Invocation {
            id: self.id,
            function,
            input,
        })
    }
}

/// An outcome as a message, and the frames of its body to send after it.
pub fn encode_outcome(outcome: Outcome, inline: usize, chunk: usize) -> (Vec<u8>, BodyTail) {
    let Outcome {
        mut result,
        logs,
        metrics,
    } = outcome;
    let (body, tail) = match &mut result {
        Ok(InvocationOutput::Http(response)) => split(
            std::mem::take(&mut response.body),
            response.rest.take(),
            inline,
            chunk,
        ),
        _ => (Vec::new(), BodyTail::default()),
    };
    let head = OutcomeHead {
        result,
        logs,
        metrics,
        streamed: !tail.is_empty(),
    };
    (message(&head, &body), tail)
}

/// Reads an outcome message; when it says frames follow, their chunks go
/// to the receiver given back, which the response's body reads.
pub fn decode_outcome(
    bytes: &[u8],
) -> Result<(Outcome, Option<mpsc::Sender<BodyChunk>>), WireError> {
    let (head, body): (OutcomeHead, _) = read_message(bytes)?;
    let mut result = head.result;
    let mut sender = None;
    if let Ok(InvocationOutput::Http(response)) = &mut result {
        response.body = body;
        if head.streamed {
            let (frames, rest) = mpsc::channel(FRAMES_IN_FLIGHT);
            response.rest = BodyStream::new(rest);
            sender = Some(frames);
        }
    }
    let outcome = Outcome {
        result,
        logs: head.logs,
        metrics: head.metrics,
    };
    Ok((outcome, sender))
}

/// Frames a receiver holds before the sender must wait.
pub const FRAMES_IN_FLIGHT: usize = 16;

#[cfg(test)]
mod tests;
