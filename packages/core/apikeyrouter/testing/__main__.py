"""Command line: ``python -m apikeyrouter.testing`` (or ``apikeyrouter-sim``).

Runs the simulated provider in the foreground so a proxy, a demo or a person with curl can use
it without writing Python. Example::

    python -m apikeyrouter.testing --port 8900 --key sk-a:rpm=60,tpm=10000 --key sk-bad:invalid

It prints the OpenAI base URL (``http://127.0.0.1:8900/v1``) on stdout once it is listening,
and the Anthropic and Gemini base URLs on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from .simulator.config import SimKeyConfig
from .simulator.provider import SimulatedProvider

__all__ = ["build_parser", "load_keys_file", "main", "provider_from_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m apikeyrouter.testing",
        description="Run a simulated OpenAI/Anthropic/Gemini provider with per-key limits and "
        "faults.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="SPEC",
        help="KEY[:rpm=N,tpm=N,quota=N,invalid,label=X,latency_ms=X,models=a|b,"
        "fault=MODE[:COUNT[:PROB]]]; repeatable",
    )
    parser.add_argument(
        "--keys-file", type=Path, help="JSON or YAML list of key configs (objects or SPEC strings)"
    )
    parser.add_argument("--model", action="append", help="OpenAI model id (repeatable)")
    parser.add_argument(
        "--anthropic-model", action="append", help="Anthropic model id (repeatable)"
    )
    parser.add_argument("--gemini-model", action="append", help="Gemini model id (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--completion-tokens", type=int, default=16)
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--http", default="auto", help="uvicorn HTTP implementation")
    parser.add_argument("--loop", default="auto", help="uvicorn event loop implementation")
    return parser


def load_keys_file(path: Path) -> list[SimKeyConfig]:
    """Read key configs from a JSON or YAML file: a list, or an object with a ``keys`` list."""
    text = path.read_text(encoding="utf-8")
    data: Any = (
        yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else orjson.loads(text)
    )
    if isinstance(data, dict):
        data = data.get("keys")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of key configs")
    configs = []
    for item in data:
        if isinstance(item, str):
            configs.append(SimKeyConfig.parse(item))
        elif isinstance(item, dict):
            configs.append(SimKeyConfig.from_mapping(item))
        else:
            raise ValueError(f"{path}: each key config must be an object or a SPEC string")
    return configs


def provider_from_args(args: argparse.Namespace) -> SimulatedProvider:
    keys = [SimKeyConfig.parse(spec) for spec in args.key]
    if args.keys_file is not None:
        keys.extend(load_keys_file(args.keys_file))
    return SimulatedProvider(
        keys,
        models=args.model,
        anthropic_models=args.anthropic_model,
        gemini_models=args.gemini_model,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        completion_tokens=args.completion_tokens,
        embedding_dimensions=args.embedding_dim,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        provider = provider_from_args(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if not args.key and args.keys_file is None:
        print("warning: no --key given; every request will get 401", file=sys.stderr)

    from .simulator.server import SimulatorAddress, run_simulator

    def ready(address: SimulatorAddress) -> None:
        print(address.base_url, flush=True)
        print(
            f"anthropic: {address.anthropic_base_url}  gemini: {address.gemini_base_url}",
            file=sys.stderr,
            flush=True,
        )

    with contextlib.suppress(KeyboardInterrupt):
        run_simulator(
            provider, args.host, args.port, on_ready=ready, loop=args.loop, http=args.http
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
