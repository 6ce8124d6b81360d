"""comfy_core.archive.sweep: ComfyUI's finished outputs copied into S3 (moto in-process).

ComfyUI is played by tests/support/fake_comfy.StreamingComfy: it answers /history from the
recordings and streams /view bodies through a real urllib3 response, so the client's
streaming and status mapping run as in production. `responses` is never used with moto here: both
patch the requests machinery.
"""

from __future__ import annotations

import copy
import io
import json
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
import responses
import urllib3
from botocore.exceptions import EndpointConnectionError
from comfy_core.archive import sweep as archive
from comfy_core.announce import events
from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import Settings, get_settings
from comfy_core.errors import BadRequestError, ComfyUIBadResponseError, ComfyUIFileMissingError
from comfy_core.observability import metrics
from comfy_core.status import iter_file_outputs
from comfy_core.storage import s3_client
from moto import mock_aws
from tests.support.fake_comfy import StreamingComfy
from tests.support.recordings import recorded_file, recording, recording_meta

BUCKET = "image-bucket"
PREVIEW_ID = "11111111-2222-3333-4444-555555555555"  # PreviewImage: 2 files, type temp
SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"  # SaveImage: 1 file, type output
ERROR_ID = "3ce22237-4fda-469c-800a-47f11d6ef536"  # execution error after a preview ran
TEXT_ID = "31cd8298-e897-4455-9231-cf8584069280"  # SaveImage into subfolder "txt" + a text output
CHAIN_ID = "1838acbb-f665-46e1-b5c8-aab365db04da"  # one temp and one output file
INTERRUPTED_ID = "29a077c4-a4d9-49c7-a4fe-a762e23c14a3"  # outputs {}

PNG_TEMP = recorded_file("view_temp.png")
PNG_OUTPUT = recorded_file("view_output.png")


def entry(name: str) -> tuple[str, dict[str, Any]]:
    ((prompt_id, data),) = recording(name).items()
    return prompt_id, data


def history_of(*names: str) -> dict[str, Any]:
    return dict(entry(name) for name in names)


def files_of(history: dict[str, Any]) -> dict[tuple[str, str, str], bytes]:
    """Every file the history lists, with distinct PNG-ish bytes per file."""
    files = {}
    for data in history.values():
        for _, item in iter_file_outputs(data.get("outputs")):
            body = PNG_TEMP if item["type"] == "temp" else PNG_OUTPUT
            files[(item["type"], item.get("subfolder", ""), item["filename"])] = (
                body + item["filename"].encode()
            )
    return files


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The other archive settings are unset by tests/conftest.py: their defaults apply.
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    get_settings.cache_clear()
    events.events_client.cache_clear()
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()
    events.events_client.cache_clear()


