"""Input images: typed by their bytes, announced to POST /api/uploads with a name that fits
the type, then PUT to the presigned URL with the headers the grant names (and never the API
key); a PUT that S3 refused with a 503 is sent again whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses

from comfy_api import ComfyAPI
from comfy_api.errors import InputFileError
from comfy_api.inputs import InputFile

from .fakes import API_URL, Sleeps

PUT_URL = "https://bucket.s3.test/inputs/0123?X-Amz-Signature=abc"
JPEG = b"\xff\xd8\xff\xe0" + bytes(300)


def grant() -> dict[str, object]:
    return {"upload_id": "0" * 32, "upload_url": PUT_URL, "method": "PUT",
            "headers": {"Content-Type": "image/jpeg"}, "expires_in": 900, "max_bytes": 52428800}


@responses.activate
def test_an_upload_is_granted_then_put_straight_to_s3(api: ComfyAPI, sleeps: Sleeps, tmp_path: Path) -> None:
    photo = tmp_path / "holiday.png"  # a JPEG whatever its name says
    photo.write_bytes(JPEG)
    responses.post(f"{API_URL}/api/uploads", status=201, json=grant())
    bodies: list[bytes] = []

    def s3(request: object) -> tuple[int, dict[str, str], str]:
        body = request.body  # type: ignore[attr-defined]
        bodies.append(body.read() if hasattr(body, "read") else body)
        return (503, {}, "<Error><Code>SlowDown</Code></Error>") if len(bodies) == 1 else (200, {}, "")

    responses.add_callback(responses.PUT, PUT_URL, callback=s3)

    assert api.upload(photo) == "0" * 32

    announced = json.loads(responses.calls[0].request.body)
    assert announced == {"filename": "holiday.jpg", "content_type": "image/jpeg", "size": len(JPEG)}
    first, second = responses.calls[1].request, responses.calls[2].request
    for put in (first, second):
        assert put.headers["Content-Type"] == "image/jpeg"
        assert "x-api-key" not in put.headers
    assert bodies == [JPEG, JPEG]  # the retry sends the whole file again
    assert len(sleeps) == 1


@pytest.mark.parametrize(("head", "content_type"), [
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff\xdb", "image/jpeg"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"GIF89a", "image/gif"),
])
def test_images_are_typed_by_their_bytes(tmp_path: Path, head: bytes, content_type: str) -> None:
    path = tmp_path / "input"
    path.write_bytes(head + bytes(20))
    item = InputFile.open(path)
    assert item.content_type == content_type and item.size == len(head) + 20
    assert item.upload_name.startswith("input.")


def test_a_file_that_is_no_image_or_not_there_is_refused_locally(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InputFileError, match="is not a PNG, JPEG, WebP or GIF image"):
        InputFile.open(text)
    with pytest.raises(InputFileError, match="cannot read .*: No such file or directory"):
        InputFile.open(tmp_path / "missing.png")
