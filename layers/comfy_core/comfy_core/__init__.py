"""comfy_core: the shared library behind every function of comfy-serverless-api.

Nothing below this package knows about Lambda events except its two edges: `api`, where
API Gateway events become calls and errors become HTTP responses, and `triggers`, where
SQS, S3, EventBridge and direct invocations become jobs.
"""

import sys

__version__ = "0.1.0"


def reset_container_state() -> None:
    """Forget everything cached per warm container (settings, clients, workflow cache).

    For tests and the local stack, which run many "containers" in one process."""
    from . import config, invoke, storage
    from .announce import events
    from .archive import results
    from .fleet import pool
    from .workflows import store

    cached_per_container = (
        config.get_settings, pool.get_fleet, store.get_store, results.get_archive,
        storage.s3_client, events.events_client, invoke.lambda_client,
    )
    for cached in cached_per_container:
        cached.cache_clear()
    # Modules of event-driven jobs: reset only when loaded, so a reset never imports them.
    lazy = {"triggers": "sqs_client", "idempotency": "persistence_layer", "netguard": "ssl_context",
            "workflows.ui": "conversion_cache", "live.state": "dynamodb_client",
            "fleet.routing": "get_router", "fleet.placement": "get_placements"}
    for module, name in lazy.items():
        if f"{__name__}.{module}" in sys.modules:
            getattr(sys.modules[f"{__name__}.{module}"], name).cache_clear()
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters")
    if parameters is not None:  # cached secret values (Powertools keeps them max_age seconds)
        parameters.clear_caches()
