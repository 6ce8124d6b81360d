"""A ComfyUI stand-in: a stdlib HTTP server that answers like ComfyUI 0.3.64.

Development and test tool only, never deployed. The ground truth is the set of
recordings of a real ComfyUI in ``tests/fixtures/comfyui/`` (see NOTES.md there):
same status codes, same JSON shapes, same quirks. Where this package looks odd
(history ``{}`` for a running prompt, ``max_items=2&offset=0`` giving the *oldest*
two, 500 with a plain-text body for malformed JSON, ...) it copies ComfyUI on purpose.

One module per endpoint family:

* server.py: the HTTP server, its routes, the queue and history, and the command line.
* nodes.py: the node table (``/object_info``) and prompt validation (``POST /prompt``).
* execution.py: running a prompt; generated images are solid colours (or a simple noise
  pattern) written as real PNG files.
* uploads.py: uploads (``/upload/image``, ``/upload/mask``), input files and the nodes that
  read them (LoadImage, LoadImageMask, ImageInvert and ImageCompositeMasked on real
  pixels), with what they approximate.
* websocket.py: ``/ws``.

What it does not do: ``/view?preview=`` re-encoding (the original file is served), real
image processing beyond what loaded pictures need.

Usage::

    with ComfyUIStandIn(tmp_path, delay=0.5) as comfy:
        requests.post(f"{comfy.base_url}/prompt", json={"prompt": workflow})

    python -m devtools.comfyui_standin --port 8188 --delay 1 --root /some/dir
"""

from .execution import execution_order
from .nodes import NodeSpec, build_node_specs, validate_prompt
from .server import ComfyUIStandIn, main
from .uploads import EXAMPLE_IMAGE, InputFiles, decode_png, encode_pixels, with_alpha

__all__ = [
    "EXAMPLE_IMAGE", "ComfyUIStandIn", "InputFiles", "NodeSpec", "build_node_specs", "decode_png",
    "encode_pixels", "execution_order", "main", "validate_prompt", "with_alpha",
]
