"""Read a SAM ``template.yaml`` the way the local API needs it.

Only the parts a local run needs are modelled: parameters, conditions, the
intrinsic functions used in property values, functions, their Api, schedule and
EventBridge rule events, queue event source mappings, the S3 buckets, SQS queues
and DynamoDB tables. Everything is read from the template so that routes, handlers
and environment are never listed a second time in code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "comfy-local"
DEFAULT_STAGE = "Prod"  # the stage SAM gives its implicit API

FUNCTION_TYPE = "AWS::Serverless::Function"
API_TYPE = "AWS::Serverless::Api"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
BUCKET_TYPE = "AWS::S3::Bucket"
TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
MAPPING_TYPE = "AWS::Lambda::EventSourceMapping"
DEFAULT_BUS = "default"
# Lambda's defaults for an asynchronous invocation without EventInvokeConfig.
DEFAULT_ASYNC_RETRIES = 2


class TemplateError(ValueError):
    """The template uses something this local reader cannot resolve."""


class _NoValue:
    """Marker for ``!Ref AWS::NoValue``: the enclosing key or item is dropped."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

# What ``!Ref AWS::...`` gives in a local stack.
PSEUDO_PARAMETERS: dict[str, Any] = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::StackName": STACK_NAME,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
    "AWS::NoValue": NO_VALUE,
}


