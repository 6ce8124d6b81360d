"""comfy_core: the shared library behind every function of comfy-serverless-api.

Nothing below this package knows about Lambda events except `api`, the one edge where
API Gateway events become calls and errors become HTTP responses.
"""

__version__ = "0.1.0"


def reset_container_state() -> None:
    """Forget everything cached per warm container (settings, clients, workflow cache).

    For tests and the local stack, which run many "containers" in one process."""
    from . import archive, client, config, events, invoke, results, storage, workflows

    config.get_settings.cache_clear()
    client.reset_client()
    workflows.reset_store()
    results.reset_archive()
    for cached in (storage.s3_client, events.events_client, invoke.lambda_client, archive.presign_client):
        cached.cache_clear()
