//! Bodies longer than one message, between nodes: the sender offers the
//! frames of its [`BodyTail`] on a subject of its own (named in the
//! message's `Isola-Body` header), and the receiver pulls them one request
//! at a time. Pulling is the backpressure: a receiver whose reader is slow
//! (a slow client) stops asking, and nothing more is sent or buffered
//! than the frames its channel holds.
//!
//! Either side gives up after [`BODY_IDLE`] without a pull or an answer;
//! a body given up on the receiving side ends with an error, so a reader
//! never takes a cut body for a whole one. A body with nothing to send for
//! [`KEEP_ALIVE`] answers an empty frame (a quiet event stream stays
//! open); a receiver whose reader is gone says "stop", so the sender lets
//! go of the body at once; and an offer ends at its `deadline` whatever
//! happens.

use async_nats::header::HeaderMap;
use futures::StreamExt;
use isola_core::wire::{self, BodyTail};
use isola_core::BodyChunk;
use std::time::Duration;
use tokio::sync::mpsc;

/// The header naming the subject a body's frames are pulled from.
pub const BODY_HEADER: &str = "Isola-Body";

/// How long a body may wait for its next pull, or a pull for its frame.
pub const BODY_IDLE: Duration = Duration::from_secs(30);

/// How long a pull waits for the body's next bytes before it is answered
/// with an empty frame.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What a receiver sends instead of a pull when it wants no more.
const STOP: &[u8] = b"stop";

/// Offers `tail`'s frames on a new subject until the last one is pulled
/// (or none is pulled for [`BODY_IDLE`], or the receiver says stop, or
/// `deadline` passes); returns the headers naming it, and the task
/// offering them.
pub async fn offer(
    client: &async_nats::Client,
    mut tail: BodyTail,
    deadline: tokio::time::Instant,
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
        let offered = async {
            loop {
                let pull = match tokio::time::timeout(BODY_IDLE, pulls.next()).await {
                    Ok(Some(pull)) => pull,
                    // The receiver went away.
                    _ => break,
                };
                let Some(reply) = pull.reply else {
                    continue;
                };
                if pull.payload.as_ref() == STOP {
                    break;
                }
                let frame = match tokio::time::timeout(KEEP_ALIVE, tail.next_frame()).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    // Nothing yet: an empty frame keeps the pull alive.
                    Err(_) => vec![0],
                };
                // Data frames start with 0; a failure or the end is last.
                let last = frame.first() != Some(&0);
                if client.publish(reply, frame.into()).await.is_err() || last {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, offered).await;
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
            if chunk.as_ref().is_ok_and(Vec::is_empty) {
                // A keep-alive.
                continue;
            }
            let last = chunk.is_err();
            if chunks.send(chunk).await.is_err() {
                // The reader is gone: the sender may let go of the body.
                let _ = client.publish(subject, STOP.into()).await;
                return;
            }
            if last {
                return;
            }
        }
    });
}