def lambda_arn(function_name: str) -> str:
    """The ARN of a function of the local stack, from its FunctionName."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"


def queue_url(queue_name: str) -> str:
    """What ``!Ref`` gives for a queue. moto (any endpoint) finds the queue by its last
    segment, so the AWS form works locally too."""
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{queue_name}"


def queue_arn(queue_name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"


# --------------------------------------------------------------------------
# YAML loading
# --------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short-form tags (``!Ref`` ...)."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)

    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # Short form "Res.Attr" is the long form ["Res", "Attr"]: split here, once.
        value = split_attribute(value)
    return {f"Fn::{tag_suffix}": value}


def split_attribute(text: str) -> list[str]:
    """"Res.Attr" -> ["Res", "Attr"]: only the first dot separates, attributes may contain dots."""
    resource, _, attribute = text.partition(".")
    return [resource, attribute]


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError(f"{path}: not a CloudFormation template")
    return document


# --------------------------------------------------------------------------
# What the template exposes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str  # the local FunctionName
    code_uri: Path  # absolute folder
    handler: str  # "app.lambda_handler"
    environment: dict[str, str]
    timeout: int
    memory_size: int
    layer_dirs: tuple[Path, ...] = ()

    @property
    def arn(self) -> str:
        return lambda_arn(self.name)


@dataclass(frozen=True)
class Route:
    method: str  # upper case, "ANY" matches every method
    path: str  # "/api/image/{prompt_id}", may end in "{proxy+}"
    function_id: str
    api_key_required: bool
    stage: str = DEFAULT_STAGE
    event_name: str = ""


@dataclass(frozen=True)
class Schedule:
    function_id: str
    expression: str  # "rate(1 minute)" or "cron(...)"
    payload: Any  # the event the function receives on each tick


@dataclass(frozen=True)
class Bucket:
    logical_id: str
    name: str
    versioned: bool = False
    eventbridge: bool = False  # "Object Created" ... events go to the default bus


@dataclass(frozen=True)
class Queue:
    logical_id: str
    name: str
    attributes: dict[str, str]  # as `create_queue` takes them (RedrivePolicy as JSON)

    @property
    def url(self) -> str:
        return queue_url(self.name)


@dataclass(frozen=True)
class QueueMapping:
    """An SQS event source mapping: Lambda polls the queue and invokes the function."""

    function_id: str
    queue_name: str
    batch_size: int
    report_batch_item_failures: bool


@dataclass(frozen=True)
class EventRule:
    """An EventBridgeRule event: events on `bus` matching `pattern` invoke the function."""

    function_id: str
    event_name: str
    bus: str
    pattern: dict[str, Any]


@dataclass(frozen=True)
class AsyncConfig:
    """How Lambda handles a failed asynchronous invocation (EventInvokeConfig)."""

    max_retries: int = DEFAULT_ASYNC_RETRIES
    on_failure_queue: str | None = None  # an SQS destination's queue name


@dataclass
class Template:
    """A loaded template with its intrinsics resolved for a local stack."""

    path: Path
    parameters: dict[str, Any]
    document: dict[str, Any]
    _conditions: dict[str, bool] = field(default_factory=dict, repr=False)
    _apis: dict[str | None, dict[str, Any]] = field(default_factory=dict, repr=False)

    # -- construction ------------------------------------------------------

    @classmethod
    def load(
        cls, path: str | Path, parameter_overrides: Mapping[str, Any] | None = None
    ) -> "Template":
        path = Path(path).resolve()
        document = load_yaml(path)
        parameters = _parameter_values(document, parameter_overrides or {})
        return cls(path=path, parameters=parameters, document=document)

    def with_parameters(self, overrides: Mapping[str, Any]) -> "Template":
        """The same template (not read again) with some parameter values changed."""
        parameters = _parameter_values(self.document, {**self.parameters, **overrides})
        return type(self)(path=self.path, parameters=parameters, document=self.document)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.document.get("Resources") or {}

    def _of_type(self, type_name: str) -> dict[str, dict[str, Any]]:
        """Resources of this type whose Condition (if any) holds."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == type_name
            and (resource.get("Condition") is None or self.condition(resource["Condition"]))
        }

    def _globals(self, section: str) -> dict[str, Any]:
        """``Globals.<section>`` (Function, Api...), empty when absent."""
        return (self.document.get("Globals") or {}).get(section) or {}

    # -- conditions ----------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            definitions = self.document.get("Conditions") or {}
            if name not in definitions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.resolve(definitions[name]))
        return self._conditions[name]

    # -- intrinsic functions -----------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic inside ``value``; NO_VALUE entries are dropped."""
        if isinstance(value, list):
            items = (self.resolve(item) for item in value)
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._intrinsic(key[4:], argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _intrinsic(self, name: str, argument: Any) -> Any:
        if name == "If":
            condition, when_true, when_false = argument
            return self.resolve(when_true if self.condition(condition) else when_false)
        if name == "GetAtt":
            # CfnLoader splits the short form; a hand-written long form may be a string too.
            resource, attribute = split_attribute(argument) if isinstance(argument, str) else argument
            return self.get_att(self.resolve(resource), self.resolve(attribute))
        if name == "Sub":
            return self._sub(argument)

        argument = self.resolve(argument)
        if name == "Equals":
            left, right = argument
            return str(left) == str(right)
        if name == "Not":
            (inner,) = argument
            return not inner
        if name == "And":
            return all(argument)
        if name == "Or":
            return any(argument)
        if name == "Join":
            delimiter, items = argument
            return delimiter.join(str(item) for item in items)
        if name == "Select":
            index, items = argument
            return items[int(index)]
        if name == "Split":
            delimiter, text = argument
            return text.split(delimiter)
        if name == "FindInMap":
            map_name, top_key, second_key = argument
            return self.document["Mappings"][map_name][top_key][second_key]
        if name == "GetAZs":
            return [f"{REGION}{zone}" for zone in "abc"]
        if name == "Base64":
            import base64

            return base64.b64encode(str(argument).encode()).decode()
        raise TemplateError(f"intrinsic Fn::{name} is not supported locally")

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], self.resolve(argument[1])
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):  # "${!Literal}" escapes the substitution
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(variables[expression])
            resource, attribute = split_attribute(expression)
            if attribute and resource in self.resources:
                return str(self.get_att(resource, attribute))
            return str(self.ref(expression))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def ref(self, name: str) -> Any:
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.parameters:
            return self.parameters[name]
        if self.resources.get(name, {}).get("Type") == QUEUE_TYPE:
            return queue_url(self.physical_name(name))
        return self.physical_name(name)

    def physical_name(self, logical_id: str) -> str:
        """What ``!Ref`` gives for a resource: a stable local name."""
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"!Ref to unknown parameter or resource {logical_id!r}")
        properties = resource.get("Properties") or {}
        explicit = {BUCKET_TYPE: "BucketName", FUNCTION_TYPE: "FunctionName", QUEUE_TYPE: "QueueName"}.get(
            resource.get("Type", "")
        )
        if explicit and explicit in properties:
            return str(self.resolve(properties[explicit]))
        if resource.get("Type") == BUCKET_TYPE:
            return f"{STACK_NAME}-{logical_id.lower()}"  # bucket names must be lower case
        return f"{STACK_NAME}-{logical_id}"

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource_type = self.resources.get(logical_id, {}).get("Type", "")
        name = self.physical_name(logical_id)
        if resource_type == BUCKET_TYPE:
            return {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com",
            }.get(attribute, f"{name}.{attribute}")
        if resource_type == FUNCTION_TYPE and attribute == "Arn":
            return lambda_arn(name)
        if resource_type == QUEUE_TYPE:
            return {"Arn": queue_arn(name), "QueueName": name, "QueueUrl": queue_url(name)}.get(
                attribute, f"{name}.{attribute}")
        if attribute == "Arn":
            service = resource_type.split("::")[1].lower() if "::" in resource_type else "local"
            return f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{name}"
        return f"{name}.{attribute}"

    # -- functions -----------------------------------------------------------

    def functions(self) -> list[Function]:
        return [
            self._function(logical_id, resource)
            for logical_id, resource in self._of_type(FUNCTION_TYPE).items()
        ]

    def function(self, logical_id: str) -> Function:
        resource = self._of_type(FUNCTION_TYPE).get(logical_id)
        if resource is None:
            raise KeyError(logical_id)
        return self._function(logical_id, resource)

    def _function(self, logical_id: str, resource: Mapping[str, Any]) -> Function:
        own = resource.get("Properties") or {}
        shared = self._globals("Function")

        def prop(name: str, default: Any = None) -> Any:
            return self.resolve(own[name]) if name in own else self.resolve(shared.get(name, default))

        code_uri = prop("CodeUri")
        handler = prop("Handler")
        if not isinstance(code_uri, str) or not handler:
            raise TemplateError(f"{logical_id}: local runs need a folder CodeUri and a Handler")

        # Globals' variables first, the function's own win (SAM merges maps this way).
        variables = dict(self.resolve(_env_vars(shared)))
        variables.update(self.resolve(_env_vars(own)))

        layers = list(shared.get("Layers") or []) + list(own.get("Layers") or [])
        return Function(
            logical_id=logical_id,
            name=self.physical_name(logical_id),
            code_uri=(self.root / code_uri).resolve(),
            handler=handler,
            environment={key: _env_string(value) for key, value in variables.items()},
            timeout=int(prop("Timeout", 3)),
            memory_size=int(prop("MemorySize", 128)),
            layer_dirs=tuple(self._layer_dirs(layers)),
        )

    def _layer_dirs(self, layers: list[Any]) -> list[Path]:
        """Folders of layers built from this template (`!Ref SomeLayerVersion`)."""
        folders = []
        for layer in layers:
            logical_id = layer.get("Ref") if isinstance(layer, dict) else None
            resource = self.resources.get(logical_id or "", {})
            if resource.get("Type") != LAYER_TYPE:
                continue  # a published layer ARN: nothing local to add
            content = self.resolve((resource.get("Properties") or {}).get("ContentUri"))
            if isinstance(content, str):
                folder = (self.root / content).resolve()
                # A prebuilt layer keeps Python code under python/ (as in /opt/python);
                # a layer SAM builds (BuildMethod pythonX) is the package folder itself.
                folders.append(folder / "python" if (folder / "python").is_dir() else folder)
        return folders

    # -- API routes ----------------------------------------------------------

    def routes(self) -> list[Route]:
        routes = []
        for function_id, resource in self._of_type(FUNCTION_TYPE).items():
            events = (resource.get("Properties") or {}).get("Events") or {}
            for event_name, event in events.items():
                if event.get("Type") == "Api":
                    routes.append(self._route(function_id, event_name, event))
        return routes

    def _route(self, function_id: str, event_name: str, event: Mapping[str, Any]) -> Route:
        properties = self.resolve(event.get("Properties") or {})
        api_properties = self._api_properties(event)
        method = str(properties["Method"]).upper()
        path = str(properties["Path"])
        return Route(
            method=method,
            path=path,
            function_id=function_id,
            api_key_required=_api_key_required(properties, api_properties, method, path),
            stage=str(api_properties.get("StageName") or DEFAULT_STAGE),
            event_name=event_name,
        )

    def _api_properties(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Globals.Api merged with the Api resource the event points at (if any);
        resolved once per Api, however many routes it has."""
        rest_api = (event.get("Properties") or {}).get("RestApiId")
        logical_id = rest_api.get("Ref") if isinstance(rest_api, dict) else rest_api
        if logical_id not in self._apis:
            merged = dict(self.resolve(self._globals("Api")))
            resource = self.resources.get(logical_id or "")
            if resource and resource.get("Type") == API_TYPE:
                merged.update(self.resolve(resource.get("Properties") or {}))
            self._apis[logical_id] = merged
        return self._apis[logical_id]

    # -- API Gateway's own answers ----------------------------------------------

    def gateway_responses(self) -> dict[str, tuple[int | None, str | None]]:
        """GatewayResponses of the template's Api resources: response type (e.g.
        MISSING_AUTHENTICATION_TOKEN) -> (status code or None, application/json template or
        None). Empty when the template declares none: API Gateway's defaults then apply."""
        found: dict[str, tuple[int | None, str | None]] = {}
        for resource in self._of_type(API_TYPE).values():
            responses = self.resolve((resource.get("Properties") or {}).get("GatewayResponses") or {})
            for kind, response in responses.items():
                status = response.get("StatusCode")
                body = (response.get("ResponseTemplates") or {}).get("application/json")
                found[str(kind)] = (int(status) if status is not None else None, body)
        return found

    # -- schedules -----------------------------------------------------------

    def schedules(self) -> list[Schedule]:
        """Schedule / ScheduleV2 events: what EventBridge would invoke, and how often."""
        found = []
        for function_id, resource in self._of_type(FUNCTION_TYPE).items():
            events = (resource.get("Properties") or {}).get("Events") or {}
            for event in events.values():
                if event.get("Type") not in ("Schedule", "ScheduleV2"):
                    continue
                properties = self.resolve(event.get("Properties") or {})
                if properties.get("Enabled") is False or properties.get("State") == "DISABLED":
                    continue
                found.append(Schedule(
                    function_id=function_id,
                    expression=str(properties.get("Schedule") or properties.get("ScheduleExpression")),
                    payload=_schedule_payload(event["Type"], properties),
                ))
        return found

    # -- buckets -------------------------------------------------------------

    def buckets(self) -> list[Bucket]:
        found = []
        for logical_id, resource in self._of_type(BUCKET_TYPE).items():
            props = self.resolve(resource.get("Properties") or {})
            versioning = (props.get("VersioningConfiguration") or {}).get("Status")
            notifications = props.get("NotificationConfiguration") or {}
            found.append(Bucket(
                logical_id=logical_id,
                name=self.physical_name(logical_id),
                versioned=versioning == "Enabled",
                eventbridge=_truthy((notifications.get("EventBridgeConfiguration") or {})
                                    .get("EventBridgeEnabled", False)),
            ))
        return found

    # -- queues and what reads them ------------------------------------------

    def queues(self) -> list[Queue]:
        """The template's queues, dead-letter queues first (a redrive policy names one)."""
        found = []
        for logical_id, resource in self._of_type(QUEUE_TYPE).items():
            props = self.resolve(resource.get("Properties") or {})
            attributes = {
                name: str(props[name])
                for name in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                             "ReceiveMessageWaitTimeSeconds", "MaximumMessageSize")
                if name in props
            }
            if "RedrivePolicy" in props:
                attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
            found.append(Queue(logical_id, self.physical_name(logical_id), attributes))
        return sorted(found, key=lambda queue: "RedrivePolicy" in queue.attributes)

    def queue_mappings(self) -> list[QueueMapping]:
        """SQS event source mappings: AWS::Lambda::EventSourceMapping resources and SAM
        `SQS` events. Disabled ones are left out."""
        by_name = {function.name: function.logical_id for function in self.functions()}
        found = []
        for resource in self._of_type(MAPPING_TYPE).values():
            props = self.resolve(resource.get("Properties") or {})
            source = str(props.get("EventSourceArn") or "")
            if not source.startswith("arn:aws:sqs:") or props.get("Enabled") is False:
                continue
            function = str(props["FunctionName"]).split(":function:")[-1].split(":")[0]
            found.append(_queue_mapping(by_name.get(function, function), source, props))
        for function_id, resource in self._of_type(FUNCTION_TYPE).items():
            events = (resource.get("Properties") or {}).get("Events") or {}
            for event in events.values():
                if event.get("Type") == "SQS":
                    props = self.resolve(event.get("Properties") or {})
                    if props.get("Enabled") is not False:
                        found.append(_queue_mapping(function_id, str(props["Queue"]), props))
        return found

    def event_rules(self) -> list[EventRule]:
        """EventBridgeRule events (and CloudWatchEvent, their old name) with a pattern."""
        found = []
        for function_id, resource in self._of_type(FUNCTION_TYPE).items():
            events = (resource.get("Properties") or {}).get("Events") or {}
            for event_name, event in events.items():
                if event.get("Type") not in ("EventBridgeRule", "CloudWatchEvent"):
                    continue
                props = self.resolve(event.get("Properties") or {})
                if props.get("State") == "DISABLED" or props.get("Enabled") is False:
                    continue
                found.append(EventRule(
                    function_id=function_id,
                    event_name=event_name,
                    bus=str(props.get("EventBusName") or DEFAULT_BUS),
                    pattern=props["Pattern"],
                ))
        return found

    def async_config(self, function_id: str) -> AsyncConfig:
        """The function's EventInvokeConfig: retries and the SQS on-failure destination."""
        resource = self._of_type(FUNCTION_TYPE)[function_id]
        config = self.resolve((resource.get("Properties") or {}).get("EventInvokeConfig") or {})
        failure = ((config.get("DestinationConfig") or {}).get("OnFailure") or {})
        destination = str(failure.get("Destination") or "")
        return AsyncConfig(
            max_retries=int(config.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES)),
            on_failure_queue=destination.rsplit(":", 1)[1] if destination.startswith("arn:aws:sqs:") else None,
        )

    # -- tables --------------------------------------------------------------

    def tables(self) -> list[dict[str, Any]]:
        """DynamoDB tables as `create_table` arguments (name, keys, attributes)."""
        found = []
        for logical_id, resource in self._of_type(TABLE_TYPE).items():
            props = self.resolve(resource.get("Properties") or {})
            found.append({
                "TableName": self.physical_name(logical_id),
                "KeySchema": props["KeySchema"],
                "AttributeDefinitions": props["AttributeDefinitions"],
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            })
        return found


