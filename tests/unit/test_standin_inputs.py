"""The stand-in replays the recorded input session and answers as the real ComfyUI did, value
for value (the second recording run; NOTES.md, "Inputs, uploads and WebSocket").

The recorder uploaded three 32x24 PNGs (bytes a, b, c), a JPEG, a WebP, text bytes named
.png, a mask, and bad requests; then it viewed the files, listed them in /object_info and
ran the prompts that load them (numbered 24 to 30, 26 the refused one). The order of the
uploads is fixed by their answers: `(2)` for the capital-True overwrite means it came before
the overwrite=true that replaced harness_upload.png with c, and the mask was applied to c.
Each request is rebuilt from its headers.json (the multipart parts in order, with their
bytes) and sent in that order to a fresh stand-in.

Compared: status, Content-Type, Content-Length and body (JSON by value, plain text, empty);
the input folder's files and hashes (_notes_record_inputs_ws.json); the bytes /view serves
for uploads; the pixels of every picture ComfyUI wrote (the mask composite and the saved
outputs, decoded: the stand-in's PNG encoder is not Pillow's, the pixels must be the same to
the bit) and their `prompt` text chunk. Mapped: prompt ids, prompt numbers (an offset), the
stand-in's folder shown as /srv. Blanked: timestamps, tracebacks, set-ordered lists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.comfyui_standin import (
    EXAMPLE_IMAGE,
    ComfyUIStandIn,
    InputFiles,
    decode_png,
    encode_pixels,
    with_alpha,
)
from tests.support.recordings import recorded_file, recording, recording_meta, workflow
from tests.support.standin import TIMEOUT, Client, normalise, only_entry
from tests.support.waiting import wait_for

NOTES = recording("_notes_record_inputs_ws")
RECORDED_ROOT = "/srv"  # ComfyUI ran in /srv/ComfyUI
UPLOADS = [
    "upload_image_new",
    "upload_image_same_name_same_bytes",
    "upload_image_same_name_new_bytes",
    "upload_image_same_name_new_bytes_again",
    "upload_image_overwrite_capital_True",
    "upload_image_overwrite_true",
    "upload_image_subfolder",
    "upload_image_type_temp",
    "upload_image_jpeg",
    "upload_image_webp",
    "upload_image_not_an_image",
    "upload_image_traversal_filename",
    "upload_image_traversal_subfolder",
    "upload_image_missing_field",
    "upload_image_bad_type",
    "upload_mask",
    "upload_mask_missing_original",
]
INPUT_VIEWS = [
    "view_input_upload", "view_input_upload_renamed", "view_input_subfolder", "view_input_webp",
    "view_input_default_type_is_output", "view_temp_upload", "view_mask_result", "view_mask_missing_original",
]
LISTINGS = ["object_info_LoadImage_after_uploads", "object_info_LoadImageMask_after_uploads"]
# In the recorded order (numbers 24 to 30): the POST /prompt recording, the workflow it sent,
# and the history entry and saved picture of the prompt (None for the refused one).
PROMPTS = [
    ("prompt_success_load_image", "load_image_invert_save.json",
     "history_id_load_image", "view_load_image_output"),
    ("prompt_success_load_image_subfolder", "load_image_subfolder_invert_save.json",
     "history_id_load_image_subfolder", "view_load_image_subfolder_output"),
    ("prompt_error_load_image_missing", "invalid_load_image_missing_file.json", None, None),
    ("prompt_success_inpaint_composite", "inpaint_composite_masked.json",
     "history_id_inpaint_composite", "view_inpaint_composite_output"),
    ("prompt_success_load_image_annotated_temp", "load_image_annotated_temp.json",
     "history_id_load_image_annotated_temp", "view_load_image_annotated_temp_output"),
    ("prompt_success_load_image_annotated_output", "load_image_annotated_output.json",
     "history_id_load_image_annotated_output", "view_load_image_annotated_output_output"),
    ("prompt_accepted_load_image_not_an_image", "exec_error_load_image_not_an_image.json",
     "history_id_load_image_not_an_image", None),
]
FIRST_NUMBER = 24
SET_ORDERED = {"executed", "current_outputs"}


def multipart(meta: dict[str, Any]) -> list[tuple[str, tuple[str | None, Any] | tuple[str, bytes, str]]]:
    """The recorded multipart parts, in order, as requests' `files`."""
    parts = []
    for part in meta["request_body"]["parts"]:
        if "filename" in part:
            content_type = next(header.split(": ", 1)[1] for header in part["part_headers"]
                                if header.startswith("Content-Type"))
            parts.append((part["name"], (part["filename"], base64.b64decode(part["base64"]), content_type)))
        else:
            parts.append((part["name"], (None, part["value"])))
    return parts


