#!/usr/bin/env python3
"""Run a job on a `cell serve` daemon from Python, with nothing but pycapnp and the schema.

    python run_job.py --connect unix:/run/cell/cell.sock app.wasm [ARGS...]

Loads capnp/cell.capnp, connects to the daemon's unix socket, asks `Daemon.run` for a job
(the wasm bytes, its args, stdio by the file), streams the job's stderr to ours, waits for its
status and prints it as one JSON line on stdout. Exit code: the job's own exit code, 1 when it
did not simply exit, 2 when the daemon refused the job.
"""

import argparse
import asyncio
import json
import os
import sys

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "capnp"))


def status_json(status):
    """An ExitStatus as cell's report writes it: {"status": ..., "detail": ...}."""
    which = status.which()
    words = {
        "exited": "exited",
        "trapped": "trapped",
        "killed": "killed",
        "timedOut": "timed-out",
        "outOfMemory": "out-of-memory",
        "outOfFuel": "out-of-fuel",
        "protocolViolation": "protocol-violation",
    }
    out = {"status": words.get(which, which)}
    if which in ("exited", "trapped", "protocolViolation"):
        out["detail"] = getattr(status, which)
    elif which == "killed":
        out["detail"] = str(status.killed)
    return out


async def copy_stderr(stream):
    """Copies a ByteStream to our stderr until it ends (an empty read)."""
    while True:
        data = (await stream.read(0)).data
        if not data:
            return
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()


async def main(args):
    cell = capnp.load(os.path.join(SCHEMA_DIR, "cell.capnp"), imports=[SCHEMA_DIR])
    if not args.connect.startswith("unix:"):
        sys.exit("this example connects to unix:PATH sockets")
    stream = await capnp.AsyncIoStream.create_unix_connection(args.connect[len("unix:"):])
    client = capnp.TwoPartyClient(stream)
    daemon = client.bootstrap().cast_as(cell.Daemon)

    request = cell.JobRequest.new_message()
    with open(args.wasm, "rb") as f:
        request.code.wasm = f.read()
    request.name = os.path.basename(args.wasm)
    request.args = args.args
    try:
        job = (await daemon.run(request)).job
    except capnp.KjException as e:
        # The text is "REASON: DETAIL" (see the error words in cell.capnp).
        print(json.dumps({"refused": e.description}))
        return 2

    pid = (await job.pid()).pid
    stderr = (await job.stderr()).stream
    copying = asyncio.ensure_future(copy_stderr(stderr))
    status = (await job.wait()).status
    await copying
    result = {"pid": pid, **status_json(status)}
    print(json.dumps(result))
    sys.stdout.flush()
    if result["status"] == "exited":
        return result["detail"] & 0xFF
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True, help="unix:PATH of the daemon")
    parser.add_argument("wasm", help="the component to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    sys.exit(asyncio.run(capnp.run(main(parser.parse_args()))))
