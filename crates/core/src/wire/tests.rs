//! Invocations and outcomes through the wire format and back.

use super::*;
use crate::{ErrorCode, HttpRequest, HttpResponse, InvocationMetrics, LogEntry, LogLevel};

fn function() -> Arc<FunctionSource> {
    Arc::new(FunctionSource::single_module(
        "hello:abc",
        "hello",
        "export default () => 1",
    ))
}

fn http(body: &[u8], rest: Option<mpsc::Receiver<BodyChunk>>) -> Invocation {
    Invocation {
        id: "inv_1".into(),
        function: function(),
        input: InvocationInput::Http(HttpRequest {
            method: "POST".into(),
            url: "http://hello.example/a?b=1".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.to_vec(),
            rest: rest.map(BodyStream::new).unwrap_or_default(),
        }),
    }
}

/// Every frame of `tail`, decoded.
async fn frames(mut tail: BodyTail) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(bytes) = tail.next_frame().await {
        frames.push(decode_frame(&bytes).unwrap());
    }
    frames
}

#[tokio::test]
async fn a_json_invocation_travels_whole() {
    let invocation = Invocation {
        id: "inv_2".into(),
        function: function(),
        input: InvocationInput::Json(serde_json::json!({ "n": [1, 2] })),
    };
    let (bytes, tail) = encode_invocation(invocation, 1024, 512);
    assert!(tail.is_empty());
    let received = decode_invocation(&bytes).unwrap();
    assert_eq!(
        (
            received.id.as_str(),
            received.function.as_str(),
            received.streamed
        ),
        ("inv_2", "hello", false)
    );
    let invocation = received.into_invocation(function(), None).unwrap();
    assert_eq!(
        invocation.input,
        InvocationInput::Json(serde_json::json!({ "n": [1, 2] }))
    );
}

#[tokio::test]
async fn a_long_body_goes_inline_up_to_the_limit_then_in_frames() {
    let body: Vec<u8> = (0..=255u8).cycle().take(2500).collect();
    let (bytes, tail) = encode_invocation(http(&body, None), 1000, 600);
    let received = decode_invocation(&bytes).unwrap();
    assert!(received.streamed);
    let frames = frames(tail).await;
    // 1500 bytes past the inline 1000: frames of 600, 600, 300, then the end.
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[3], Frame::End);
    let mut whole = match &received.input {
        InvocationInput::Http(request) => request.body.clone(),
        other => panic!("{other:?}"),
    };
    for frame in frames {
        if let Some(Ok(bytes)) = frame.into_chunk() {
            whole.extend(bytes);
        }
    }
    assert_eq!(whole, body);
}

#[tokio::test]
async fn a_streamed_body_and_its_failure_travel_as_frames() {
    let (sender, receiver) = mpsc::channel(4);
    sender.send(Ok(b"one".to_vec())).await.unwrap();
    sender
        .send(Err("the client went away".into()))
        .await
        .unwrap();
    drop(sender);
    let (bytes, tail) = encode_invocation(http(b"first", Some(receiver)), 1000, 600);
    let received = decode_invocation(&bytes).unwrap();
    assert!(received.streamed);
    assert_eq!(
        frames(tail).await,
        vec![
            Frame::Data(b"one".to_vec()),
            Frame::Failed("the client went away".into())
        ]
    );
    // The receiving side hands the frames to the function's body.
    let (frames_in, rest) = mpsc::channel(4);
    let invocation = received.into_invocation(function(), Some(rest)).unwrap();
    frames_in.send(Ok(b"one".to_vec())).await.unwrap();
    drop(frames_in);
    match invocation.input {
        InvocationInput::Http(request) => {
            assert_eq!(request.body, b"first");
            let mut rest = request.rest.take().unwrap();
            assert_eq!(rest.recv().await, Some(Ok(b"one".to_vec())));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_streamed_chunk_longer_than_a_frame_is_split() {
    let (sender, receiver) = mpsc::channel(4);
    sender.send(Ok(vec![7u8; 2500])).await.unwrap();
    drop(sender);
    let (_, tail) = encode_invocation(http(b"", Some(receiver)), 1000, 1000);
    let sizes: Vec<Option<usize>> = frames(tail)
        .await
        .into_iter()
        .map(|frame| match frame {
            Frame::Data(bytes) => Some(bytes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [Some(1000), Some(1000), Some(500), None]);
}

#[tokio::test]
async fn an_invocation_runs_only_on_its_own_deployment() {
    let (bytes, _) = encode_invocation(http(b"", None), 1000, 600);
    let other = Arc::new(FunctionSource::single_module("hello:def", "hello", ""));
    let refused = decode_invocation(&bytes)
        .unwrap()
        .into_invocation(other, None)
        .unwrap_err();
    assert!(
        matches!(refused, WireError::WrongDeployment { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn outcomes_travel_with_their_errors_logs_costs_and_bodies() {
    let failed = Outcome {
        result: Err(FunctionError::new(ErrorCode::CpuLimit, "over")),
        logs: vec![LogEntry {
            level: LogLevel::Warn,
            message: "careful".into(),
        }],
        metrics: InvocationMetrics {
            cpu_us: 50_000,
            ..Default::default()
        },
    };
    let (bytes, tail) = encode_outcome(failed.clone(), 1000, 600);
    assert!(tail.is_empty());
    let (outcome, frames_to) = decode_outcome(&bytes).unwrap();
    assert_eq!(outcome, failed);
    assert!(frames_to.is_none());

    let (sender, receiver) = mpsc::channel(4);
    sender.send(Ok(b" world".to_vec())).await.unwrap();
    drop(sender);
    let streamed = Outcome {
        result: Ok(InvocationOutput::Http(HttpResponse {
            status: 200,
            headers: vec![("x".into(), "y".into())],
            body: b"hello".to_vec(),
            rest: BodyStream::new(receiver),
            upgrade: Default::default(),
        })),
        logs: Vec::new(),
        metrics: Default::default(),
    };
    let (bytes, tail) = encode_outcome(streamed, 1000, 600);
    let (outcome, frames_to) = decode_outcome(&bytes).unwrap();
    let frames_to = frames_to.expect("frames follow");
    for frame in frames(tail).await {
        if let Some(chunk) = frame.into_chunk() {
            frames_to.send(chunk).await.unwrap();
        }
    }
    drop(frames_to);
    match outcome.result {
        Ok(InvocationOutput::Http(response)) => {
            assert_eq!(response.status, 200);
            assert_eq!(response.read_body(1 << 10).await.unwrap(), b"hello world");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_is_refused_not_panicked_on() {
    for bytes in [
        &b""[..],
        &[VERSION][..],
        &[VERSION, 0, 0, 0, 9, b'{'][..],
        &[VERSION + 1, 0, 0, 0, 2, b'{', b'}'][..],
        &[VERSION, 0xff, 0xff, 0xff, 0xff][..],
        &[VERSION, 0, 0, 0, 2, b'{', b'}'][..],
    ] {
        assert!(decode_invocation(bytes).is_err(), "{bytes:?}");
        assert!(decode_outcome(bytes).is_err(), "{bytes:?}");
    }
    assert!(decode_frame(&[]).is_err());
    assert!(decode_frame(&[2, 0]).is_err());
    assert!(decode_frame(&[7]).is_err());
}
