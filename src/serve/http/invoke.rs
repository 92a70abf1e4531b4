//! One request to a served `wasi:http/proxy` component: a fresh store (its own pid, grants and
//! limits), a fresh instance from the pre-instantiated component, `incoming-handler.handle`
//! on a task of its own, and the answer mapped to HTTP.
//!
//! What the client gets when the handler does not answer normally — each request fails
//! alone, the server and every other request go on:
//! - more requests in flight than `max-concurrency`: `503` with `retry-after: 1`, at once,
//!   without a store;
//! - the handler traps, runs out of fuel or memory, or answers `response-outparam.set(err)`
//!   before any response: `500`, the reason in the daemon's log;
//! - it returns without answering: `500`;
//! - it does not answer within its timeout: `504`. The timeout bounds the whole handler, body
//!   included: a body still being written when it expires is cut off (the connection closes
//!   without the final chunk, so the client sees an incomplete response, never a short one).
//!
//! Who owns what: the store and its task belong to the request; the task holds the
//! request's concurrency slot, so a handler still writing its body counts until it ends. A
//! client that goes away before the response head stops its handler at once (hyper drops
//! the answer future, which aborts the task); after it, the handler's writes fail and it ends.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView as _;

use crate::budget::Budget;
use crate::grants::Grants;
use crate::limits::Limits;
use crate::net::count::SocketTally;
use crate::process::{build_store, classify, StoreSpec};
use crate::state::ProcState;
use crate::status::ExitStatus;
use crate::supervisor::Supervisor;

use super::HttpStats;

/// One served component and what every request to it gets.
pub(crate) struct Front {
    pub name: String,
    pub sup: Supervisor,
    pub pre: ProxyPre<ProcState>,
    pub grants: Grants,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    /// How long one request's handler may run, body included.
    pub deadline: Duration,
    /// Requests in flight, at most `max-concurrency`.
    pub slots: Budget,
    pub stats: Rc<HttpStats>,
}

/// How a handler's task ended.
enum Ended {
    /// `handle` returned (having answered, or not).
    Returned,
    /// It trapped or was refused memory or fuel.
    Failed(ExitStatus),
    TimedOut,
}

type Answer = hyper::Response<HyperOutgoingBody>;

impl Front {
    /// The answer to `req`. Never fails: every failure is an HTTP status.
    pub(crate) async fn answer(
        self: Rc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Answer {
        let started = Instant::now();
        let answer = self.run(req).await;
        self.stats
            .answered(answer.status().as_u16(), started.elapsed());
        answer
    }

    async fn run(self: &Rc<Self>, req: hyper::Request<hyper::body::Incoming>) -> Answer {
        let Some(slot) = self.slots.take(1) else {
            let mut busy = page(503);
            busy.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return busy;
        };
        let pid = self.sup.reserve_pid();
        let mut store = match self.store(pid) {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(target: "cell::http", pid, "http {}: cannot set up: {e:#}", self.name);
                return page(500);
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let resources = {
            let mut http = store.data_mut().http();
            http.new_incoming_request(Scheme::Http, req)
                .and_then(|req| Ok((req, http.new_response_outparam(tx)?)))
        };
        let (req, out) = match resources {
            Ok(r) => r,
            // hyper accepted it but wasi:http cannot represent it (no authority at all).
            Err(e) => {
                tracing::debug!(target: "cell::http", "http {}: bad request: {e}", self.name);
                return page(400);
            }
        };
        let (pre, deadline, name) = (self.pre.clone(), self.deadline, self.name.clone());
        let turn = store.data().turn.clone();
        let handler = async move {
            let _slot = slot;
            let ended = handle(&pre, &mut store, req, out, deadline).await;
            report(&name, pid, &ended);
            ended
        };
        let mut task = Handler(Some(tokio::task::spawn_local(
            crate::sched::Scheduled::new(handler, turn),
        )));
        match rx.await {
            // From here the handler writes the body the client is reading: it runs on.
            Ok(Ok(response)) => {
                task.detach();
                response
            }
            Ok(Err(code)) => {
                tracing::warn!(target: "cell::http", pid, "http {}: the handler answered {code:?}", self.name);
                page(500)
            }
            // The store is gone without an answer: the task says why.
            Err(_) => match task.finish().await {
                Ok(Ended::TimedOut) => page(504),
                Ok(Ended::Returned) => {
                    tracing::warn!(target: "cell::http", pid, "http {}: pid {pid} returned without answering", self.name);
                    page(500)
                }
                Ok(Ended::Failed(_)) | Err(_) => page(500),
            },
        }
    }

    /// A store with the front's grants and limits, and stdout and stderr forwarded to the
    /// daemon's log line by line (`[pid N] …`).
    fn store(&self, pid: u32) -> anyhow::Result<Store<ProcState>> {
        build_store(
            self.sup.engine(),
            StoreSpec {
                argv: vec![self.name.clone()],
                env: self.env.clone(),
                stdin: Box::new(tokio::io::empty()),
                stdout: crate::stderr::forward(pid, None),
                stderr: crate::stderr::forward(pid, None),
                dirs: self.grants.dirs.clone(),
                cwd: None,
                limits: self.limits.clone(),
                pid,
                network: self.grants.network.clone(),
                audit: self.sup.audit().clone(),
                sockets: SocketTally::new(self.limits.max_sockets),
                pinned_names: self.sup.pinned_names(),
            },
        )
    }
}

/// A request's handler task until its response head: dropped before then (the client went
/// away, so hyper dropped the answer), it stops the handler and frees its slot at once.
struct Handler(Option<tokio::task::JoinHandle<Ended>>);

impl Handler {
    /// Lets the task run on by itself (it is writing the body).
    fn detach(&mut self) {
        self.0 = None;
    }

    /// How the task ended.
    async fn finish(&mut self) -> Result<Ended, tokio::task::JoinError> {
        match self.0.take() {
            Some(task) => task.await,
            None => Ok(Ended::Returned),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Instantiates and calls the handler, within `deadline`.
async fn handle(
    pre: &ProxyPre<ProcState>,
    store: &mut Store<ProcState>,
    req: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
    out: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
    deadline: Duration,
) -> Ended {
    let outcome = tokio::time::timeout(deadline, async {
        let proxy = pre.instantiate_async(&mut *store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out)
            .await
    })
    .await;
    match outcome {
        Err(_) => Ended::TimedOut,
        Ok(Ok(())) => Ended::Returned,
        Ok(Err(e)) => Ended::Failed(classify(Err(e), store)),
    }
}

/// Logs a handler that did not end normally (the client's status says less).
fn report(name: &str, pid: u32, ended: &Ended) {
    match ended {
        Ended::Returned => {}
        Ended::TimedOut => {
            tracing::warn!(target: "cell::http", pid, "http {name}: pid {pid} timed out");
        }
        Ended::Failed(status) => {
            tracing::warn!(target: "cell::http", pid, "http {name}: pid {pid} {status}");
        }
    }
}

/// An answer of cell's own: the page `wasmtime serve` answers with, signed `cell`, so a
/// client sees the same status, type and length from either (`benches/compat/main.rs`). Why
/// is in the daemon's log, never in the answer.
fn page(status: u16) -> Answer {
    let status =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let html = format!(
        "<!doctype html>\n<html>\n<head>\n    <title>{title}</title>\n</head>\n<body>\n    \
         <center>\n        <h1>{title}</h1>\n        <hr>\n        cell\n    </center>\n\
         </body>\n</html>"
    );
    let body = Full::new(Bytes::from(html))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut answer = hyper::Response::new(body);
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    answer
}
