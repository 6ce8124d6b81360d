"""comfy_core: the shared library behind every function of comfy-serverless-api.

Nothing below this package knows about Lambda events except `api`, the one edge where
API Gateway events become calls and errors become HTTP responses.
"""

__version__ = "0.1.0"
