//! HTTP/1.1 on loopback for the `wasi:http` tests: a small test server (what a guest's
//! outgoing requests reach) and a plain client (what reaches `cell serve --http`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub host: String,
    pub body_len: usize,
}

/// A small HTTP/1.1 server: `/hello`, `/big` (8 MiB), `/upload` (counts the body), `/slow`
/// (answers after 2 s), `/stall` (never answers; reports when the client goes away).
pub struct Server {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub closed: mpsc::Receiver<Instant>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = mpsc::channel();
        let (c, s) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let (s, closed_tx) = (s.clone(), closed_tx.clone());
                std::thread::spawn(move || serve(stream, &s, &closed_tx));
            }
        });
        Server {
            port,
            connections,
            seen,
            closed,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn rule(&self) -> String {
        format!("connect=127.0.0.1:{}", self.port)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, closed: &mpsc::Sender<Instant>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let (mut host, mut length) = (String::new(), 0usize);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("host:") {
            host = v.trim().to_string();
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(Seen {
        line: line.trim().to_string(),
        host,
        body_len: length,
    });
    let respond = |out: &mut TcpStream, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-test: yes\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        let _ = out.write_all(&all);
        // Close only once the client has nothing more to send: closing with unread bytes
        // (a chunked request's last chunk, say) resets the connection, and a reset throws
        // away what the client has not read yet.
        let _ = out.shutdown(std::net::Shutdown::Write);
        let _ = out.set_read_timeout(Some(Duration::from_secs(5)));
        let mut rest = [0u8; 4096];
        while matches!(out.read(&mut rest), Ok(n) if n > 0) {}
    };
    match path.split('?').next().unwrap_or("") {
        "/hello" => respond(&mut out, b"hello from the test server"),
        "/upload" => respond(&mut out, format!("got {length} bytes").as_bytes()),
        "/big" => respond(&mut out, &vec![b'b'; 8 << 20]),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(2));
            respond(&mut out, b"slow");
        }
        "/stall" => {
            // Until the client goes away.
            let mut byte = [0u8; 1];
            while matches!(reader.read(&mut byte), Ok(n) if n > 0) {}
            let _ = closed.send(Instant::now());
        }
        _ => {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    }
}

/// What the client got.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (last chunk or full length).
    pub complete: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on its own connection (`connection: close`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_reply(BufReader::new(stream))
}

fn read_reply(mut r: BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
        complete: false,
    };
    if reply.header("transfer-encoding") == Some("chunked") {
        reply.complete = read_chunked(&mut r, &mut reply.body);
    } else if let Some(n) = reply.header("content-length").and_then(|n| n.parse().ok()) {
        let mut body = vec![0; n];
        reply.complete = r.read_exact(&mut body).is_ok();
        reply.body = body;
    } else {
        let _ = r.read_to_end(&mut reply.body);
        reply.complete = true;
    }
    reply
}

/// Reads a chunked body into `out`; whether it ended with the last chunk.
fn read_chunked(r: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> bool {
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            return false;
        }
        let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        let mut chunk = vec![0; n + 2];
        if r.read_exact(&mut chunk).is_err() {
            return false;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}
