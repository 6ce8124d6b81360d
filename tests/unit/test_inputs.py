"""comfy_core.workflows.inputs and comfy_core.workflows.images: input images from a request to ComfyUI's input
folder (issue 11). Recorded PNG/WebP bodies; S3 from moto in-process; ComfyUI faked at the
session level; URL inputs from a raw socket peer on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from moto import mock_aws

from comfy_core.workflows import images, inputs
from comfy_core import netguard
from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import get_settings
from comfy_core.errors import BadRequestError, FetchError
from comfy_core.storage import s3_client
from tests.support.fake_comfy import UploadingComfy
from tests.support.raw_http import RawServer, answer
from tests.support.recordings import recorded_file

PNG = recorded_file("view_temp.png")  # 64x48, what ComfyUI wrote
WEBP = recorded_file("view_input_webp.webp")
BUCKET = "image-bucket"
IMG2IMG = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
}
INPAINT = {**IMG2IMG, "4": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}}}


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


def jpeg(width: int, height: int, exif: int = 0) -> bytes:
    """SOI, an APP1 block of `exif` bytes, then a baseline SOF0 frame header."""
    app1 = b"\xff\xe1" + struct.pack(">H", exif + 2) + b"\0" * exif if exif else b""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof + b"\xff\xda\x00\x02" + b"\x00" * 16


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


# -- recognising images by their bytes ------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "kind", "size"),
    [(PNG, "png", (64, 48)), (WEBP, "webp", None), (jpeg(640, 480), "jpeg", (640, 480)),
     (jpeg(33, 17, exif=60_000), "jpeg", (33, 17)), (gif(5, 7), "gif", (5, 7))],
)
def test_images_are_recognised_by_their_bytes(data: bytes, kind: str, size: tuple[int, int] | None) -> None:
    info = images.sniff(data)
    assert info.kind == kind and info.width > 0 and info.height > 0
    if size:
        assert (info.width, info.height) == size


@pytest.mark.parametrize("data", [b"hello, I am text named x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 4,
                                  b"RIFF\0\0\0\0WEBPJUNK" + b"\0" * 20, b"\xff\xd8\xff" + b"\x00" * 10, b""])
def test_anything_else_is_415(data: bytes) -> None:
    with pytest.raises(images.NotAnImageError) as caught:
        images.sniff(data)
    assert caught.value.status_code == 415


# -- where references go --------------------------------------------------------------------
def test_image_fills_the_one_load_image_node_and_mask_the_one_mask_node() -> None:
    rest, targets = inputs.take_targets(INPAINT, {"prompt": "x", "image": b64(PNG), "mask": b64(PNG)})
    assert rest == {"prompt": "x"}
    assert [(t.node_id, t.field) for t in targets] == [("1", "image"), ("4", "mask")]


def test_several_or_no_candidates_are_a_400_naming_them() -> None:
    two = {**IMG2IMG, "9": {"class_type": "LoadImage", "inputs": {"image": "b.png"}}}
    with pytest.raises(BadRequestError, match=r"exactly one LoadImage node .*found: 1, 9"):
        inputs.take_targets(two, {"image": b64(PNG)})
    with pytest.raises(BadRequestError, match=r"exactly one LoadImageMask node .*found: none"):
        inputs.take_targets(IMG2IMG, {"mask": b64(PNG)})


def test_images_names_nodes_explicitly_and_only_image_loaders() -> None:
    _, targets = inputs.take_targets(INPAINT, {"images": {"1": b64(PNG), "4": {"upload_id": "a" * 32}}})
    assert [t.node_id for t in targets] == ["1", "4"]
    with pytest.raises(BadRequestError, match="node 2 is a ImageInvert, not an image loader"):
        inputs.take_targets(INPAINT, {"images": {"2": b64(PNG)}})
    with pytest.raises(BadRequestError, match="no node 77"):
        inputs.take_targets(INPAINT, {"images": {"77": b64(PNG)}})


def test_advanced_format_object_in_place_of_a_file_name_is_a_reference() -> None:
    body = {"1": {"inputs": {"image": {"url": "https://example.com/a.png"}}},
            "4": {"inputs": {"image": "kept.png", "channel": "red"}}, "client_id": "c"}
    rest, targets = inputs.take_targets(INPAINT, body)
    assert [(t.node_id, t.ref) for t in targets] == [("1", {"url": "https://example.com/a.png"})]
    assert rest == {"4": {"inputs": {"image": "kept.png", "channel": "red"}}, "client_id": "c"}


@pytest.mark.parametrize("ref", [{"path": "/etc/passwd"}, {"upload_id": "../x"}, {"url": ""}, "photo.png",
                                 {"base64": "x", "url": "y"}, 42])
def test_malformed_references_are_400_before_any_io(ref: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        inputs.take_targets(IMG2IMG, {"image": ref})
    assert caught.value.status_code == 400 and "'image" in caught.value.message


# -- reading inputs ---------------------------------------------------------------------------
@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    monkeypatch.setenv("MAX_INPUT_BYTES", "100000")
    get_settings.cache_clear()
    return get_settings()


def target(ref: Any, field: str = "image") -> inputs.Target:
    return inputs.Target("1", ref, field)


def test_inline_base64_and_data_urls_are_read_and_named_by_their_hash(settings) -> None:
    digest = hashlib.sha256(PNG).hexdigest()
    for ref in (b64(PNG), "data:image/png;base64," + base64.b64encode(PNG).decode()):
        spooled = inputs.spool(target(ref), settings, allow_s3=False)
        assert (spooled.size, spooled.sha256, spooled.name) == (len(PNG), digest, f"{digest[:40]}.png")
        assert spooled.file.read() == PNG
        spooled.close()


def test_bad_inline_inputs_get_clear_statuses(settings) -> None:
    cases = [(b64(b"plain text, not a picture"), 415, "not a PNG, JPEG, WebP or GIF"),
             ({"base64": "%%%"}, 400, "not valid base64"),
             (b64(b"\x89PNG" + b"\0" * 200_000), 413, "larger than 100000 bytes"),
             (b64(jpeg(20_000, 20_000)), 413, "20000x20000 pixels")]
    for ref, status, words in cases:
        with pytest.raises(BadRequestError) as caught:
            inputs.spool(target(ref), settings, allow_s3=False)
        assert caught.value.status_code == status and words in caught.value.message
        assert "'image'" in caught.value.message


@pytest.fixture
def s3(settings) -> Iterator[Any]:
    with mock_aws():
        client = s3_client()
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_an_upload_is_read_from_s3_and_one_that_is_no_image_is_deleted(s3, settings) -> None:
    s3.put_object(Bucket=BUCKET, Key="inputs/" + "a" * 32, Body=PNG)
    s3.put_object(Bucket=BUCKET, Key="inputs/" + "b" * 32, Body=b"not a picture")
    spooled = inputs.spool(target({"upload_id": "a" * 32}), settings, allow_s3=False)
    assert spooled.file.read() == PNG
    with pytest.raises(images.NotAnImageError):
        inputs.spool(target({"upload_id": "b" * 32}), settings, allow_s3=False)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["inputs/" + "a" * 32]  # the refused one is gone, the good one kept
    with pytest.raises(BadRequestError, match="unknown or expired"):
        inputs.spool(target({"upload_id": "c" * 32}), settings, allow_s3=False)


def test_an_upload_over_the_byte_cap_is_refused_and_deleted(s3, settings) -> None:
    """The signed size keeps a presigned PUT under MAX_INPUT_BYTES, but the cap may have been
    lowered since: such an upload can never be used either, and is not kept."""
    s3.put_object(Bucket=BUCKET, Key="inputs/" + "d" * 32, Body=PNG + b"\0" * settings.max_input_bytes)
    with pytest.raises(inputs.InputTooLargeError):
        inputs.spool(target({"upload_id": "d" * 32}), settings, allow_s3=False)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="inputs/" + "d" * 32)


def test_s3_references_are_for_jobs_and_only_under_the_input_prefix(s3, settings) -> None:
    s3.put_object(Bucket=BUCKET, Key="inputs/job/x.png", Body=PNG)
    ref = {"s3": f"s3://{BUCKET}/inputs/job/x.png"}
    assert inputs.spool(target(ref), settings, allow_s3=True).size == len(PNG)
    with pytest.raises(BadRequestError, match="event-driven jobs only"):
        inputs.spool(target(ref), settings, allow_s3=False)
    for outside in (f"s3://{BUCKET}/images/x.png", "s3://other-bucket/inputs/x.png",
                    f"s3://{BUCKET}/inputs/../images/x.png"):
        with pytest.raises(BadRequestError, match="must name an object under"):
            inputs.spool(target({"s3": outside}), settings, allow_s3=True)


# -- input URLs: the webhook SSRF rules plus an allowlist -------------------------------------
@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    table: dict[str, str] = {}

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table.get(host, host), port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return table


@pytest.mark.parametrize(("url", "address", "words"), [
    ("http://assets.example.com/a.png", "93.184.216.34", "https"),
    ("https://assets.example.com/a.png", "10.0.3.7", "private"),
    ("https://assets.example.com/a.png", "127.0.0.1", "private"),
    ("https://assets.example.com/a.png", "169.254.169.254", "private"),
    ("https://[64:ff9b::a00:307]/a.png", None, "private"),
])
def test_input_urls_follow_the_webhook_rules(settings, resolve, url, address, words) -> None:
    if address:
        resolve["assets.example.com"] = address
    with pytest.raises(BadRequestError) as caught:
        inputs.spool(target({"url": url}), settings, allow_s3=False)
    assert caught.value.status_code == 400 and "'image.url'" in caught.value.message
    assert words in caught.value.message.lower() or "internal" in caught.value.message.lower()


def test_an_allowlist_admits_only_its_hosts_and_may_name_a_private_one(settings, resolve, monkeypatch) -> None:
    monkeypatch.setenv("INPUT_URL_ALLOWLIST", "assets.internal.example,.cdn.example.com")
    get_settings.cache_clear()
    settings = get_settings()
    resolve.update({"assets.internal.example": "10.0.3.7", "img.cdn.example.com": "10.0.3.8",
                    "other.example.org": "93.184.216.34"})
    rules = inputs.url_rules(settings)
    assert netguard.check_url("https://assets.internal.example/a.png", rules).addresses  # named exactly
    for url in ("https://img.cdn.example.com/a.png", "https://other.example.org/a.png"):
        with pytest.raises(BadRequestError):
            inputs.spool(target({"url": url}), settings, allow_s3=False)


@pytest.fixture
def loopback_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the fetch reach a peer on 127.0.0.1 over http: the address rules are the tests
    above; these are about what happens once connected."""
    monkeypatch.setattr(inputs, "url_rules", lambda settings: netguard.Rules(allow_http=True, allow_private=True))