class S3Calls:
    """Counts S3 API calls the archiver's client makes, by operation name."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1

    def uploads(self) -> int:
        return sum(self.counts[name] for name in ("PutObject", "UploadPart", "CreateMultipartUpload"))

    def reset(self) -> None:
        self.counts.clear()


@pytest.fixture
def aws(env: None) -> Iterator[Any]:
    with mock_aws():
        s3 = s3_client()  # the client comfy_core uses: hooks on it see every call
        s3.create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture
def s3_calls(aws: Any) -> S3Calls:
    return S3Calls(aws)


def comfy_for(*names: str) -> tuple[StreamingComfy, ComfyUIClient]:
    history = history_of(*names)
    session = StreamingComfy(history, files_of(history))
    return session, ComfyUIClient(get_settings(), session=session)


def metric(name: str) -> float:
    return sum(metrics.metric_set.get(name, {}).get("Value", []))


def stored(s3: Any, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def manifest(s3: Any, prompt_id: str) -> dict[str, Any]:
    return json.loads(stored(s3, f"images/{prompt_id}/manifest.json"))


def keys(s3: Any) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


# -- settings --------------------------------------------------------------------------
def test_settings_defaults(env: None) -> None:
    settings = get_settings()
    assert settings.image_bucket == BUCKET
    assert settings.image_prefix == "images/"
    assert settings.archive_types == ("temp", "output")
    assert settings.archive_max_items == 200
    assert settings.event_bus_name == "default"
    assert settings.presign_expiry == 3600


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("IMAGE_PREFIX", "archive", "image_prefix", "archive/"),
        ("IMAGE_PREFIX", "/a/b/", "image_prefix", "a/b/"),
        ("ARCHIVE_TYPES", " output , temp,", "archive_types", ("output", "temp")),
        ("ARCHIVE_MAX_ITEMS", "25", "archive_max_items", 25),
        ("EVENT_BUS_NAME", "comfy-bus", "event_bus_name", "comfy-bus"),
        ("PRESIGN_EXPIRY_SECONDS", "5", "presign_expiry", 60),
        # Links signed by a role session die with it: a day would be a promise S3 breaks.
        ("PRESIGN_EXPIRY_SECONDS", "86400", "presign_expiry", 3600),
        ("PRESIGN_EXPIRY_SECONDS", "99999999", "presign_expiry", 3600),
    ],
)
def test_settings_from_env(
    env: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings.from_env(), field) == expected


# -- keys ------------------------------------------------------------------------------
def test_keys_are_safe_and_unique_per_node(env: None) -> None:
    settings = get_settings()
    outputs = {
        "../9": {
            "images": [
                {"filename": "a.png", "subfolder": "", "type": "output"},
                {"filename": "a.png", "subfolder": "other", "type": "output"},
                {"filename": "a.png", "subfolder": "", "type": "output"},  # listed twice: one file
                {"filename": "../../etc/passwd", "subfolder": "", "type": "output"},
                {"filename": "x.png", "subfolder": "", "type": "input"},  # type not archived
            ]
        },
        "10": {"text": ["not a file"]},
    }
    planned = archive.plan_files(settings, "p1", {"outputs": outputs})
    found = [(f.subfolder, f.filename, f.key) for f in planned]
    assert found[0][2] == "images/p1/__9/a.png"
    other = found[1][2]
    assert other.startswith("images/p1/__9/a~") and other.endswith(".png") and other != found[0][2]
    assert found[1][:2] == ("other", "a.png")  # the subfolder is kept for the manifest
    assert len(planned) == 3
    for _, _, key in found:
        assert ".." not in key and key.count("/") == 3
    # A later run picks the same keys, so a half-done prompt is resumed, not duplicated.
    assert [f.key for f in archive.plan_files(settings, "p1", {"outputs": outputs})] == [k for *_, k in found]


def test_part_size_keeps_huge_files_within_10000_parts() -> None:
    assert archive._part_size(None) == archive._part_size(300 * 1024 * 1024) == 8 * 1024 * 1024
    huge = 200 * 1024**3  # 200 GiB: 8 MiB parts would need 25,600
    size = archive._part_size(huge)
    assert size % (1024 * 1024) == 0 and -(-huge // size) <= 10_000


# -- client --------------------------------------------------------------------------------
@responses.activate
def test_open_view_streams_and_maps_statuses(env: None) -> None:
    client = ComfyUIClient(get_settings())
    base = get_settings().comfyui_base_url
    meta = recording_meta("view_output")
    responses.get(
        f"{base}/view", body=PNG_OUTPUT, status=200, headers={"Content-Type": meta["headers"]["Content-Type"]}
    )
    response = client.open_view({"filename": "harness_save_00001_.png", "subfolder": "", "type": "output"})
    assert response.raw.read() == PNG_OUTPUT
    assert responses.calls[0].request.headers["Accept-Encoding"] == "identity"
    assert "type=output" in responses.calls[0].request.url
    responses.replace(responses.GET, f"{base}/view", body=b"", status=404)
    with pytest.raises(ComfyUIFileMissingError):
        client.open_view({"filename": "does_not_exist_00001_.png", "subfolder": "", "type": "output"})
    responses.replace(responses.GET, f"{base}/view", body="Traceback...", status=500)
    with pytest.raises(ComfyUIBadResponseError):
        client.open_view({"filename": "x.png", "subfolder": "", "type": "output"})


# -- archiving -----------------------------------------------------------------------------
def test_preview_prompt_temp_files_are_stored_with_manifest(aws: Any) -> None:
    session, client = comfy_for("history_id_success_preview")
    result = archive.archive_prompt(PREVIEW_ID, session.history[PREVIEW_ID], client=client)

    assert result.status == "archived" and result.stored == 2
    first = f"images/{PREVIEW_ID}/2/ComfyUI_temp_oncmo_00001_.png"
    assert stored(aws, first) == session.files[("temp", "", "ComfyUI_temp_oncmo_00001_.png")]
    assert aws.head_object(Bucket=BUCKET, Key=first)["ContentType"] == "image/png"
    doc = manifest(aws, PREVIEW_ID)
    assert doc["prompt_id"] == PREVIEW_ID
    assert (doc["status"], doc["completed"], doc["execution_time"]) == ("success", True, 0.002)
    assert [f["s3_key"] for f in doc["files"]] == [first, first.replace("00001", "00002")]
    assert all(f["archived"] and f["type"] == "temp" and f["node_id"] == "2" for f in doc["files"])
    assert doc["files"][0]["size"] == len(session.files[("temp", "", "ComfyUI_temp_oncmo_00001_.png")])
    assert doc["files"][0]["etag"].startswith('"')
    assert doc["outputs"] == session.history[PREVIEW_ID]["outputs"]
    assert "prompt" not in doc  # never the workflow graph
    assert metric("ImagesArchived") == 2
    assert metric("BytesArchived") == sum(f["size"] for f in doc["files"])


def test_sweep_stores_output_files_and_keeps_subfolder_and_text(aws: Any) -> None:
    session, client = comfy_for("history_id_success_save", "history_id_success_text")
    summary = archive.run_sweep(client=client)

    assert summary["status"] == "ok"
    assert (summary["prompts_archived"], summary["images_archived"]) == (2, 2)
    assert (
        stored(aws, f"images/{SAVE_ID}/2/harness_save_00001_.png")
        == session.files[("output", "", "harness_save_00001_.png")]
    )
    doc = manifest(aws, TEXT_ID)
    assert doc["files"][0]["subfolder"] == "txt"
    assert doc["files"][0]["s3_key"] == f"images/{TEXT_ID}/2/Hello_patched_world_123_00001_.png"
    assert doc["outputs"]["9"] == {"text": ["Hello, patched world! 123"]}
    assert {"filename": ["Hello_patched_world_123_00001_.png"], "subfolder": ["txt"], "type": ["output"]} in [
        view["query"] for view in session.views()
    ]
    assert session.views()[0]["headers"]["Accept-Encoding"] == "identity"


def test_archive_types_setting_limits_what_is_copied(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_TYPES", "output")
    get_settings.cache_clear()
    session, client = comfy_for("history_id_success_chain")
    archive.run_sweep(client=client)
    assert keys(aws) == [f"images/{CHAIN_ID}/6/chain_00001_.png", f"images/{CHAIN_ID}/manifest.json"]
    assert len(session.views()) == 1


def test_execution_error_keeps_the_outputs_made_before_it(aws: Any) -> None:
    session, client = comfy_for("history_id_exec_error_bad_regex")
    summary = archive.run_sweep(client=client)
    assert summary["images_archived"] == 1
    doc = manifest(aws, ERROR_ID)
    assert (doc["status"], doc["completed"]) == ("error", False)
    assert doc["files"][0]["filename"] == "ComfyUI_temp_ulehj_00001_.png" and doc["files"][0]["archived"]


def test_prompt_without_files_gets_a_small_manifest_once(aws: Any, s3_calls: S3Calls) -> None:
    # No file to copy, but the outcome is kept (and announced) once: a small manifest.
    session, client = comfy_for("history_id_interrupted", "history_id_exec_error_save_outside_output")
    summary = archive.run_sweep(client=client)
    assert summary["prompts_seen"] == 2 and summary["images_archived"] == 0
    assert len(session.views()) == 0 and s3_calls.counts["PutObject"] == 2
    failed_id = "315cc78a-3c93-4d4f-83e8-bac8df93641d"  # execution error before any output
    assert keys(aws) == [f"images/{pid}/manifest.json" for pid in (INTERRUPTED_ID, failed_id)]
    assert (manifest(aws, INTERRUPTED_ID)["files"], manifest(aws, INTERRUPTED_ID)["status"]) == ([], "error")

    s3_calls.reset()
    again = archive.run_sweep(client=client)
    assert again["prompts_already_archived"] == 2
    assert dict(s3_calls.counts) == {"ListObjectsV2": 1}


def test_missing_file_is_recorded_as_lost_and_the_run_goes_on(aws: Any) -> None:
    session, client = comfy_for("history_id_success_preview", "history_id_success_save")
    del session.files[("temp", "", "ComfyUI_temp_oncmo_00002_.png")]
    summary = archive.run_sweep(client=client)

    assert summary["status"] == "ok"
    assert (summary["prompts_archived"], summary["images_archived"], summary["images_lost"]) == (2, 2, 1)
    files = manifest(aws, PREVIEW_ID)["files"]
    assert files[0]["archived"] is True
    assert files[1] == {
        "node_id": "2",
        "filename": "ComfyUI_temp_oncmo_00002_.png",
        "subfolder": "",
        "type": "temp",
        "s3_key": None,
        "size": None,
        "content_type": None,
        "etag": None,
        "archived": False,
        "lost": True,
    }
    assert metric("ImagesLost") == 1
    assert f"images/{SAVE_ID}/manifest.json" in keys(aws)


def test_after_a_restart_temp_files_are_lost_and_outputs_stored(aws: Any) -> None:
    # ComfyUI wiped its temp folder while the history still lists the previews.
    session, client = comfy_for(
        "history_id_success_preview", "history_id_success_chain", "history_id_success_save"
    )
    session.files = {k: v for k, v in session.files.items() if k[0] != "temp"}
    summary = archive.run_sweep(client=client)

    assert summary["status"] == "ok"
    assert (summary["images_lost"], summary["images_archived"], summary["prompts_archived"]) == (3, 2, 3)
    chain = {f["type"]: f for f in manifest(aws, CHAIN_ID)["files"]}
    assert chain["temp"]["lost"] is True and chain["output"]["archived"] is True
    assert (
        stored(aws, f"images/{CHAIN_ID}/6/chain_00001_.png")
        == session.files[("output", "harness", "chain_00001_.png")]
    )
    assert metric("ImagesLost") == 3


def test_second_run_with_nothing_new_downloads_and_uploads_nothing(aws: Any, s3_calls: S3Calls) -> None:
    session, client = comfy_for(
        "history_id_success_preview", "history_id_success_save", "history_id_success_chain"
    )
    first = archive.run_sweep(client=client)
    assert first["images_archived"] == 5 and s3_calls.uploads() > 0

    session.calls.clear()
    s3_calls.reset()
    second = archive.run_sweep(client=client)

    assert second["prompts_already_archived"] == 3 and second["images_archived"] == 0
    assert len(session.views()) == 0 and s3_calls.uploads() == 0
    assert session.paths() == ["/history"]
    assert dict(s3_calls.counts) == {"ListObjectsV2": 1}  # one listing answers for every prompt


def test_half_copied_prompt_is_finished_without_uploading_again(aws: Any, s3_calls: S3Calls) -> None:
    session, client = comfy_for("history_id_success_preview")
    # A first run stored one file and then died: no manifest.
    first_key = f"images/{PREVIEW_ID}/2/ComfyUI_temp_oncmo_00001_.png"
    body = session.files[("temp", "", "ComfyUI_temp_oncmo_00001_.png")]
    aws.put_object(
        Bucket=BUCKET,
        Key=first_key,
        Body=body,
        ContentType="image/png",
        Metadata={"source-size": str(len(body))},
    )
    s3_calls.reset()

    summary = archive.run_sweep(client=client)

    assert summary["images_reused"] == 1 and summary["images_archived"] == 1
    assert [view["query"]["filename"][0] for view in session.views()] == [
        "ComfyUI_temp_oncmo_00002_.png"
    ]
    assert s3_calls.counts["PutObject"] == 2  # the missing file and the manifest
    assert [f["archived"] for f in manifest(aws, PREVIEW_ID)["files"]] == [True, True]


def test_object_with_the_wrong_size_is_copied_again(aws: Any) -> None:
    session, client = comfy_for("history_id_success_save")
    key = f"images/{SAVE_ID}/2/harness_save_00001_.png"
    aws.put_object(Bucket=BUCKET, Key=key, Body=b"trunc", Metadata={"source-size": "366"})
    archive.run_sweep(client=client)
    assert stored(aws, key) == session.files[("output", "", "harness_save_00001_.png")]
    assert len(session.views()) == 1


def test_short_download_stores_nothing_and_leaves_the_prompt_open(aws: Any) -> None:
    session, client = comfy_for("history_id_success_save")
    big = bytes(range(256)) * (40 * 1024 * 3)  # ~30 MiB: the multipart path
    session.files[("output", "", "harness_save_00001_.png")] = big
    session.short_by["harness_save_00001_.png"] = 1000
    summary = archive.run_sweep(client=client)

    assert (summary["prompts_incomplete"], summary["images_failed"]) == (1, 1)
    assert keys(aws) == []  # neither a truncated object nor a manifest
    assert aws.list_multipart_uploads(Bucket=BUCKET).get("Uploads") is None  # aborted

    session.short_by.clear()
    assert archive.run_sweep(client=client)["prompts_archived"] == 1
    assert stored(aws, f"images/{SAVE_ID}/2/harness_save_00001_.png") == big
    assert manifest(aws, SAVE_ID)["files"][0]["etag"].endswith('-4"')  # 4 parts of 8 MiB


def test_s3_failure_is_retried_and_leaves_no_manifest(
    aws: Any, s3_calls: S3Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda seconds: None)  # skip backoff
    session, client = comfy_for("history_id_success_preview")
    attempts: list[str] = []

    def second_file_fails(request: Any, **_: Any) -> None:
        # Raised before moto's own before-send handler runs, so nothing reaches moto.
        if request.url.endswith("00002_.png"):
            attempts.append(request.url)
            raise EndpointConnectionError(endpoint_url=request.url)

    aws.meta.events.register_first("before-send.s3.PutObject", second_file_fails)
    summary = archive.run_sweep(client=client)

    assert len(attempts) == 4  # storage.s3_client: standard mode, 3 retries after the first try
    assert (summary["prompts_incomplete"], summary["images_archived"], summary["images_failed"]) == (1, 1, 1)
    assert f"images/{PREVIEW_ID}/manifest.json" not in keys(aws)
    assert archive.load_manifest(PREVIEW_ID) is None

    aws.meta.events.unregister("before-send.s3.PutObject", second_file_fails)
    session.calls.clear()
    assert archive.run_sweep(client=client)["prompts_archived"] == 1
    assert len(session.views()) == 1  # only the file that failed
    assert [f["archived"] for f in manifest(aws, PREVIEW_ID)["files"]] == [True, True]


def test_comfyui_unreachable_ends_the_run_cleanly(aws: Any, s3_calls: S3Calls) -> None:
    session, client = comfy_for("history_id_success_save")
    session.down_after = 0
    summary = archive.run_sweep(client=client)
    assert summary["status"] == "failed" and "unreachable" in summary["error"]
    assert metric("ArchiveRunFailed") == 1
    assert s3_calls.counts.total() == 0


def test_comfyui_going_away_mid_run_stops_without_manifest(aws: Any) -> None:
    session, client = comfy_for("history_id_success_preview", "history_id_success_save")
    session.down_after = 2  # /history and the first /view answer, then nothing
    summary = archive.run_sweep(client=client)
    assert summary["status"] == "failed" and metric("ArchiveRunFailed") == 1
    assert keys(aws) == [f"images/{PREVIEW_ID}/2/ComfyUI_temp_oncmo_00001_.png"]
    assert metric("ImagesArchived") == 1  # what was stored is still counted


def test_run_stops_starting_prompts_when_lambda_time_runs_out(aws: Any) -> None:
    session, client = comfy_for("history_id_success_save")
    summary = archive.run_sweep(client=client, seconds_left=lambda: 5.0)
    assert summary["status"] == "out_of_time" and keys(aws) == [] and len(session.views()) == 0


def test_large_archive_falls_back_to_head_per_prompt(
    aws: Any, s3_calls: S3Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing stays bounded: with far more keys than recent prompts it stops after
    its page budget and asks per prompt instead of walking the whole bucket."""
    monkeypatch.setattr(archive, "LIST_PAGE_SIZE", 10)  # 10 keys a page instead of 1,000
    session, client = comfy_for("history_id_success_save")
    archive.run_sweep(client=client)
    for number in range(25):  # older prompts' files, listed before ours ("0..." < "a...")
        aws.put_object(Bucket=BUCKET, Key=f"images/0old-{number:05d}/1/x.png", Body=b"")
    s3_calls.reset()
    summary = archive.run_sweep(client=client)
    assert summary["prompts_already_archived"] == 1 and s3_calls.uploads() == 0
    assert dict(s3_calls.counts) == {"ListObjectsV2": 1, "HeadObject": 1}


