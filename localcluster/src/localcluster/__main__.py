"""`python -m localcluster`: serve the embedded API server until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from localcluster import faults, serving


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig to write once the server is ready")
    parser.add_argument("--crds", action="append", default=None, metavar="DIR",
                        help="CRD manifests to load (repeatable; default: ./crds if it exists)")
    parser.add_argument("--no-crds", action="store_true", help="load no CRDs, not even ./crds")
    parser.add_argument("--apply", action="append", default=[], metavar="FILE_OR_DIR",
                        help="manifests to create at start-up (repeatable)")
    parser.add_argument("--faults", type=float, default=0.0, metavar="RATE",
                        help="inject API faults into this share of requests (0..1; see localcluster/faults.py)")
    parser.add_argument("--faults-seed", type=int, default=None)
    parser.add_argument("--no-token", action="store_true",
                        help="serve without checking a token (by default a random one is written into the kubeconfig "
                             "and every request must carry it)")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    crds = args.crds if args.crds is not None else (["crds"] if os.path.isdir("crds") else [])
    if args.no_crds:
        crds = []
    local = await serving.start(port=args.port, crd_dirs=crds, apply=args.apply,
                                token=None if args.no_token else serving.new_token())
    if args.faults:
        local.server.faults = faults.FaultPolicy(rate=args.faults, seed=args.faults_seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    path = local.write_kubeconfig(args.kubeconfig)
    print(f"gigafactory local cluster at {local.url}; kubeconfig: {path}", flush=True)
    try:
        await stop.wait()
    finally:
        await local.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
