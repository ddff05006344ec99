//! Between Rust and JavaScript: a handler's arguments, made from an
//! invocation's input, and its result read back; streamed bodies' channels.

use super::*;

pub(super) type Args<'s> = Vec<v8::Local<'s, v8::Value>>;

pub(super) fn string_arg<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    text: &str,
) -> Result<v8::Local<'s, v8::Value>, FunctionError> {
    let string = v8::String::new(scope, text).ok_or_else(|| {
        FunctionError::new(
            ErrorCode::InvalidInput,
            "input too large for a JavaScript string",
        )
    })?;
    Ok(string.into())
}

/// Header pairs as an array of `[name, value]` arrays (a Fetch header list).
fn header_list_arg<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    headers: &[(String, String)],
) -> Result<v8::Local<'s, v8::Value>, FunctionError> {
    let mut pairs = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let pair = [string_arg(scope, name)?, string_arg(scope, value)?];
        pairs.push(v8::Array::new_with_elements(scope, &pair).into());
    }
    Ok(v8::Array::new_with_elements(scope, &pairs).into())
}

pub(super) fn json_args<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    handler: &v8::Global<v8::Value>,
    payload: &serde_json::Value,
    [invocation_id, function_name]: [&str; 2],
    env: &v8::Global<v8::Value>,
) -> Result<Args<'s>, FunctionError> {
    let text = serde_json::to_string(payload)
        .map_err(|e| FunctionError::new(ErrorCode::InvalidInput, e.to_string()))?;
    Ok(vec![
        v8::Local::new(scope, handler),
        string_arg(scope, &text)?,
        string_arg(scope, invocation_id)?,
        string_arg(scope, function_name)?,
        v8::Local::new(scope, env),
    ])
}

pub(super) fn fetch_args<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    handler: &v8::Global<v8::Value>,
    request: &HttpRequest,
    [invocation_id, function_name]: [&str; 2],
    env: &v8::Global<v8::Value>,
) -> Result<Args<'s>, FunctionError> {
    let bodiless = matches!(request.method.as_str(), "GET" | "HEAD");
    let body: v8::Local<v8::Value> = if bodiless {
        // Never readable by the function: dropped now, which ends its upload.
        drop(request.rest.take());
        v8::null(scope).into()
    } else if let Some(receiver) = request.rest.take() {
        // A streamed body: the bootstrap pulls it with op_isola_body_recv.
        let id = open_request_body(scope, request.body.clone(), receiver);
        v8::Integer::new_from_unsigned(scope, id).into()
    } else if request.body.is_empty() {
        v8::null(scope).into()
    } else {
        let store = v8::ArrayBuffer::new_backing_store_from_vec(request.body.clone()).make_shared();
        let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
        v8::Uint8Array::new(scope, buffer, 0, request.body.len())
            .ok_or_else(|| FunctionError::new(ErrorCode::InvalidInput, "request body too large"))?
            .into()
    };
    Ok(vec![
        v8::Local::new(scope, handler),
        string_arg(scope, &request.method)?,
        string_arg(scope, &request.url)?,
        header_list_arg(scope, &request.headers)?,
        body,
        string_arg(scope, invocation_id)?,
        string_arg(scope, function_name)?,
        v8::Local::new(scope, env),
    ])
}

/// A plain-text answer made by the host, not the function.
pub(super) fn plain_http(status: u16, text: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: text.as_bytes().to_vec(),
        rest: Default::default(),
        upgrade: Default::default(),
    }
}

/// A JSON handler's result as an HTTP response.
pub(super) fn json_http(value: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(value).unwrap_or_default(),
        rest: Default::default(),
        upgrade: Default::default(),
    }
}

/// Largest JSON body a JSON handler takes over HTTP: the host reads and
/// checks it before the function runs, on the node's time, so it is kept
/// small (the owner's `/v1/…/invoke` takes up to the request limit).
pub(super) const MAX_JSON_OVER_HTTP: usize = 1 << 20;

/// The JSON payload in an HTTP request's body (an empty body is `null`),
/// read whole up to `limit` bytes; or the host's answer (413, 400) why not.
pub(super) async fn json_body(
    request: &HttpRequest,
    limit: usize,
) -> Result<serde_json::Value, HttpResponse> {
    let too_large = || plain_http(413, &format!("the JSON body is larger than {limit} bytes"));
    if request.body.len() > limit {
        return Err(too_large());
    }
    let mut body = request.body.clone();
    if let Some(mut rest) = request.rest.take() {
        while let Some(chunk) = rest.recv().await {
            let chunk = chunk.map_err(|message| plain_http(400, &message))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body)
        .map_err(|e| plain_http(400, &format!("the body is not valid JSON: {e}")))
}

/// A JSON payload given to a Workers-style function: a POST with a JSON body.
pub(super) fn json_as_request(payload: &serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url: "http://localhost/".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(payload).unwrap_or_default(),
        rest: Default::default(),
    }
}

