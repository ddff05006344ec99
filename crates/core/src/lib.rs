//! Core types shared by every part of isola.
//!
//! This crate holds the vocabulary of the platform and nothing that runs code:
//! the [`Limits`] an invocation runs under, the [`Invocation`] a caller sends
//! and the [`Outcome`] it gets back, the stable [`ErrorCode`]s users see, and
//! the [`Invoker`] trait. Every way of running a function (the local V8
//! executor today; a Wasm runtime and a remote worker over NATS later) serves
//! the same trait, so the HTTP API and the CLI never care which one answers.

pub mod admission;
pub mod clock;
mod dispatch;
mod error;
mod invocation;
mod limits;
pub mod net;
pub mod queued;
pub mod source;
pub mod text;
pub mod websocket;
pub mod wire;

pub use dispatch::Dispatch;
pub use error::{ErrorCode, FunctionError};
pub use invocation::{
    BodyChunk, BodyStream, BoxFuture, FunctionSource, HttpRequest, HttpResponse, Invocation,
    InvocationInput, InvocationMetrics, InvocationOutput, Invoker, InvokerStats, LogEntry,
    LogLevel, NodeInfo, Outcome, SourceFile, TakeOnce,
};
pub use limits::Limits;
pub use queued::{QueuedInvocation, QueuedState};
pub use source::RuntimeKind;
