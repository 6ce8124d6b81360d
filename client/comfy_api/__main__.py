"""`python -m comfy_api`: the same as the `comfy-api` command."""

from .cli import entry_point

entry_point()