pub(super) fn array_item<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    array: v8::Local<'s, v8::Array>,
    index: u32,
) -> Result<v8::Local<'s, v8::Value>, FunctionError> {
    array
        .get_index(scope, index)
        .ok_or_else(|| internal("reading a handler result", index))
}

/// What parsing a JSON text into a `serde_json::Value` may take at most:
/// every value (one per `[`, `{`, `,` or `:` at most) costs a node of its
/// own, besides the text. A result small as text can be huge as values
/// (`[[],[],...]`), so this is checked before parsing.
pub(super) fn json_value_bytes(text: &str) -> usize {
    let nodes = text
        .bytes()
        .filter(|b| matches!(b, b'[' | b'{' | b',' | b':'))
        .count();
    text.len() + (nodes + 1) * 80
}

pub(super) fn decode_json<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
    limit: usize,
) -> Result<InvocationOutput, FunctionError> {
    let array = v8::Local::<v8::Array>::try_from(value)
        .map_err(|e| internal("reading a JSON result", e))?;
    let text = array_item(scope, array, 0)?;
    if text.is_undefined() {
        let reason = array_item(scope, array, 1)?.to_rust_string_lossy(scope);
        return Err(FunctionError::new(
            ErrorCode::InvalidOutput,
            format!("the function's result cannot be serialised as JSON: {reason}"),
        ));
    }
    let text = text.to_rust_string_lossy(scope);
    if json_value_bytes(&text) > limit {
        return Err(FunctionError::new(
            ErrorCode::InvalidOutput,
            format!(
                "the function's result is too large: its JSON ({} bytes) would take more than the function's memory limit to hold",
                text.len()
            ),
        ));
    }
    let json = serde_json::from_str(&text).map_err(|e| {
        FunctionError::new(
            ErrorCode::InvalidOutput,
            format!("the function's result is not valid JSON: {e}"),
        )
    })?;
    Ok(InvocationOutput::Json(json))
}

/// The response head and whole body, and whether more of the body streams.
pub(super) fn decode_response<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
) -> Result<(InvocationOutput, bool, Option<u32>), FunctionError> {
    let array =
        v8::Local::<v8::Array>::try_from(value).map_err(|e| internal("reading a response", e))?;
    let status = array_item(scope, array, 0)?
        .uint32_value(scope)
        .unwrap_or(500) as u16;
    let list = array_item(scope, array, 1)?;
    let list = v8::Local::<v8::Array>::try_from(list)
        .map_err(|e| internal("reading response headers", e))?;
    let mut headers = Vec::with_capacity(list.length() as usize / 2);
    for index in (0..list.length().saturating_sub(1)).step_by(2) {
        let name = array_item(scope, list, index)?.to_rust_string_lossy(scope);
        let value = array_item(scope, list, index + 1)?.to_rust_string_lossy(scope);
        headers.push((name, value));
    }
    let body = array_item(scope, array, 2)?;
    let bytes = if let Ok(text) = v8::Local::<v8::String>::try_from(body) {
        text.to_rust_string_lossy(scope).into_bytes()
    } else {
        let body = v8::Local::<v8::Uint8Array>::try_from(body)
            .map_err(|e| internal("reading a response body", e))?;
        let mut bytes = vec![0; body.byte_length()];
        body.copy_contents(&mut bytes);
        bytes
    };
    let streaming = array_item(scope, array, 3)?.is_true();
    // A 101 response carries the id of the WebSocket it accepted.
    let socket = match array.length() {
        5 => array_item(scope, array, 4)?.uint32_value(scope),
        _ => None,
    };
    let response = HttpResponse {
        status,
        headers,
        body: bytes,
        rest: isola_core::BodyStream::default(),
        upgrade: Default::default(),
    };
    Ok((InvocationOutput::Http(response), streaming, socket))
}

/// The receiving end of the response-body sink the bootstrap opened for
/// this invocation's streamed response.
pub(super) fn take_opened_sink(runtime: &mut JsRuntime) -> isola_core::BodyStream {
    let opened = runtime
        .op_state()
        .borrow_mut()
        .borrow_mut::<BodySinks>()
        .opened
        .take();
    opened.map_or_else(Default::default, isola_core::BodyStream::new)
}

/// Registers a streamed request body (its first bytes and the rest);
/// returns the id the bootstrap pulls it by.
pub(super) fn open_request_body(
    scope: &mut v8::PinScope,
    first: Vec<u8>,
    rest: tokio::sync::mpsc::Receiver<isola_core::BodyChunk>,
) -> u32 {
    let state = JsRuntime::op_state_from(scope);
    let mut state = state.borrow_mut();
    let bodies = state.borrow_mut::<RequestBodies>();
    let id = bodies.next;
    bodies.next = bodies.next.wrapping_add(1);
    let first = (!first.is_empty()).then_some(first);
    bodies.streams.insert(id, (first, rest));
    id
}