def _api_key_required(
    event_properties: Mapping[str, Any], api_properties: Mapping[str, Any], method: str, path: str
) -> bool:
    """Whether API Gateway would demand x-api-key for this route.

    Most specific first: the event's Auth, then the security of this operation
    in the Api's DefinitionBody (where a template must put a parameter-driven
    requirement, SAM reads Auth before parameters are known), then the Api's Auth,
    then the DefinitionBody's document-wide security.
    """
    event_auth = event_properties.get("Auth") or {}
    if "ApiKeyRequired" in event_auth:
        return _truthy(event_auth["ApiKeyRequired"])
    definition = api_properties.get("DefinitionBody") or {}
    operation = _operation(definition, method, path)
    if "security" in operation:
        return _demands_api_key(definition, operation["security"])
    api_auth = api_properties.get("Auth") or {}
    if "ApiKeyRequired" in api_auth:
        return _truthy(api_auth["ApiKeyRequired"])
    return _demands_api_key(definition, definition.get("security") or [])


def _operation(definition: Mapping[str, Any], method: str, path: str) -> Mapping[str, Any]:
    operations = (definition.get("paths") or {}).get(path) or {}
    key = "x-amazon-apigateway-any-method" if method == "ANY" else method.lower()
    return operations.get(key) or {}


