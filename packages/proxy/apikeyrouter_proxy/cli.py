"""Command line: ``apikeyrouter-proxy serve | check-config | simulate``.

``serve`` validates the config before starting uvicorn (so a typo is a clear error with a line
number, not a traceback from a worker), then runs uvicorn with uvloop and httptools and with
uvicorn's access log off: the proxy writes its own JSON access line per request.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from apikeyrouter_proxy.config.loader import load_config
from apikeyrouter_proxy.config.settings import CONFIG_PATH_ENV, ProxyConfig
from apikeyrouter_proxy.config.yaml_source import ConfigError
from apikeyrouter_proxy.services.store import describe_store

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apikeyrouter-proxy",
        description="OpenAI-compatible gateway that routes requests across many API keys.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    serve.add_argument("--host", help="bind address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: server.port, 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--log-level", choices=_LOG_LEVELS, help="override logging.level")

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)

    commands.add_parser(
        "simulate",
        help="run the simulated provider (options: see 'simulate --help')",
        add_help=False,
        prefix_chars="\0",  # every following argument belongs to the simulator's own parser
    ).add_argument("args", nargs=argparse.REMAINDER)
    return parser


def describe(config: ProxyConfig) -> str:
    """A short human summary of a valid config (never any secret)."""
    server = config.server
    lines = [
        f"server: {server.host}:{server.port}, body limit {server.max_body_bytes} bytes, "
        f"admin API {'enabled' if server.admin_token else 'disabled (no admin_token)'}, "
        f"hot reload {'on' if server.watch_config else 'off'}",
        f"routing: objective {config.routing.objective or 'library default'}, up to "
        f"{config.routing.max_attempts} attempts, deadline {config.routing.deadline_seconds:g}s",
        f"clients: {len(config.auth.clients) or 'none (open /v1)'}",
        f"store: {describe_store(config.store)}",
    ]
    for provider in config.providers:
        lines.append(
            f"provider {provider.id}: {provider.kind} at {provider.effective_base_url}, "
            f"{len(provider.keys)} key(s)"
            + (f", models {', '.join(provider.models)}" if provider.models is not None else "")
        )
    if not config.providers:
        lines.append("providers: none (add them with the management API)")
    lines.append(_governance_line(config))
    return "\n".join(lines)


def _governance_line(config: ProxyConfig) -> str:
    files = config.files
    from_file = len(files.policies) if files is not None else 0
    client_budgets = sum(
        (c.budget_usd_per_day is not None) + (c.budget_usd_per_month is not None)
        for c in config.auth.clients
    )
    prices = len(files.pricing) if files is not None else 0
    return (
        f"policies: {len(config.policies) + from_file} ({from_file} from "
        f"{config.policies_file or 'no file'}), budgets: {len(config.budgets) + client_budgets} "
        f"({client_budgets} from clients), price overrides: {prices}"
    )


def _load(path: Path) -> ProxyConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.describe(), file=sys.stderr)
        return None


def check_config(path: Path) -> int:
    config = _load(path)
    if config is None:
        return 1
    print(f"{path}: OK")
    print(describe(config))
    return 0


def serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    import uvicorn
    from apikeyrouter.infrastructure.observability.logger import configure_logging

    level = args.log_level or config.logging.level.lower()
    configure_logging(level.upper())
    # Workers (and the single-process server alike) build the app from this path.
    os.environ[CONFIG_PATH_ENV] = str(args.config.resolve())
    uvicorn.run(
        "apikeyrouter_proxy.main:app_factory",
        factory=True,
        host=args.host or config.server.host,
        port=config.server.port if args.port is None else args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level=level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def simulate(argv: Sequence[str]) -> int:
    from apikeyrouter.testing.__main__ import main as simulator_main

    return simulator_main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "simulate":
        return simulate(args.args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
