"""OpenAI-compatible gateway over the apikeyrouter library."""

__version__ = "0.1.0"