def _demands_api_key(definition: Mapping[str, Any], security: list[Any]) -> bool:
    """True when a security requirement names an apiKey scheme (swagger 2 or OpenAPI 3)."""
    schemes = dict(definition.get("securityDefinitions") or {})
    schemes.update((definition.get("components") or {}).get("securitySchemes") or {})
    for requirement in security or []:
        for name in requirement or {}:
            if (schemes.get(name) or {}).get("type") == "apiKey":
                return True
    return False


def _queue_mapping(function_id: str, source_arn: str, props: Mapping[str, Any]) -> QueueMapping:
    return QueueMapping(
        function_id=function_id,
        queue_name=source_arn.rsplit(":", 1)[1],
        batch_size=int(props.get("BatchSize", 10)),  # Lambda's default for SQS
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
    )


def _schedule_payload(event_type: str, properties: Mapping[str, Any]) -> Any:
    if "Input" in properties:  # a JSON text in the template
        return json.loads(properties["Input"])
    if event_type == "Schedule":  # an EventBridge rule sends a "Scheduled Event"
        return {
            "version": "0",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "region": REGION,
            "resources": [],
            "detail": {},
        }
    return {}  # EventBridge Scheduler without Input


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of ``rate(N unit)``; None for cron expressions."""
    match = re.fullmatch(r"rate\(\s*(\d+)\s+(minute|hour|day)s?\s*\)", expression.strip())
    if match is None:
        return None
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2)]
    return float(int(match.group(1)) * unit)


def _parameter_values(
    document: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    declared = document.get("Parameters") or {}
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            value = overrides[name]
        elif "Default" in (spec or {}):
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name!r} has no Default; pass a value")
        values[name] = _parameter_value(value, (spec or {}).get("Type", "String"))
    return values


def _parameter_value(value: Any, type_name: str) -> Any:
    # CloudFormation hands every parameter over as a string (lists for list types).
    if "List" in type_name and isinstance(value, str):
        return [item.strip() for item in value.split(",")] if value else []
    if isinstance(value, list):
        return [str(item) for item in value]
    return _env_string(value)


def _env_vars(properties: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((properties.get("Environment") or {}).get("Variables")) or {}


def _env_string(value: Any) -> str:
    """Lambda environment values are strings; YAML may have typed them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