# -- events ------------------------------------------------------------------------------------
def _queue_on_default_bus() -> tuple[Any, str]:
    sqs, bus = boto3.client("sqs", region_name="us-east-1"), boto3.client("events", region_name="us-east-1")
    url = sqs.create_queue(QueueName="archived")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["comfy-serverless-api"], "detail-type": ["ComfyUI Images Archived"]}
    bus.put_rule(Name="archived", EventPattern=json.dumps(pattern))
    bus.put_targets(Rule="archived", Targets=[{"Id": "queue", "Arn": arn}])
    return sqs, url


def test_event_is_sent_once_per_archived_prompt(aws: Any) -> None:
    sqs, url = _queue_on_default_bus()
    session, client = comfy_for("history_id_success_preview")
    archive.run_sweep(client=client)
    archive.run_sweep(client=client)  # nothing new: no second event

    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    event = json.loads(messages[0]["Body"])
    assert (event["source"], event["detail-type"]) == ("comfy-serverless-api", "ComfyUI Images Archived")
    assert event["detail"]["prompt_id"] == PREVIEW_ID
    assert event["detail"]["keys"] == [
        f"images/{PREVIEW_ID}/2/ComfyUI_temp_oncmo_0000{n}_.png" for n in (1, 2)
    ]
    assert event["detail"]["sizes"] == [f["size"] for f in manifest(aws, PREVIEW_ID)["files"]]