def test_a_url_input_is_fetched_with_a_byte_cap(settings, loopback_rules) -> None:
    with RawServer(answer(200, {"Content-Type": "image/png"}, PNG)) as server:
        spooled = inputs.spool(target({"url": server.url("/a.png")}), settings, allow_s3=False)
        assert spooled.file.read() == PNG
    with RawServer(answer(200, body=b"\x89PNG" + b"\0" * 200_000)) as server:
        with pytest.raises(FetchError) as caught:
            inputs.spool(target({"url": server.url("/big.png")}), settings, allow_s3=False)
    assert caught.value.status_code == 413


def test_a_url_that_answers_404_is_the_clients_400(settings, loopback_rules) -> None:
    with RawServer(answer(404)) as server:
        with pytest.raises(BadRequestError, match="answered HTTP 404"):
            inputs.spool(target({"url": server.url("/gone.png")}), settings, allow_s3=False)


# -- into ComfyUI ----------------------------------------------------------------------------
def test_identical_inputs_are_uploaded_once_under_their_hash(settings) -> None:
    session = UploadingComfy()
    client = ComfyUIClient(settings, session=session)
    workflow = json.loads(json.dumps(INPAINT))
    _, targets = inputs.take_targets(workflow, {"image": b64(PNG), "mask": b64(PNG)})
    patched = inputs.apply(client, workflow, targets, settings, allow_s3=False)
    name = f"{hashlib.sha256(PNG).hexdigest()[:40]}.png"
    assert patched["1"]["inputs"]["image"] == patched["4"]["inputs"]["image"] == name
    assert len(session.uploads) == 1
    assert PNG in session.uploads[0] and b'name="type"\r\n\r\ninput' in session.uploads[0]


