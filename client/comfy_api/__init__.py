"""A client of comfy-serverless-api, and the `comfy-api` command.

    from comfy_api import ComfyAPI, download_outputs
    api = ComfyAPI("http://127.0.0.1:3000")
    final = api.wait(api.run("text_label", {"prompt": "a lighthouse at dawn"}).prompt_id)
    download_outputs(api, final, "out")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import ComfyAPI, raise_for_outcome  # noqa: E402
from .download import DownloadReport, SavedFile, Skipped, download_outputs, output_name  # noqa: E402
from .errors import (APIConnectionError, AuthError, BadRequestError, ComfyAPIError,  # noqa: E402
                     ComfyUITimeoutError, ComfyUIUnavailableError, ConfigError, ConflictError, DownloadError,
                     InputFileError, NotFoundError, RateLimitedError, ServerError, StorageUnavailableError,
                     TaskFailedError, TooLargeError, UnprocessableError, UnsupportedMediaError)
from .models import (Cancelled, Failure, HistoryItem, HistoryPage, Image, Progress, Queue,  # noqa: E402
                     QueueItem, Submitted, TaskStatus, Upload)
from .retry import RetryPolicy  # noqa: E402

__all__ = [
    "__version__", "ComfyAPI", "raise_for_outcome", "RetryPolicy",
    "download_outputs", "output_name", "DownloadReport", "SavedFile", "Skipped",
    "ComfyAPIError", "BadRequestError", "AuthError", "NotFoundError", "ConflictError", "TooLargeError",
    "UnsupportedMediaError", "UnprocessableError", "RateLimitedError", "ServerError",
    "ComfyUIUnavailableError", "StorageUnavailableError", "ComfyUITimeoutError", "APIConnectionError",
    "DownloadError", "TaskFailedError", "ConfigError", "InputFileError",
    "Submitted", "Upload", "Progress", "Image", "Failure", "TaskStatus", "Queue", "QueueItem",
    "Cancelled", "HistoryItem", "HistoryPage",
]
