"""Input images through the local stack (what `make dev` serves): POST /api/uploads, the
presigned PUT straight to S3 (the moto server), a run that names the upload, and the output
downloaded from the archive. Also inline images, the dedupe of identical bytes in ComfyUI's
input folder, and a refused upload removed from S3.

Expected pixels are computed here in float32 the way ComfyUI computes them (torch's
`1 - x`, `mask * source + (1 - mask) * destination`, then `uint8(clip(255 * x))`):
inverted values are not always 255 - v (159 of the 256 byte values come out one lower).
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from devtools.dev import LocalStack
from devtools.comfyui_standin import decode_png, encode_pixels, with_alpha
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TIMEOUT = 10  # seconds per HTTP call
POLL_SECONDS = 20  # the stand-in finishes in ~0.2 s and the archiver copies at once: a ceiling
WIDTH, HEIGHT = 24, 16
INPUT_PREFIX = "inputs/"  # the template's INPUT_PREFIX


def f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def saved(value: float) -> int:
    """SaveImage: np.clip(255. * x, 0, 255).astype(np.uint8) of a float32 x."""
    return min(255, max(0, int(f32(255.0 * value))))


def inverted(v: int) -> int:
    return saved(f32(1.0 - f32(v / 255)))


def gradient(seed: int) -> bytes:
    """RGB bytes of a WIDTH x HEIGHT picture that uses many byte values."""
    return bytes((x * 11 + y * 17 + c * 83 + seed) % 256 for y in range(HEIGHT) for x in range(WIDTH)
                 for c in range(3))


def png(seed: int) -> bytes:
    return encode_pixels(WIDTH, HEIGHT, "RGB", gradient(seed))


def input_files(stack: LocalStack) -> set[str]:
    return {path.name for path in Path(stack.standin.input_dir).iterdir() if path.is_file()}


def uploads_to_comfyui(stack: LocalStack) -> int:
    return stack.standin.requests.count(("POST", "/upload/image"))


def upload(stack: LocalStack, data: bytes, filename: str = "photo.png") -> str:
    """POST /api/uploads, then PUT the bytes to the presigned URL; the upload id."""
    answer = requests.post(f"{stack.api_url}/api/uploads", timeout=TIMEOUT,
                           json={"filename": filename, "content_type": "image/png", "size": len(data)})
    assert answer.status_code == 201, answer.text
    grant = answer.json()
    assert grant["method"] == "PUT" and grant["upload_url"].startswith(stack.moto_endpoint)
    put = requests.put(grant["upload_url"], data=data, headers=grant["headers"], timeout=TIMEOUT)
    assert put.status_code == 200, put.text
    return grant["upload_id"]


def run(stack: LocalStack, workflow: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{stack.api_url}/api/workflow/{workflow}", json=body, timeout=TIMEOUT)


def archived_output(stack: LocalStack, prompt_id: str) -> bytes:
    """The one output image, downloaded from its archive link once the prompt completed."""
    def done() -> list[dict[str, Any]] | None:
        status = requests.get(f"{stack.api_url}/api/task_status/{prompt_id}", timeout=TIMEOUT).json()
        assert status.get("status") != "error", status
        images = status.get("images") or []
        if status.get("status") == "completed" and images and all(i.get("download_url") for i in images):
            return images
        return None

    [image] = wait_for(done, POLL_SECONDS, interval=0.1, what="the output archived")
    assert image["download_url"].startswith(stack.moto_endpoint)
    fetched = requests.get(image["download_url"], timeout=TIMEOUT)
    assert fetched.status_code == 200
    return fetched.content


def test_upload_then_img2img_downloads_the_inverted_picture(local_stack: LocalStack) -> None:
    source = png(seed=1)
    upload_id = upload(local_stack, source)
    answer = run(local_stack, "img2img_invert", {"image": {"upload_id": upload_id}})
    assert answer.status_code == 200, answer.text

    output = decode_png(archived_output(local_stack, answer.json()["prompt_id"]))
    assert (output.width, output.height, output.mode) == (WIDTH, HEIGHT, "RGB")
    assert output.data == bytes(inverted(v) for v in gradient(seed=1))
    assert output.data != bytes(255 - v for v in gradient(seed=1))  # float32, not byte arithmetic


def test_inline_inpaint_repaints_only_where_the_mask_is_transparent(local_stack: LocalStack) -> None:
    # Transparent (alpha 0) in a rectangle: LoadImageMask(alpha) gives 1 there, so the
    # composite takes the inverted picture there and keeps the original elsewhere.
    inside = [5 <= x < 15 and 4 <= y < 12 for y in range(HEIGHT) for x in range(WIDTH)]
    alpha = bytes(0 if hole else 255 for hole in inside)
    mask = encode_pixels(WIDTH, HEIGHT, "RGBA", with_alpha(bytes(3 * WIDTH * HEIGHT), alpha))
    source = png(seed=2)
    answer = run(local_stack, "inpaint_composite", {
        "image": {"base64": base64.b64encode(source).decode()},
        "mask": "data:image/png;base64," + base64.b64encode(mask).decode(),
    })
    assert answer.status_code == 200, answer.text

    output = decode_png(archived_output(local_stack, answer.json()["prompt_id"]))
    pixels = gradient(seed=2)
    expected = bytes(inverted(v) if inside[i // 3] else saved(f32(v / 255)) for i, v in enumerate(pixels))
    assert output.data == expected
    assert output.data[:3] == pixels[:3]  # a corner outside the hole: the original


def test_identical_bytes_reuse_one_file_in_comfyui(local_stack: LocalStack) -> None:
    """Two uploads (two S3 objects) and an inline copy of the same bytes: one file in
    ComfyUI's input folder, named by content; other bytes get a file of their own."""
    source = png(seed=3)
    before, sent_before = input_files(local_stack), uploads_to_comfyui(local_stack)
    prompts = [run(local_stack, "img2img_invert", {"image": {"upload_id": upload(local_stack, source)}})
               for _ in range(2)]
    inline = {"image": {"base64": base64.b64encode(source).decode()}}
    prompts.append(run(local_stack, "img2img_invert", inline))
    assert [answer.status_code for answer in prompts] == [200, 200, 200]
    assert uploads_to_comfyui(local_stack) - sent_before == 3  # each request sends its input
    added = input_files(local_stack) - before
    assert len(added) == 1
    assert Path(local_stack.standin.input_dir, next(iter(added))).read_bytes() == source

    other = run(local_stack, "img2img_invert", {"image": {"base64": base64.b64encode(png(seed=4)).decode()}})
    assert other.status_code == 200
    assert len(input_files(local_stack) - before) == 2


def test_an_upload_that_is_no_image_is_refused_and_deleted(local_stack: LocalStack) -> None:
    text = b"this is not an image\n"
    before = input_files(local_stack)
    upload_id = upload(local_stack, text)
    s3, bucket = local_stack.client("s3"), local_stack.buckets["ImageBucket"]
    assert s3.head_object(Bucket=bucket, Key=f"{INPUT_PREFIX}{upload_id}")["ContentLength"] == len(text)

    answer = run(local_stack, "img2img_invert", {"image": {"upload_id": upload_id}})
    assert answer.status_code == 415, answer.text
    assert "not a PNG, JPEG, WebP or GIF" in answer.json()["error"]
    with pytest.raises(ClientError) as gone:
        s3.head_object(Bucket=bucket, Key=f"{INPUT_PREFIX}{upload_id}")
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert input_files(local_stack) == before  # nothing reached ComfyUI
