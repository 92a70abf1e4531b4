//! A `wasi:http/proxy` component for `cell serve --http` (and `wasmtime serve`), answering by
//! path:
//!
//! - `/` and anything unlisted: `200 hello from http-hello: METHOD PATH`, `content-type:
//!   text/plain`, and `x-hello: 1`;
//! - `/echo`: the request's body back, streamed, with its `content-type`;
//! - `/big?N`: `N` bytes of `x`, streamed in 4 KiB writes;
//! - `/fetch` with header `x-fetch: URL`: a GET of URL through `wasi:http/outgoing-handler`,
//!   answered `200 fetched STATUS BYTES` or `502 fetch failed: ERROR-CODE`;
//! - `/error`: `response-outparam.set` with `internal-error`;
//! - `/none`: returns without answering;
//! - `/trap`: panics (a wasm trap) before answering;
//! - `/slow`: answers after 10 s; `/sleep?MS`: answers `slept MS` after MS milliseconds;
//!   `/spin`: never answers, burning CPU;
//! - `/log`: writes a line to stdout and one to stderr, then answers.

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        match route {
            "/echo" => echo(request, out),
            "/big" => {
                let n = query.parse().unwrap_or(0);
                respond(out, 200, &[], |body| write_all_repeat(body, b'x', n));
            }
            "/fetch" => fetch(&request, out),
            "/error" => ResponseOutparam::set(
                out,
                Err(ErrorCode::InternalError(Some(
                    "http-hello: asked to fail".into(),
                ))),
            ),
            "/none" => drop(out),
            "/trap" => panic!("http-hello: asked to trap"),
            "/slow" => {
                std::thread::sleep(Duration::from_secs(10));
                respond_text(out, 200, "slow\n");
            }
            "/sleep" => {
                let ms = query.parse().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                respond_text(out, 200, &format!("slept {ms}\n"));
            }
            "/spin" => spin(),
            "/log" => {
                println!("http-hello: a line on stdout");
                eprintln!("http-hello: a line on stderr");
                respond_text(out, 200, "logged\n");
            }
            _ => {
                let method = method_name(&request.method());
                let text = format!("hello from http-hello: {method} {path}\n");
                respond(out, 200, &[("x-hello", b"1")], |body| {
                    write_all(body, text.as_bytes())
                });
            }
        }
    }
}

wasip2::http::proxy::export!(Hello);

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

/// Never returns, never yields to the host on its own: only epoch interruption stops it.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn respond_text(out: ResponseOutparam, status: u16, text: &str) {
    respond(out, status, &[], |body| write_all(body, text.as_bytes()));
}

/// Answers `status` with `headers` (and `content-type: text/plain` unless given), the body
/// written by `write`.
fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &[u8])],
    write: impl FnOnce(&OutputStream) -> Result<(), StreamError>,
) {
    let fields = Fields::new();
    if !headers.iter().any(|(k, _)| *k == "content-type") {
        let _ = fields.append("content-type", b"text/plain");
    }
    for (k, v) in headers {
        let _ = fields.append(k, v);
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        if write(&stream).is_err() {
            return;
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Writes `data`, at most what the stream accepts at a time.
fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), StreamError> {
    while !data.is_empty() {
        let n = data.len().min(4096);
        stream.blocking_write_and_flush(&data[..n])?;
        data = &data[n..];
    }
    Ok(())
}

fn write_all_repeat(stream: &OutputStream, byte: u8, mut n: usize) -> Result<(), StreamError> {
    let chunk = vec![byte; 4096];
    while n > 0 {
        let k = n.min(chunk.len());
        stream.blocking_write_and_flush(&chunk[..k])?;
        n -= k;
    }
    Ok(())
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let kind = request.headers().get("content-type");
    let Ok(incoming) = request.consume() else {
        return respond_text(out, 500, "no body\n");
    };
    let headers: Vec<(&str, &[u8])> = kind
        .first()
        .map(|v| vec![("content-type", v.as_slice())])
        .unwrap_or_default();
    respond(out, 200, &headers, |body| copy_body(&incoming, body));
    IncomingBody::finish(incoming);
}

fn copy_body(from: &IncomingBody, to: &OutputStream) -> Result<(), StreamError> {
    let Ok(input) = from.stream() else {
        return Ok(());
    };
    loop {
        match input.blocking_read(4096) {
            Ok(chunk) => write_all(to, &chunk)?,
            Err(StreamError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn fetch(request: &IncomingRequest, out: ResponseOutparam) {
    let url = request
        .headers()
        .get("x-fetch")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    match get(&url) {
        Ok((status, bytes)) => respond_text(out, 200, &format!("fetched {status} {bytes}\n")),
        Err(e) => respond_text(out, 502, &format!("fetch failed: {e}\n")),
    }
}

/// GETs `url` (`http://AUTHORITY/PATH`): its status and body length.
fn get(url: &str) -> Result<(u16, usize), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "no body".to_string())?;
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut bytes = 0;
    loop {
        match stream.blocking_read(65536) {
            Ok(chunk) => bytes += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok((status, bytes))
}
