"""`python -m tests.chaos`: one chaos run, printed as a table (docs/reliability.md)."""

import argparse
import asyncio
import pathlib
import sys
import tempfile

from tests.chaos import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=harness.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--factories", type=int, default=5)
    parser.add_argument("--runners-per-factory", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--operators", type=int, default=2)
    parser.add_argument("--faults", type=float, default=0.05, help="share of API requests that fail during the chaos phase")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between chaos actions")
    parser.add_argument("--chaos-seconds", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="limit of the calm phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=pathlib.Path, default=None, help="keep logs and repositories here")
    parser.add_argument("--kubeconfig", type=pathlib.Path, default=None,
                        help="run against this server (its CRDs installed) instead of an embedded one; no API faults there")
    args = parser.parse_args(argv)
    work = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="gigafactory-chaos-"))
    config = harness.Config(work_dir=work, jobs=args.jobs, factories=args.factories, runners_per_factory=args.runners_per_factory,
                            slots=args.slots, operators=args.operators, fault_rate=args.faults, interval=args.interval,
                            chaos_seconds=args.chaos_seconds, timeout=args.timeout, seed=args.seed,
                            kubeconfig=args.kubeconfig)
    report = asyncio.run(harness.run(config))
    print(report.table())
    print(f"logs and repositories: {work}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
