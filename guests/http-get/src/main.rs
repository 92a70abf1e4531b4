//! http-get: sends one or more `wasi:http` requests with `wstd` (a maintained wasi:http client
//! for guests) and reports what came back on stderr, one `http-get: …` line per fact, so tests
//! can compare cell's answers with what they expect.
//!
//! Usage: `http-get [--method M] [--send-bytes N] [--header K:V] [--first-byte-timeout-ms N]
//! [--parallel N] URL`. The response body is counted as it streams (never collected), and its
//! first 200 bytes are printed. A failed request prints `http-get: error: <ErrorCode>` (the
//! `wasi:http` error code's name, e.g. `HttpRequestDenied`) and the guest exits 1.

use std::time::Duration;

use wstd::http::BodyExt;
use wstd::http::{Body, Client, Method, Request};

/// What the command line asked for.
struct Args {
    url: String,
    method: Method,
    send_bytes: usize,
    headers: Vec<(String, String)>,
    first_byte_timeout: Option<Duration>,
    parallel: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        method: Method::GET,
        send_bytes: 0,
        headers: Vec::new(),
        first_byte_timeout: None,
        parallel: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--method" => {
                args.method = Method::from_bytes(value()?.as_bytes()).map_err(|e| e.to_string())?
            }
            "--send-bytes" => args.send_bytes = value()?.parse().map_err(|_| "--send-bytes N")?,
            "--header" => {
                let v = value()?;
                let (k, v) = v.split_once(':').ok_or("--header K:V")?;
                args.headers.push((k.to_string(), v.trim().to_string()));
            }
            "--first-byte-timeout-ms" => {
                let ms = value()?.parse().map_err(|_| "--first-byte-timeout-ms N")?;
                args.first_byte_timeout = Some(Duration::from_millis(ms));
            }
            "--parallel" => args.parallel = value()?.parse().map_err(|_| "--parallel N")?,
            url if args.url.is_empty() && !url.starts_with("--") => args.url = url.to_string(),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if args.url.is_empty() {
        return Err("usage: http-get [options] URL".into());
    }
    Ok(args)
}

/// The `wasi:http` error code behind `err`, by name, or the whole error when there is none.
fn describe(err: &wstd::http::Error) -> String {
    match err.downcast_ref::<wstd::http::error::ErrorCode>() {
        Some(code) => format!("{code:?}"),
        None => format!("{err:#}"),
    }
}

/// Sends one request and streams its response; `tag` tells parallel requests apart.
async fn fetch(args: &Args, tag: &str) -> Result<(), String> {
    let mut client = Client::new();
    if let Some(t) = args.first_byte_timeout {
        client.set_first_byte_timeout(t);
    }
    let mut request = Request::builder()
        .uri(&args.url)
        .method(args.method.clone());
    for (k, v) in &args.headers {
        request = request.header(k, v);
    }
    let body = if args.send_bytes > 0 {
        request = request.header("content-length", args.send_bytes.to_string());
        Body::from(vec![b'x'; args.send_bytes])
    } else {
        Body::empty()
    };
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = client.send(request).await.map_err(|e| describe(&e))?;
    eprintln!("http-get:{tag} status: {}", response.status().as_u16());
    for (k, v) in response.headers() {
        if k.as_str().starts_with("x-") || k == "content-type" {
            eprintln!(
                "http-get:{tag} header: {k}: {}",
                String::from_utf8_lossy(v.as_bytes())
            );
        }
    }
    let mut body = response.into_body().into_boxed_body();
    let (mut total, mut head) = (0usize, Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| describe(&e))?;
        if let Some(data) = frame.data_ref() {
            total += data.len();
            let room = 200usize.saturating_sub(head.len());
            head.extend_from_slice(&data[..data.len().min(room)]);
        } else if let Some(trailers) = frame.trailers_ref() {
            for (k, v) in trailers {
                eprintln!(
                    "http-get:{tag} trailer: {k}: {}",
                    String::from_utf8_lossy(v.as_bytes())
                );
            }
        }
    }
    eprintln!("http-get:{tag} body-bytes: {total}");
    eprintln!("http-get:{tag} body: {}", String::from_utf8_lossy(&head));
    Ok(())
}

#[wstd::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let result = if args.parallel <= 1 {
        fetch(&args, "").await
    } else {
        let tags: Vec<String> = (0..args.parallel).map(|i| format!("[{i}]")).collect();
        let all = futures::future::join_all(tags.iter().map(|t| fetch(&args, t))).await;
        let failed: Vec<_> = all.into_iter().filter_map(Result::err).collect();
        for e in &failed {
            eprintln!("http-get: error: {e}");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            std::process::exit(1)
        }
    };
    if let Err(e) = &result {
        eprintln!("http-get: error: {e}");
        std::process::exit(1);
    }
    Ok(())
}