def test_event_failure_does_not_undo_the_archive(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_NAME", "no-such-bus")
    get_settings.cache_clear()
    session, client = comfy_for("history_id_success_save")
    summary = archive.run_sweep(client=client)
    assert summary["prompts_archived"] == 1
    assert manifest(aws, SAVE_ID)["files"][0]["archived"] is True


# -- one prompt, reading back --------------------------------------------------------------------
def test_archive_one(aws: Any) -> None:
    session, client = comfy_for("history_id_success_save")
    assert archive.archive_one("00000000-0000-0000-0000-000000000000", client=client) == {
        "prompt_id": "00000000-0000-0000-0000-000000000000",
        "status": "not_finished",
    }
    assert archive.archive_one(SAVE_ID, client=client)["status"] == "archived"
    session.calls.clear()
    assert archive.archive_one(SAVE_ID, client=client)["status"] == "already_archived"
    assert len(session.views()) == 0
    with pytest.raises(BadRequestError):
        archive.archive_one("../x", client=client)


def test_load_manifest_and_presigned_url(aws: Any) -> None:
    assert archive.load_manifest(SAVE_ID) is None
    session, client = comfy_for("history_id_success_save")
    archive.run_sweep(client=client)
    doc = archive.load_manifest(SAVE_ID)
    key = doc["files"][0]["s3_key"]

    url = archive.presigned_url(key)
    assert f"/{key}" in url and "X-Amz-Expires=3600" in url and "X-Amz-Signature=" in url
    assert requests.get(url, timeout=5).content == session.files[("output", "", "harness_save_00001_.png")]
    with pytest.raises(BadRequestError):
        archive.presigned_url("workflows/secret.json")


def test_presign_expiry_follows_settings(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRESIGN_EXPIRY_SECONDS", "900")
    get_settings.cache_clear()
    assert "X-Amz-Expires=900" in archive.presigned_url("images/p/1/a.png")


def test_missing_bucket_setting_is_a_configuration_error(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGE_BUCKET")
    get_settings.cache_clear()
    session, client = comfy_for("history_id_success_save")
    with pytest.raises(archive.ConfigurationError):
        archive.run_sweep(client=client)
    assert session.calls == []


def test_history_entries_are_not_changed(aws: Any) -> None:
    session, client = comfy_for("history_id_success_chain")
    before = copy.deepcopy(session.history)
    archive.run_sweep(client=client)
    assert session.history == before


# -- a history of many megabytes (issue 10, item 3) --------------------------------------
class _BigHistory(StreamingComfy):
    """GET /history answers pre-encoded bytes, streamed: what is measured is the archiver's
    memory, not the stand-in's."""

    def __init__(self, body: bytes) -> None:
        super().__init__({})
        self.body = body

    def _answer(self, call: dict[str, Any], url: str) -> Any:
        if call["path"] != "/history":
            return super()._answer(call, url)
        response = requests.Response()
        response.status_code, response.url = 200, url
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(self.body), status=200, preload_content=False)
        return response


def test_sweep_memory_stays_flat_on_a_20_mb_history(aws: Any) -> None:
    """Twenty 1 MB entries, all archived already: the sweep streams the history and keeps
    ids only. Reading it whole took +54 MB; the peak now stays near one entry."""
    history = {}
    for number in range(20):
        prompt_id = f"{number:08d}-0000-4000-8000-000000000000"
        history[prompt_id] = {"prompt": [number, prompt_id, {"1": {"inputs": {"text": "x" * 1_000_000}}}, {}, []],
                              "outputs": {}, "status": {"status_str": "success", "completed": True, "messages": []}}
        aws.put_object(Bucket=BUCKET, Key=f"images/{prompt_id}/manifest.json", Body=b"{}")
    body = json.dumps(history).encode()
    del history
    assert len(body) > 20_000_000
    client = ComfyUIClient(get_settings(), session=_BigHistory(body))
    tracemalloc.start()
    try:
        summary = archive.run_sweep(client=client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["prompts_seen"] == 20 and summary["prompts_already_archived"] == 20
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB"
