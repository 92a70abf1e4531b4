//! Fuzzing the host's RPC stack: arbitrary bytes, and structurally valid but hostile Cap'n
//! Proto RPC messages, fed to a real connection (`rpc::serve`: framing check, flow control,
//! capnp-rpc, the Session/Executor/Network servers) over the same in-memory pipes a guest
//! uses. Whatever arrives, the host must not panic, must answer within bounded memory, and
//! must end the connection once the input ends.
//!
//! The driver is proptest (stable Rust, no nightly needed for libFuzzer): `make test` runs a
//! bounded number of cases (`PROPTEST_CASES`, 256 by default here), `make fuzz` many more.

use std::rc::Rc;
use std::time::Duration;

use capnp_rpc::rpc_capnp::{message, message_target};
use proptest::prelude::*;

use cell::inproc::pipe;
use cell::inproc::Audit;
use cell::inproc::Grants;
use cell::inproc::NetPolicy;
use cell::inproc::Supervisor;
use cell::inproc::{self as rpc, Transport};
use cell::inproc::{CellEngine, EngineConfig};

/// Interface ids worth aiming at: the host's own, plus a few that exist nowhere.
const INTERFACES: &[u64] = &[
    <cell::cell_capnp::session::Client as capnp::traits::HasTypeId>::TYPE_ID,
    <cell::cell_capnp::executor::Client as capnp::traits::HasTypeId>::TYPE_ID,
    <cell::cell_capnp::network::Client as capnp::traits::HasTypeId>::TYPE_ID,
    <cell::cell_capnp::process::Client as capnp::traits::HasTypeId>::TYPE_ID,
    <cell::cell_capnp::byte_stream::Client as capnp::traits::HasTypeId>::TYPE_ID,
    0,
    u64::MAX,
];

/// One thing a hostile guest may send.
#[derive(Debug, Clone)]
enum Msg {
    Raw(Vec<u8>),
    Bootstrap(u32),
    Call {
        question: u32,
        /// Target: an import id, or a promised answer (question id).
        target: u32,
        promised: bool,
        interface: usize,
        method: u16,
        params: Vec<u8>,
    },
    Finish(u32),
    Release(u32, u32),
    Abort,
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Msg::Raw),
        (0u32..4).prop_map(Msg::Bootstrap),
        (
            0u32..8,
            0u32..4,
            any::<bool>(),
            0..INTERFACES.len(),
            0u16..12,
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(question, target, promised, interface, method, params)| {
                Msg::Call {
                    question,
                    target,
                    promised,
                    interface,
                    method,
                    params,
                }
            }),
        (0u32..8).prop_map(Msg::Finish),
        (0u32..4, any::<u32>()).prop_map(|(id, n)| Msg::Release(id, n)),
        Just(Msg::Abort),
    ]
}

/// The bytes of one message as the guest would frame them (raw bytes go as they are).
fn encode(m: &Msg) -> Vec<u8> {
    let mut builder = capnp::message::Builder::new_default();
    {
        let root: message::Builder = builder.init_root();
        match m {
            Msg::Raw(bytes) => return bytes.clone(),
            Msg::Bootstrap(q) => root.init_bootstrap().set_question_id(*q),
            Msg::Call {
                question,
                target,
                promised,
                interface,
                method,
                params,
            } => {
                let mut call = root.init_call();
                call.set_question_id(*question);
                call.set_interface_id(INTERFACES[*interface]);
                call.set_method_id(*method);
                {
                    let mut t: message_target::Builder = call.reborrow().init_target();
                    if *promised {
                        t.init_promised_answer().set_question_id(*target);
                    } else {
                        t.set_imported_cap(*target);
                    }
                }
                // Params: a data blob where the method expects a struct, or nothing.
                let mut payload = call.init_params();
                if !params.is_empty() {
                    let _ = payload
                        .reborrow()
                        .get_content()
                        .set_as::<capnp::data::Owned>(&params[..]);
                }
            }
            Msg::Finish(q) => root.init_finish().set_question_id(*q),
            Msg::Release(id, n) => {
                let mut r = root.init_release();
                r.set_id(*id);
                r.set_reference_count(*n);
            }
            Msg::Abort => {
                root.init_abort().set_reason("fuzz");
            }
        }
    }
    capnp::serialize::write_message_to_words(&builder)
}

/// Runs one connection on `input`; returns how many reply bytes the host wrote.
fn run_connection(sup: &Supervisor, input: Vec<u8>) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let (to_host_w, to_host_r) = pipe(64 << 10);
        let (to_guest_w, to_guest_r) = pipe(64 << 10);
        let grants = Grants {
            executor: true,
            network: Some(NetPolicy::parse(["connect=127.0.0.1:1"]).expect("rule")),
            ..Grants::default()
        };
        let connection = rpc::serve(
            rpc::ServeSpec {
                host: Rc::new(sup.clone()),
                pid: 0,
                grants,
                audit: Audit::tracing_only(),
                sockets: cell::inproc::SocketTally::new(4),
            },
            Transport {
                from_guest: to_host_r.into_host(),
                to_guest: to_guest_w.into_host(),
                max_message_bytes: 1 << 20,
                max_outstanding_calls: 64,
            },
        );
        let writer = tokio::task::spawn_local(async move {
            let _ = to_host_w.write_all(&input).await;
            to_host_w.close();
        });
        let drained = Rc::new(std::cell::Cell::new(0usize));
        let counted = drained.clone();
        let reader = tokio::task::spawn_local(async move {
            loop {
                let data = to_guest_r.read(64 << 10).await;
                if data.is_empty() {
                    break;
                }
                counted.set(counted.get() + data.len());
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(10), connection.run()).await;
        assert!(
            ended.is_ok(),
            "the connection did not end after its input ended"
        );
        writer.abort();
        reader.abort();
        drained.get()
    })
}

fn supervisor() -> Supervisor {
    let engine = CellEngine::new(&EngineConfig::default()).expect("engine");
    Supervisor::with_audit(engine, Audit::tracing_only())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary bytes: refused (or ignored) without a panic, in bounded time and memory.
    #[test]
    fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..4096)) {
        let sup = supervisor();
        let replied = run_connection(&sup, input);
        prop_assert!(replied < 1 << 20, "{replied} reply bytes");
    }

    /// Valid framing, hostile content: calls on imports that do not exist, wrong interfaces,
    /// methods past the end, data where structs belong, finishes and releases of nothing.
    #[test]
    fn hostile_messages(messages in prop::collection::vec(msg(), 1..24)) {
        let sup = supervisor();
        let input: Vec<u8> = messages.iter().flat_map(encode).collect();
        let replied = run_connection(&sup, input);
        if std::env::var_os("FUZZ_VERBOSE").is_some() {
            eprintln!("{} messages -> {replied} reply bytes", messages.len());
        }
        prop_assert!(replied < 1 << 20, "{replied} reply bytes");
    }
}
