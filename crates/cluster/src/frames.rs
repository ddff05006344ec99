//! Bodies longer than one message, between nodes: the sender offers the
//! frames of its [`BodyTail`] on a subject of its own (named in the
//! message's `Isola-Body` header), and the receiver pulls them one request
//! at a time. Pulling is the backpressure: a receiver whose reader is slow
//! (a slow client) stops asking, and nothing more is sent or buffered
//! than the frames its channel holds.
//!
//! Either side gives up after [`BODY_IDLE`] without a pull or an answer;
//! a body given up on the receiving side ends with an error, so a reader
//! never takes a cut body for a whole one.

use async_nats::header::HeaderMap;
use futures::StreamExt;
use isola_core::wire::{self, BodyTail, Frame};
use isola_core::BodyChunk;
use std::time::Duration;
use tokio::sync::mpsc;

/// The header naming the subject a body's frames are pulled from.
pub const BODY_HEADER: &str = "Isola-Body";

/// How long a body may wait for its next pull, or a pull for its frame.
pub const BODY_IDLE: Duration = Duration::from_secs(30);

/// Offers `tail`'s frames on a new subject until the last one is pulled
/// (or none is pulled for [`BODY_IDLE`]); returns the headers naming it,
/// and the task offering them, which ends with the body.
pub async fn offer(
    client: &async_nats::Client,
    mut tail: BodyTail,
) -> Option<(HeaderMap, tokio::task::JoinHandle<()>)> {
    let subject = client.new_inbox();
    let mut pulls = match client.subscribe(subject.clone()).await {
        Ok(pulls) => pulls,
        Err(error) => {
            tracing::warn!(%error, "could not offer a body's frames");
            return None;
        }
    };
    let client = client.clone();
    let offering = tokio::spawn(async move {
        loop {
            let pull = match tokio::time::timeout(BODY_IDLE, pulls.next()).await {
                Ok(Some(pull)) => pull,
                // The receiver went away.
                _ => break,
            };
            let Some(reply) = pull.reply else {
                continue;
            };
            let Some(frame) = tail.next_frame().await else {
                break;
            };
            let last = !matches!(wire::decode_frame(&frame), Ok(Frame::Data(_)));
            if client.publish(reply, frame.into()).await.is_err() || last {
                break;
            }
        }
        let _ = pulls.unsubscribe().await;
    });
    let mut headers = HeaderMap::new();
    headers.insert(BODY_HEADER, subject.as_str());
    Some((headers, offering))
}

/// The subject a message's body frames are offered on, if it names one.
pub fn offered(headers: Option<&HeaderMap>) -> Option<String> {
    Some(headers?.get(BODY_HEADER)?.as_str().to_string())
}

/// Pulls the frames offered on `subject` into `chunks` until the last, or
/// until `chunks`' reader is gone; a body that stops arriving ends with an
/// error chunk.
pub fn pull(client: &async_nats::Client, subject: String, chunks: mpsc::Sender<BodyChunk>) {
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            let request = async_nats::Request::new().timeout(Some(BODY_IDLE));
            let frame = match client.send_request(subject.clone(), request).await {
                Ok(answer) => wire::decode_frame(&answer.payload),
                Err(error) => {
                    let _ = chunks
                        .send(Err(format!(
                            "the body stopped arriving from the other node: {error}"
                        )))
                        .await;
                    return;
                }
            };
            let chunk = match frame {
                Ok(frame) => frame.into_chunk(),
                Err(error) => Some(Err(error.to_string())),
            };
            let Some(chunk) = chunk else {
                // The end: dropping `chunks` ends the body.
                return;
            };
            let last = chunk.is_err();
            if chunks.send(chunk).await.is_err() || last {
                return;
            }
        }
    });
}
