"""Run the fake API server on its own, for manual poking or a benchmark in another
process::

    python -m tests.kube --port 8080 --kubeconfig /tmp/kubeconfig --load deploy/crds
    kubectl --kubeconfig /tmp/kubeconfig apply -f examples/mesh/

Serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal

from tests.kube.fake_apiserver import FakeApiServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--load", action="append", default=[],
                        help="YAML file or directory to apply at start (repeatable)")
    parser.add_argument("--bearer-token", help="require this bearer token")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # threads inherit the mask
    kube = FakeApiServer(port=args.port, bearer_token=args.bearer_token,
                         bookmark_interval=args.bookmark_interval)
    if args.load:
        kube.load(*args.load)
    if args.kubeconfig:
        kube.write_kubeconfig(args.kubeconfig)
    kube.start()
    print(f"fake kube-apiserver on {kube.url}", flush=True)
    try:
        signal.sigwait(stop_signals)
    finally:
        kube.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
