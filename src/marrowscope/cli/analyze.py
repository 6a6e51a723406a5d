"""CLI: analyze commands (filled in by the module owner)."""

from marrowscope.cli.app import app  # noqa: F401
