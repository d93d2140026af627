"""The `zai-proxy` command: one subcommand per program this package runs.

Each subcommand lives in its own module with a `main(argv) -> int`; this module only dispatches,
so importing the CLI never imports the parts a subcommand does not use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("zai_proxy.server.run",
              "run the proxy (simulated upstream when ZAI_API_KEY is unset)"),
    "demo": ("zai_proxy.server.demo",
             "run the proxy and the simulated upstream and send a few requests"),
    "simulate": ("zai_proxy.simulator", "run the simulated Z.AI upstream"),
    "switch": ("zai_proxy.switch", "switch the Kubernetes Service between variants v1 and v2"),
    "admin": ("zai_proxy.switch.admin_client",
              "call this pod's admin API (used by switch via exec)"),
    "dashboard": ("zai_proxy.dashboard.cli", "run the live dashboard that scrapes proxies"),
}


def _usage() -> str:
    lines = ["usage: zai-proxy COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`zai-proxy COMMAND --help` lists each command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand's `main(argv)`; exit code 2 on an unknown command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        from zai_proxy import __version__

        print(__version__)
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"zai-proxy: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    result: int = module.main(args[1:])
    return result
