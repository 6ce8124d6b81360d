"""Where the URL and key come from: flags, then COMFY_API_URL / COMFY_API_KEY, then the
CloudFormation stack named by --stack (its ApiUrl output and the API Gateway key its
ApiKeyId output names), read here from moto in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from comfy_api.config import StackValues, resolve
from comfy_api.errors import ConfigError

STACK_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/dev"
KEY_VALUE = "stack-key-value-0123456789"


def no_stack(name: str, region: str | None, profile: str | None) -> StackValues:
    raise AssertionError("the stack must not be read when a URL was given")


def test_a_flag_beats_the_environment() -> None:
    env = {"COMFY_API_URL": "https://env.test", "COMFY_API_KEY": "env-key"}
    config = resolve("https://flag.test", "flag-key", environ=env, stack_reader=no_stack)
    assert (config.api_url, config.api_key) == ("https://flag.test", "flag-key")
    assert (config.url_source, config.key_source) == ("--api-url", "--api-key")


def test_the_environment_fills_what_flags_leave_out() -> None:
    env = {"COMFY_API_URL": "https://env.test", "COMFY_API_KEY": "env-key"}
    config = resolve(None, "flag-key", environ=env, stack_reader=no_stack)
    assert (config.api_url, config.api_key) == ("https://env.test", "flag-key")
    assert (config.url_source, config.key_source) == ("COMFY_API_URL", "--api-key")


def test_a_url_from_flags_or_environment_wins_over_the_stack_and_says_so() -> None:
    config = resolve(None, None, "prod", environ={"COMFY_API_URL": "https://env.test"}, stack_reader=no_stack)
    assert config.api_url == "https://env.test" and config.api_key is None
    assert config.unused_stack == "prod"


def test_the_stack_gives_url_and_key_when_nothing_else_does() -> None:
    asked: list[tuple[str, str | None, str | None]] = []

    def reader(name: str, region: str | None, profile: str | None) -> StackValues:
        asked.append((name, region, profile))
        return StackValues(STACK_URL, KEY_VALUE)

    config = resolve(None, None, "comfy-dev", region="eu-west-1", profile="work", environ={}, stack_reader=reader)
    assert asked == [("comfy-dev", "eu-west-1", "work")]
    assert (config.api_url, config.api_key) == (STACK_URL, KEY_VALUE)
    assert config.url_source == "stack comfy-dev (ApiUrl)"


def test_a_key_from_flags_or_environment_beats_the_stacks_key() -> None:
    reader = lambda *_: StackValues(STACK_URL, KEY_VALUE)  # noqa: E731
    assert resolve(None, "mine", "s", environ={}, stack_reader=reader).api_key == "mine"
    assert resolve(None, None, "s", environ={"COMFY_API_KEY": "env"}, stack_reader=reader).api_key == "env"


def test_nothing_configured_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="pass --api-url, set COMFY_API_URL, or name the deployment with --stack"):
        resolve(environ={})


# -- --stack against CloudFormation and API Gateway (moto) ----------------------------------------
@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def create_stack(name: str, outputs: dict[str, object]) -> None:
    template = {
        "Parameters": {"Stage": {"Type": "String", "Default": "dev"}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(StackName=name, TemplateBody=json.dumps(template))


def api_key(value: str) -> str:
    return boto3.client("apigateway", region_name="us-east-1").create_api_key(
        name="comfy", enabled=True, value=value)["id"]


def test_stack_reads_the_api_url_output_and_the_keys_value(aws: None) -> None:
    create_stack("comfy-serverless-api-dev", {"ApiUrl": STACK_URL, "ApiKeyId": api_key(KEY_VALUE),
                                              "ImageBucketName": "images"})
    config = resolve(stack="comfy-serverless-api-dev", region="us-east-1", environ={})
    assert (config.api_url, config.api_key) == (STACK_URL, KEY_VALUE)
    assert config.key_source == "stack comfy-serverless-api-dev (ApiKeyId)"


def test_a_stack_without_an_api_key_output_gives_no_key(aws: None) -> None:
    create_stack("open", {"ApiUrl": STACK_URL})  # deployed with ApiKeyRequired=false
    config = resolve(stack="open", region="us-east-1", environ={})
    assert (config.api_url, config.api_key) == (STACK_URL, None)


def test_a_missing_stack_or_output_is_a_config_error(aws: None) -> None:
    with pytest.raises(ConfigError, match="stack nope: .*does not exist"):
        resolve(stack="nope", region="us-east-1", environ={})
    create_stack("other", {"Something": "else"})
    with pytest.raises(ConfigError, match="stack other has no ApiUrl output"):
        resolve(stack="other", region="us-east-1", environ={})


def test_the_config_command_shows_each_source_without_the_key(aws: None, cli) -> None:
    create_stack("comfy-serverless-api-dev", {"ApiUrl": STACK_URL, "ApiKeyId": api_key(KEY_VALUE)})
    result = cli("--stack", "comfy-serverless-api-dev", "--region", "us-east-1", "config", "--json", env={})
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "api_url": STACK_URL, "api_url_source": "stack comfy-serverless-api-dev (ApiUrl)",
        "api_key": "****6789", "api_key_source": "stack comfy-serverless-api-dev (ApiKeyId)"}
    assert KEY_VALUE not in result.stdout + result.stderr

    shadowed = cli("--stack", "comfy-serverless-api-dev", "config", env={"COMFY_API_URL": "https://env.test"})
    assert shadowed.code == 0
    assert "api_url  https://env.test  (COMFY_API_URL)" in shadowed.stdout
    assert shadowed.stderr_lines == [
        "comfy-api: --stack comfy-serverless-api-dev not used: COMFY_API_URL gives the URL"]
