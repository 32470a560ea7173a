"""Scrubbing secrets out of text that may reach a log line, an error or a response."""

from __future__ import annotations

import re

# Things that look like provider credentials: OpenAI/Anthropic style prefixes, Google API keys,
# and masked echoes such as OpenAI's "Incorrect API key provided: sk-ab***...cd". Our own key
# ids ("key_...") are deliberately not matched: they are safe to log.
_SECRET_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])(?:sk|rk|pk)[-_][A-Za-z0-9_*.\-]{4,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+\S+"
)
REDACTED = "[redacted]"


def redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_PATTERN.sub(REDACTED, text)


def fingerprint(secret: str) -> str:
    """A human hint for telling keys apart: only the last four characters."""
    return "..." + secret[-4:] if len(secret) >= 12 else "..."
