"""Pydantic schemas of the management API (the ``/v1`` surface uses none, by design)."""
