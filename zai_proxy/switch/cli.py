"""The command line of `zai-proxy switch`: parse, validate, build the `Switcher`, run."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from zai_proxy.switch.cluster import Cluster
from zai_proxy.switch.kube import MIN_REQUEST_TIMEOUT, Kubectl
from zai_proxy.switch.runbook import Switcher
from zai_proxy.switch.status import status
from zai_proxy.switch.steps import EXIT_USAGE, Options, Steps

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `zai-proxy switch`."""
    parser = argparse.ArgumentParser(
        prog="zai-proxy switch",
        description="Switch the zai-proxy Service between deployment variants, verified "
        "step by step: carries the learned rate ceilings, retires the old variant's pods so "
        "keep-alive clients move, and verifies from the request counters that they did. "
        "Restores the previous selector if a check before the traffic check fails.",
        epilog="exit codes: 0 switched, 1 a check failed (selector as before), 2 usage, "
        "3 the restore failed, 4 switched but the old variant still receives requests. "
        "examples: zai-proxy switch --to v2 -n zai | zai-proxy switch status -n zai | "
        "zai-proxy switch rollback -n zai",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["to", "status", "rollback"],
        help="status: show what serves; rollback: back to the previous variant; "
        "default with --to: switch",
    )
    parser.add_argument("variant", nargs="?", help="target variant for `to` (same as --to)")
    parser.add_argument("--to", dest="to", help="variant to switch to (e.g. v2)")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--service", default="zai-proxy")
    parser.add_argument("--context", default=None, help="kubectl context")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary (default: on PATH)")
    parser.add_argument("--container", default="zai-proxy",
                        help="container that runs the proxy, for kubectl exec (default zai-proxy)")
    parser.add_argument("--dry-run", action="store_true", help="run the read-only checks only")
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to wait for endpoints / scale-up (default 180)",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between polls and traffic samples (default 1)")
    parser.add_argument(
        "--request-timeout", type=float, default=20.0,
        help="seconds per kubectl call, fractions allowed down to 0.001 (kubectl gets e.g. "
        "500ms); 0: the default 20",
    )
    parser.add_argument(
        "--samples", type=int, default=5, help="/metrics samples through the Service (default 5)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="scale the target up to N first if it has 0 replicas",
    )
    parser.add_argument(
        "--scale-down-previous",
        action="store_true",
        help="after a switch verified from traffic, scale the previous variant to 0",
    )
    parser.add_argument(
        "--no-carry-limits", dest="carry_limits", action="store_false",
        help="do not carry the learned rate/concurrency ceilings to the target (it relearns)",
    )
    parser.add_argument(
        "--no-retire", dest="retire", action="store_false",
        help="do not retire the old variant's pods (keep-alive clients then stay on them)",
    )
    parser.add_argument(
        "--traffic-timeout", type=float, default=60.0,
        help="seconds to wait until the old variant receives no requests; 0 skips the check "
        "(default 60)",
    )
    parser.add_argument(
        "--traffic-quiet", type=float, default=3.0,
        help="seconds the old variant must receive nothing to count as drained (default 3)",
    )
    parser.add_argument("--version-label", default="version")
    parser.add_argument("--port-name", default="http", help="Service/container port name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zai-proxy switch`; exit 0 ok, 1 check failed, 2 usage, 3 restore
    failed, 4 switched but the old variant still receives requests."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    target = args.to or args.variant
    action = args.action or ("to" if target else None)
    if action is None or (action == "to" and not target):
        parser.print_usage(sys.stderr)
        print("zai-proxy switch: give --to VARIANT, `status` or `rollback`", file=sys.stderr)
        return EXIT_USAGE
    if target and not _LABEL_VALUE.match(target):
        print(f"zai-proxy switch: {target!r} is not a valid label value", file=sys.stderr)
        return EXIT_USAGE
    for name in ("timeout", "poll_interval", "request_timeout", "traffic_timeout",
                 "traffic_quiet"):
        if getattr(args, name) < 0:
            print(f"zai-proxy switch: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return EXIT_USAGE
    if args.request_timeout != 0 and not args.request_timeout >= MIN_REQUEST_TIMEOUT:
        # kubectl takes milliseconds at the finest here; rounding down would send 0, which
        # kubectl reads as "no timeout at all".
        print(f"zai-proxy switch: --request-timeout {args.request_timeout:g} is below "
              f"{MIN_REQUEST_TIMEOUT:g}s (1ms), the least kubectl can be given",
              file=sys.stderr)
        return EXIT_USAGE
    kube = Kubectl(
        args.namespace,
        binary=args.kubectl,
        context=args.context,
        request_timeout=args.request_timeout or 20.0,
    )
    options = Options(
        namespace=args.namespace,
        service=args.service,
        version_label=args.version_label,
        port_name=args.port_name,
        container=args.container,
        dry_run=args.dry_run,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        samples=args.samples,
        replicas=args.replicas,
        scale_down_previous=args.scale_down_previous,
        carry_limits=args.carry_limits,
        retire=args.retire,
        traffic_timeout=args.traffic_timeout,
        traffic_quiet=args.traffic_quiet,
    )

    def out(text: str) -> None:
        print(text, flush=True)

    if action == "status":
        return status(Cluster(kube, options), Steps(out))
    switcher = Switcher(kube, options, out=out)
    if action == "rollback":
        return switcher.rollback()
    return switcher.switch(str(target), args.replicas)