def uploaded(name: str, field_name: str = "image") -> bytes:
    """The bytes one recorded upload sent in `field_name`."""
    part = next(p for p in recording_meta(name)["request_body"]["parts"] if p["name"] == field_name)
    return base64.b64decode(part["base64"])


@dataclass
class Session:
    client: Client
    root: Path  # the stand-in runs in root/ComfyUI, shown as /srv/ComfyUI
    answers: dict[str, requests.Response] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # recorded prompt id -> replayed
    first_number: int | None = None

    @property
    def standin(self) -> ComfyUIStandIn:
        return self.client.standin

    def send(self, name: str) -> requests.Response:
        meta = recording_meta(name)
        files = multipart(meta) if meta["method"] == "POST" else None
        response = self.client.session.request(meta["method"], self.client.base + meta["path"], files=files,
                                               timeout=TIMEOUT)
        self.answers[name] = response
        return response

    def comparable(self, value: Any) -> Any:
        text = json.dumps(value).replace(str(self.root), RECORDED_ROOT)
        for recorded, replayed in self.ids.items():
            text = text.replace(replayed, recorded)
        return blank(normalise(json.loads(text), ids=False))


def blank(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: blank(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [blank(item) for item in value]
        return sorted(items) if key in SET_ORDERED else items
    return value


def _run_prompts(session: Session) -> None:
    for name, workflow_file, history, _ in PROMPTS:
        body = recording_meta(name)["request_body"]
        assert body == {"prompt": workflow(workflow_file)}  # the workflow file is what was sent
        answer = session.client.post("/prompt", json=body)
        session.answers[name] = answer
        if session.first_number is None:
            session.first_number = answer.json()["number"]
        if history is None:
            continue
        session.ids[recording(name)["prompt_id"]] = replayed = answer.json()["prompt_id"]
        wait_for(lambda: session.client.history(replayed), timeout=TIMEOUT, what=f"history of {name}")
        session.answers[history] = session.client.get(f"/history/{replayed}")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("inputs")
    standin = ComfyUIStandIn(root / "ComfyUI", port=0).start()
    try:
        replay = Session(Client(standin), root)
        for name in UPLOADS + INPUT_VIEWS + LISTINGS:
            replay.send(name)
        _run_prompts(replay)
        yield replay
    finally:
        standin.stop()


# -- uploads --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", UPLOADS)
def test_upload_answer_matches_the_recording(session: Session, name: str) -> None:
    meta, answer = recording_meta(name), session.answers[name]
    assert answer.status_code == meta["status"]
    assert answer.headers.get("Content-Type") == meta["headers"].get("Content-Type")
    assert answer.headers["Content-Length"] == meta["headers"]["Content-Length"]
    if "body_file" in meta:
        assert answer.json() == recording(name)
    else:
        assert answer.text == meta["body_text"]  # empty for 400, plain text for the 500


def test_the_input_folder_holds_what_the_recorded_one_held(session: Session) -> None:
    """Renamed copies, the overwrite, the mask composite, the subfolder; the bytes as sent
    (the text named .png too), each once."""
    input_dir = Path(session.standin.input_dir)
    assert sorted(path.name for path in input_dir.iterdir()) == NOTES["input_dir_after_uploads"]
    assert sorted(path.name for path in (input_dir / "sub").iterdir()) == NOTES["input_sub_after_uploads"]
    stored = {name: sha256(input_dir / name) for name in NOTES["input_file_sha256"]}
    recorded = dict(NOTES["input_file_sha256"])
    # The mask composite is ComfyUI's PNG encoding (Pillow, level 4): its pixels are compared
    # in test_the_mask_upload_composes_the_original_and_the_mask.
    del stored["harness_mask.png"], recorded["harness_mask.png"]
    assert stored == recorded
    assert recorded["harness_upload.png"] == NOTES["upload_bytes_sha256"]["c"]


def test_traversal_writes_nothing(session: Session) -> None:
    for recorded_path, existed in NOTES["traversal_files_exist_after"].items():
        here = Path(recorded_path.replace(RECORDED_ROOT, str(session.root), 1))
        assert here.exists() is existed is False


# -- views and lists --------------------------------------------------------------------------

@pytest.mark.parametrize("name", INPUT_VIEWS)
def test_input_view_matches_the_recording(session: Session, name: str) -> None:
    meta, answer = recording_meta(name), session.answers[name]
    assert answer.status_code == meta["status"]
    if meta["status"] != 200:
        assert answer.content == b"" and "Content-Type" not in answer.headers
        return
    for header in ("Content-Type", "Content-Disposition", "Accept-Ranges"):
        assert answer.headers[header] == meta["headers"][header], header
    assert "Etag" in answer.headers and "Last-Modified" in answer.headers
    if name != "view_mask_result":  # an upload: the bytes as sent
        assert answer.content == recorded_file(meta["body_file"])
        assert answer.headers["Content-Length"] == meta["headers"]["Content-Length"]


def test_the_mask_upload_composes_the_original_and_the_mask(session: Session) -> None:
    """harness_mask.png: the original's (bytes c) RGB with the mask's alpha, as recorded."""
    served = decode_png(session.answers["view_mask_result"].content)
    recorded = decode_png(recorded_file("view_mask_result.png"))
    assert (served.width, served.height, served.mode) == (recorded.width, recorded.height, "RGBA")
    assert served.data == recorded.data
    mask = decode_png(uploaded("upload_mask"))
    assert served.data == with_alpha(decode_png(uploaded("upload_image_overwrite_true")).rgb(), mask.alpha())


@pytest.mark.parametrize("name", LISTINGS)
def test_loaders_list_the_uploaded_files(session: Session, name: str) -> None:
    meta, answer = recording_meta(name), session.answers[name]
    assert answer.status_code == meta["status"] == 200
    assert answer.headers["Content-Length"] == meta["headers"]["Content-Length"]
    assert answer.json() == recording(name)


# -- prompts that read inputs -------------------------------------------------------------------

@pytest.mark.parametrize("name", [name for name, _, history, _ in PROMPTS if history])
def test_accepted_prompt_answer_matches_the_recording(session: Session, name: str) -> None:
    answer = session.answers[name]
    recorded = recording(name)
    assert answer.status_code == recording_meta(name)["status"] == 200
    offset = session.first_number - FIRST_NUMBER
    assert session.comparable(answer.json()) == recorded | {"number": recorded["number"] + offset}


def test_missing_input_file_is_refused_as_recorded(session: Session) -> None:
    """A custom validation error on LoadImage; the prompt still took a number (26)."""
    name = "prompt_error_load_image_missing"
    answer = session.answers[name]
    assert answer.status_code == recording_meta(name)["status"] == 400
    assert answer.json() == recording(name)


@pytest.mark.parametrize("name", [history for _, _, history, _ in PROMPTS if history])
def test_history_entry_matches_the_recording(session: Session, name: str) -> None:
    answer = session.answers[name]
    expected = blank(normalise(recording(name), ids=False))
    entry = only_entry(expected)
    entry["prompt"][0] += session.first_number - FIRST_NUMBER
    assert session.comparable(answer.json()) == expected


@pytest.mark.parametrize("name", [view for _, _, _, view in PROMPTS if view])
def test_saved_picture_has_the_recorded_pixels(session: Session, name: str) -> None:
    """Inverted in float32 and truncated like ComfyUI (not 255 - v: that differs in 1296 of
    these values); composited where the mask was transparent; loaded from input/sub, temp
    and output (the first result again)."""
    meta = recording_meta(name)
    answer = session.client.get(meta["path"])
    assert answer.status_code == meta["status"] == 200
    assert answer.headers["Content-Type"] == meta["headers"]["Content-Type"]
    served, recorded = decode_png(answer.content), decode_png(recorded_file(meta["body_file"]))
    assert (served.width, served.height, served.mode) == (recorded.width, recorded.height, recorded.mode)
    assert served.data == recorded.data
    served_prompt, recorded_prompt = json.loads(served.text["prompt"]), json.loads(recorded.text["prompt"])
    for node_id, node in recorded_prompt.items():
        if "is_changed" in node:  # IS_CHANGED of a file reader: [sha256 of the file it read]
            served_hash, recorded_hash = served_prompt[node_id].pop("is_changed"), node.pop("is_changed")
            assert served_hash == [sha256(stored(session, node["inputs"]["image"]))]
            if recorded_hash[0] in NOTES["upload_bytes_sha256"].values():  # uploaded bytes: the same file
                assert served_hash == recorded_hash
    assert served_prompt == recorded_prompt


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(session: Session, name: str) -> Path:
    """The stand-in's file behind a LoadImage name (annotated, or under input/)."""
    for suffix, folder in ((" [temp]", session.standin.temp_dir), (" [output]", session.standin.output_dir)):
        if name.endswith(suffix):
            return Path(folder) / name.removesuffix(suffix)
    return Path(session.standin.input_dir) / name


def test_the_decoder_reads_the_recorded_uploads_as_described() -> None:
    """NOTES: bytes a go from red to blue, b from green to yellow, c from white to black."""
    corners = {}
    for name, key in (("upload_image_new", "a"), ("upload_image_same_name_new_bytes", "b"),
                      ("upload_image_overwrite_true", "c")):
        picture = decode_png(uploaded(name))
        corners[key] = (picture.data[:3], picture.data[-3:])
    assert corners == {"a": (b"\xff\x00\x00", b"\x00\x00\xff"), "b": (b"\x00\xff\x00", b"\xff\xff\x00"),
                       "c": (b"\xff\xff\xff", b"\x00\x00\x00")}


# -- behaviour beyond the recorded session ------------------------------------------------------

@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    standin = ComfyUIStandIn(tmp_path / "ComfyUI", port=0).start()
    yield Client(standin)
    standin.stop()


def upload(client: Client, name: str, data: bytes, **fields: str) -> requests.Response:
    files: list[tuple[str, Any]] = [(key, (None, value)) for key, value in fields.items()]
    return client.post("/upload/image", files=files + [("image", (name, data, "image/png"))])


def test_a_fresh_stand_in_lists_example_png_like_a_fresh_comfyui(client: Client) -> None:
    listed = client.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"]
    assert listed == recording("object_info_full")["LoadImage"]["input"]["required"]["image"]
    body = {"prompt": workflow("load_image_invert_save.json")}
    body["prompt"]["1"]["inputs"]["image"] = EXAMPLE_IMAGE
    _, entry = client.run(body)
    assert entry["status"]["status_str"] == "success"


def test_new_bytes_under_the_same_name_run_again_instead_of_the_cache(client: Client) -> None:
    """LoadImage's IS_CHANGED: the file's hash is part of the cache key."""
    first, second = uploaded("upload_image_new"), uploaded("upload_image_overwrite_true")
    assert upload(client, "harness_upload.png", first).status_code == 200
    body = {"prompt": workflow("load_image_invert_save.json")}
    _, before = client.run(body)
    _, cached = client.run(body)
    assert cached["outputs"] == before["outputs"]
    replaced = upload(client, "harness_upload.png", second, overwrite="true").json()
    assert replaced["name"] == "harness_upload.png"
    _, after = client.run(body)
    assert after["status"]["messages"][1][1]["nodes"] == []
    assert after["outputs"]["3"]["images"][0]["filename"] == "harness_img2img_00002_.png"


def test_a_mask_upload_is_compared_with_the_composite_when_named_again(client: Client) -> None:
    """The duplicate check compares the mask's bytes with the stored composite: the same
    mask again is renamed (ComfyUI's image_upload runs the same loop for masks)."""
    assert upload(client, "harness_upload.png", uploaded("upload_image_overwrite_true")).status_code == 200
    files = multipart(recording_meta("upload_mask"))
    first = client.post("/upload/mask", files=files).json()
    again = client.post("/upload/mask", files=files).json()
    assert (first["name"], again["name"]) == ("harness_mask.png", "harness_mask (1).png")


def test_a_mask_of_another_size_is_a_server_error(client: Client) -> None:
    """Pillow's putalpha refuses a mask of another size: the route crashes, 500 plain text."""
    assert upload(client, "small.png", encode_pixels(2, 2, "RGB", bytes(12))).status_code == 200
    files = multipart(recording_meta("upload_mask"))
    reference = {"filename": "small.png", "subfolder": "", "type": "input"}
    files[0] = ("original_ref", (None, json.dumps(reference)))
    answer = client.post("/upload/mask", files=files)
    assert (answer.status_code, answer.text) == (500, recording_meta("upload_image_bad_type")["body_text"])


def test_a_jpeg_loads_as_an_opaque_picture_of_its_header_size(client: Client) -> None:
    """The stand-in does not decode JPEG: a grey picture of the size in the header (the
    module's documented approximation), which runs through the workflow."""
    assert upload(client, "harness_upload.jpg", uploaded("upload_image_jpeg")).status_code == 200
    body = {"prompt": workflow("load_image_invert_save.json")}
    body["prompt"]["1"]["inputs"]["image"] = "harness_upload.jpg"
    _, entry = client.run(body)
    image = entry["outputs"]["3"]["images"][0]
    saved = decode_png(client.get(f"/view?filename={image['filename']}&type=output").content)
    assert (saved.width, saved.height) == (32, 24)  # the recorded JPEG's size


# -- the PNG decoder on filters Pillow did not use in the recordings ------------------------------

def _filtered_png(width: int, height: int, colour: int, depth: int, rows: list[bytes], kinds: list[int],
                  extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    bpp = max(1, {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour] * depth // 8)
    raw, previous = b"", bytes(len(rows[0]))
    for row, kind in zip(rows, kinds):
        out = bytearray()
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up, upper_left = previous[i], previous[i - bpp] if i >= bpp else 0
            p = left + up - upper_left
            # Ties go to left, then up, then upper left (the PNG specification's order).
            paeth = min((abs(p - left), 0, left), (abs(p - up), 1, up),
                        (abs(p - upper_left), 2, upper_left))[2]
            predictor = [0, left, up, (left + up) >> 1, paeth][kind]
            out.append((value - predictor) & 0xFF)
        raw += bytes([kind]) + bytes(out)
        previous = row

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + header + b"".join(chunk(tag, body) for tag, body in extra)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_every_filter_type_decodes() -> None:
    rows = [bytes((x * 37 + y * 91 + c * 13) & 0xFF for x in range(5) for c in range(4)) for y in range(5)]
    picture = decode_png(_filtered_png(5, 5, 6, 8, rows, [0, 1, 2, 3, 4]))
    assert (picture.mode, picture.data) == ("RGBA", b"".join(rows))


def test_palette_grey_and_text_chunks_decode() -> None:
    palette = [(b"PLTE", bytes([255, 0, 0, 0, 0, 255])), (b"tRNS", bytes([0])),
               (b"tEXt", b"prompt\x00{}"), (b"zTXt", b"workflow\x00\x00" + zlib.compress(b"[1]"))]
    picture = decode_png(_filtered_png(3, 1, 3, 2, [bytes([0b00010000])], [0], palette))
    assert (picture.mode, picture.data) == ("RGBA", bytes([255, 0, 0, 0, 0, 0, 255, 255, 255, 0, 0, 0]))
    assert picture.text == {"prompt": "{}", "workflow": "[1]"}
    grey = decode_png(_filtered_png(4, 1, 0, 1, [bytes([0b10100000])], [1]))
    assert (grey.mode, grey.data) == ("L", bytes([255, 0, 255, 0]))


def test_files_outside_the_stand_in_are_not_listed(tmp_path: Path) -> None:
    """Only files at the top of input/ whose extension says image; folders never."""
    files = InputFiles(str(tmp_path / "input"), str(tmp_path / "temp"), str(tmp_path / "output"))
    files.prepare()
    for name in ("b.webp", "a.txt", "c.PNG", "d (1).jpg"):
        (tmp_path / "input" / name).write_bytes(b"x")
    (tmp_path / "input" / "sub").mkdir()
    (tmp_path / "input" / "sub" / "e.png").write_bytes(b"x")
    assert files.image_files() == ["b.webp", "c.PNG", "d (1).jpg", EXAMPLE_IMAGE]


def test_validation_takes_annotated_and_subfolder_names(tmp_path: Path) -> None:
    files = InputFiles(str(tmp_path / "input"), str(tmp_path / "temp"), str(tmp_path / "output"))
    files.prepare()
    for folder, name in (("temp", "t.png"), ("output", "o.png"), ("input/sub", "s.png")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"x")
    for good in ("t.png [temp]", "o.png [output]", "sub/s.png", "example.png [input]", EXAMPLE_IMAGE):
        assert files.validate({"image": good}) == [], good
    assert files.validate({"image": "o.png"})[0]["details"] == "image - Invalid image file: o.png"
