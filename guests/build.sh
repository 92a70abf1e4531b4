#!/usr/bin/env bash
# Builds every guest, in stages: some guests embed others' wasm with `include_bytes!`, so those
# must exist first. Works from any directory; outputs land in guests/target/wasm32-wasip2/release/.
#
#   stage 1: child-leaf child-trap child-garbage child-silent   (embed nothing)
#            spawner
#            net-std net-fetch inetd-echo hello upper tty-echo hostile bench-nop bench-hello
#            bench-net bench-idle bench-echo kv-service kv-client dirs-child http-get http-hoard
#            http-hello stress-node
#   stage 2: child-echo                                         (embeds child-leaf)
#            bench-spawner                                      (embeds bench-nop)
#            net-child                                          (embeds net-std)
#            pipe-pid0                                          (embeds upper)
#            hostile-parent                                     (embeds hostile)
#            escape                            (embeds hostile, upper, child-silent)
#            kv-pid0 dirs-pid0             (embed kv-service, kv-client / dirs-child)
#   stage 3: relay pid0                                         (embed child-echo)
#            inetd net-probe                                    (embed inetd-echo / net-std, net-child)
#            hostile-pid0                            (embeds hostile, hostile-parent, child-garbage)
#            bench-pid0     (embeds bench-nop, bench-idle, bench-echo, bench-spawner)
#            stress-pid0         (embeds stress-node, child-leaf, bench-idle, inetd-echo)
#   stage 4: scenarios                                          (embeds the leaves and relay)
#            remote-pid0     (embeds hello, hostile, child-leaf, net-probe, kv-service, kv-client,
#                             spawner)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# The embedding paths assume guests/target, whatever the caller's environment says.
export CARGO_TARGET_DIR="$PWD/target"

build() {
    cargo build --release --target wasm32-wasip2 "$@"
}

build -p child-leaf -p child-trap -p child-garbage -p child-silent -p spawner \
    -p net-std -p net-fetch -p inetd-echo -p hello -p upper -p tty-echo -p hostile \
    -p bench-nop -p bench-hello -p bench-net -p bench-idle -p bench-echo -p kv-service -p kv-client -p dirs-child -p http-get -p http-hoard -p http-hello -p stress-node
build -p child-echo -p bench-spawner -p net-child -p pipe-pid0 -p hostile-parent -p escape -p kv-pid0 -p dirs-pid0
build -p relay -p pid0 -p inetd -p net-probe -p hostile-pid0 -p bench-pid0 -p stress-pid0
build -p scenarios -p remote-pid0

ls -l target/wasm32-wasip2/release/*.wasm