def test_nothing_goes_to_comfyui_when_one_input_is_refused(settings) -> None:
    session = UploadingComfy()
    client = ComfyUIClient(settings, session=session)
    _, targets = inputs.take_targets(INPAINT, {"image": b64(PNG), "mask": b64(b"text")})
    with pytest.raises(images.NotAnImageError, match="'mask'"):
        inputs.apply(client, json.loads(json.dumps(INPAINT)), targets, settings, allow_s3=False)
    assert session.calls == []


# -- POST /api/uploads ------------------------------------------------------------------------
def test_an_upload_answer_is_a_presigned_put_with_signed_type_and_size(s3, settings) -> None:
    answer_ = inputs.create_upload({"filename": "photo.png", "content_type": "image/png", "size": 428},
                                   settings)
    assert answer_["method"] == "PUT" and answer_["headers"] == {"Content-Type": "image/png"}
    assert answer_["expires_in"] == 900 and answer_["max_bytes"] == 100000
    link = urlsplit(answer_["upload_url"])
    assert f"{link.netloc}{link.path}".endswith(f"/inputs/{answer_['upload_id']}") and BUCKET in link.netloc + link.path
    query = parse_qs(link.query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    put = requests.put(answer_["upload_url"], data=PNG, headers=answer_["headers"], timeout=5)
    assert put.status_code == 200
    assert inputs.spool(target({"upload_id": answer_["upload_id"]}), settings, allow_s3=False).size == len(PNG)


@pytest.mark.parametrize(("body", "status"), [
    ({"filename": "a.png", "content_type": "image/png", "size": 100001}, 413),
    ({"filename": "a.svg", "content_type": "image/svg+xml", "size": 10}, 415),
    ({"filename": "a.png", "content_type": {"x": 1}, "size": 10}, 415),  # found by the contract fuzz
    ({"filename": "a.png", "content_type": ["image/png"], "size": 10}, 415),
    ({"filename": "../a.png", "content_type": "image/png", "size": 10}, 400),
    ({"filename": "a.jpg", "content_type": "image/png", "size": 10}, 400),
    ({"filename": "a.png", "content_type": "image/png", "size": 0}, 400),
    ({"filename": "a.png", "content_type": "image/png", "size": "10"}, 400),
    ({"filename": "a.png", "content_type": "image/png", "size": 10, "acl": "public-read"}, 400),
])
def test_bad_upload_requests(settings, body, status) -> None:
    with pytest.raises(BadRequestError) as caught:
        inputs.create_upload(body, settings)
    assert caught.value.status_code == status
