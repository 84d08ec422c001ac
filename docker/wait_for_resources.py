"""Wait until a Ray cluster offers at least the given GPUs and CPUs; exit 0, or 1 on timeout.

`pipeline build --pose mmpose` decides once, when it starts, whether its pose actors take a GPU:
they do when the cluster has one at that moment (pipeline.pose.resources), else they run on a
CPU. On a cluster whose GPU workers are still starting, run this first (docs/cluster.md):

    python /opt/integralaction/wait_for_resources.py --gpus 4 && pipeline build ... --pose mmpose

Both images copy this file to /opt/integralaction/.
"""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--address", default="auto", help="Ray address (default: auto).")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs the cluster must offer.")
    parser.add_argument("--cpus", type=float, default=0.0, help="CPUs the cluster must offer.")
    parser.add_argument("--timeout", type=float, default=1200.0, help="Seconds to wait at most.")
    parser.add_argument("--interval", type=float, default=5.0, help="Seconds between checks.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import ray

    ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            total = ray.cluster_resources()
            gpus, cpus = total.get("GPU", 0.0), total.get("CPU", 0.0)
            if gpus >= args.gpus and cpus >= args.cpus:
                print(f"cluster ready: {gpus:g} GPU, {cpus:g} CPU")
                return 0
            if time.monotonic() >= deadline:
                print(
                    f"timed out after {args.timeout:g} s: the cluster offers {gpus:g} GPU and "
                    f"{cpus:g} CPU; wanted {args.gpus:g} GPU and {args.cpus:g} CPU",
                    file=sys.stderr,
                )
                return 1
            time.sleep(args.interval)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
