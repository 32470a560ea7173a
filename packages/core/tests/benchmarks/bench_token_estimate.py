"""How far the offline token estimate is from a real tokenizer, by kind of text.

The router estimates prompt tokens without any tokenizer (no download at run time) to reserve
quota before a call; this compares that estimate with OpenAI's o200k_base encoding (shipped in
the ``bpe-openai`` dev dependency, no network) plus the chat framing OpenAI documents (about 3
tokens per message and 3 to prime the reply), on a deterministic corpus.

Run: ``uv run python packages/core/tests/benchmarks/bench_token_estimate.py``. Prints numbers.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable

import bpe_openai
from apikeyrouter.domain.components.token_estimator import estimate_prompt_tokens
from apikeyrouter.utils.validation import intent_from_openai

ENCODING = bpe_openai.get_encoding("o200k_base")
PER_MESSAGE = 3
PRIMING = 3

WORDS = [
    "the",
    "router",
    "keeps",
    "every",
    "request",
    "away",
    "from",
    "rate",
    "limits",
    "by",
    "reserving",
    "quota",
    "before",
    "it",
    "calls",
    "a",
    "provider",
    "and",
    "it",
    "explains",
    "each",
    "decision",
    "with",
    "the",
    "scores",
    "of",
    "the",
    "candidates",
]
GERMAN = [
    "Der",
    "Router",
    "verteilt",
    "Anfragen",
    "gleichmäßig",
    "auf",
    "alle",
    "Schlüssel",
    "und",
    "erklärt",
    "jede",
    "Entscheidung",
]
CHINESE = "路由器在调用提供商之前预留配额并解释每一个决定"
JAPANESE = "ルーターはプロバイダーを呼び出す前にクォータを予約し、すべての判断を説明します"
CODE = """def route(self, intent):
    for step in self.plan(intent):
        lease = await self.selector.acquire(step)
        if lease is None:
            continue
        return await lease.adapter.send(intent, self.keys.secret(lease.key), 30.0)
"""


def english(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def kinds(rng: random.Random) -> dict[str, Callable[[], str]]:
    return {
        "english": lambda: english(rng, rng.randint(5, 400)),
        "german": lambda: " ".join(rng.choice(GERMAN) for _ in range(rng.randint(5, 200))),
        "chinese": lambda: CHINESE * rng.randint(1, 20),
        "japanese": lambda: JAPANESE * rng.randint(1, 20),
        "code": lambda: CODE * rng.randint(1, 10),
        "json": lambda: json.dumps(
            {
                f"field_{i}": rng.choice([rng.random(), english(rng, 3), i, None])
                for i in range(rng.randint(2, 40))
            }
        ),
        "numbers": lambda: " ".join(str(rng.randint(0, 10**9)) for _ in range(rng.randint(5, 100))),
    }


def actual_tokens(messages: list[dict[str, str]]) -> int:
    total = PRIMING
    for message in messages:
        total += PER_MESSAGE + len(ENCODING.encode(message["content"]))
    return total


def main() -> None:
    rng = random.Random(42)
    makers = kinds(rng)
    print(
        f"{'kind':<10}{'samples':>8}{'mean |err|':>12}{'bias':>9}{'p90 |err|':>11}{'max |err|':>11}"
    )
    overall: list[float] = []
    for kind, make in makers.items():
        errors: list[float] = []
        for _ in range(200):
            messages = [{"role": "system", "content": "You are a helpful assistant."}]
            messages += [
                {"role": rng.choice(["user", "assistant"]), "content": make()}
                for _ in range(rng.randint(1, 4))
            ]
            estimate = estimate_prompt_tokens(
                intent_from_openai({"model": "gpt-4o", "messages": messages})
            )
            actual = actual_tokens(messages)
            errors.append((estimate - actual) / actual)
        overall += errors
        absolute = sorted(abs(e) for e in errors)
        print(
            f"{kind:<10}{len(errors):>8}{statistics.fmean(absolute):>12.1%}"
            f"{statistics.fmean(errors):>+9.1%}{absolute[int(0.9 * len(absolute))]:>11.1%}"
            f"{absolute[-1]:>11.1%}"
        )
    absolute = sorted(abs(e) for e in overall)
    print(
        f"{'all':<10}{len(overall):>8}{statistics.fmean(absolute):>12.1%}"
        f"{statistics.fmean(overall):>+9.1%}{absolute[int(0.9 * len(absolute))]:>11.1%}"
        f"{absolute[-1]:>11.1%}"
    )


if __name__ == "__main__":
    main()
