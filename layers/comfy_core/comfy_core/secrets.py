"""Secrets from SSM Parameter Store (SecureString), never from plain env vars.

Powertools caches each value for `max_age` seconds, so a rotated secret is picked up
within that time without a redeploy, and a warm container does not call SSM per request.
boto3 (through Powertools parameters) is imported only when a secret is configured.
"""

from __future__ import annotations

from .errors import ConfigurationError

CACHE_SECONDS = 300


def ssm_secret(name: str) -> str:
    """The decrypted value of SSM parameter `name` (with or without the leading '/')."""
    from aws_lambda_powertools.utilities import parameters

    path = name if name.startswith("/") else f"/{name}"
    try:
        value = parameters.get_parameter(path, decrypt=True, max_age=CACHE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        # The message names the parameter, never its value.
        raise ConfigurationError(f"Secret parameter {path} could not be read") from exc
    return str(value)
