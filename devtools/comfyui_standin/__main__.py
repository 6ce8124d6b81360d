"""python -m devtools.comfyui_standin: run a ComfyUI stand-in until Ctrl-C."""

import sys

from .server import main

sys.exit(main())
