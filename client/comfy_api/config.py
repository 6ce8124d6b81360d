"""Where the API is and which key it takes.

Each value comes from the first place that has it: a flag (`--api-url`, `--api-key`), then
the environment (`COMFY_API_URL`, `COMFY_API_KEY`), then `--stack NAME`: the CloudFormation
stack's `ApiUrl` output and the value of the API Gateway key its `ApiKeyId` output names,
read with the caller's AWS credentials. The stack is asked only when no URL was given
another way: a key from one deployment is never sent to another's URL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import ConfigError

URL_ENV = "COMFY_API_URL"
KEY_ENV = "COMFY_API_KEY"
# The stack outputs template.yaml declares.
URL_OUTPUT = "ApiUrl"
KEY_ID_OUTPUT = "ApiKeyId"


@dataclass(frozen=True)
class StackValues:
    api_url: str
    api_key: str | None  # None: the stack has no API key (ApiKeyRequired=false)


@dataclass(frozen=True)
class Config:
    api_url: str
    api_key: str | None
    url_source: str  # where each came from, for `comfy-api config` and messages
    key_source: str | None
    unused_stack: str | None = None  # --stack given but not needed (a URL came first)


StackReader = Callable[[str, str | None, str | None], StackValues]


def read_stack(name: str, region: str | None = None, profile: str | None = None) -> StackValues:
    """The API URL and key of a deployed stack, with the caller's AWS credentials
    (cloudformation:DescribeStacks, apigateway:GET on the key)."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ConfigError("--stack needs boto3: pip install 'comfy-api-client[aws]'") from None
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
        stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        outputs = {o["OutputKey"]: o.get("OutputValue") for o in stacks[0].get("Outputs") or []}
        url = outputs.get(URL_OUTPUT)
        if not url:
            raise ConfigError(f"stack {name} has no {URL_OUTPUT} output: is it a comfy-serverless-api stack?")
        key_id = outputs.get(KEY_ID_OUTPUT)
        key = None
        if key_id:
            key = session.client("apigateway").get_api_key(apiKey=key_id, includeValue=True).get("value")
        return StackValues(url, key)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        raise ConfigError(f"stack {name}: {message}") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"stack {name}: {exc}") from exc


def resolve(
    api_url: str | None = None,
    api_key: str | None = None,
    stack: str | None = None,
    *,
    region: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    stack_reader: StackReader = read_stack,
) -> Config:
    env = os.environ if environ is None else environ
    url, url_source = _first((api_url, "--api-url"), (env.get(URL_ENV), URL_ENV))
    key, key_source = _first((api_key, "--api-key"), (env.get(KEY_ENV), KEY_ENV))
    if url is not None:
        return Config(url, key, url_source or "", key_source, unused_stack=stack)
    if not stack:
        raise ConfigError(f"no API URL: pass --api-url, set {URL_ENV}, or name the deployment with --stack NAME")
    values = stack_reader(stack, region, profile)
    if key is None and values.api_key:
        key, key_source = values.api_key, f"stack {stack} ({KEY_ID_OUTPUT})"
    return Config(values.api_url, key, f"stack {stack} ({URL_OUTPUT})", key_source)


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str | None]:
    for value, source in candidates:
        if value:
            return value, source
    return None, None


def masked(key: str | None) -> str:
    """A key as `comfy-api config` shows it: its last four characters."""
    if not key:
        return "(none)"
    return "****" + key[-4:] if len(key) > 8 else "****"
