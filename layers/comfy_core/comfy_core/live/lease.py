"""At most one watcher per ComfyUI: a lease item in the prompt-state table.

    prompt_id     lease#<backend>
    holder        the invocation holding it (its Lambda request id)
    lease_until   epoch seconds it lapses unless renewed: a watcher that dies without
                  releasing is replaced within LEASE_SECONDS
    release_at    epoch seconds the holder plans to let go (its handover time)
    expires_at    TTL, only to clean the item up long after

Taking it is one conditional write (free, lapsed, or already ours); renewing and releasing
are conditional on still holding it, so a watcher that lost it (paused past its lease)
learns so at its next renewal and stops before doing the same work as the new holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..observability import logger
from ..storage import client_error_code
from . import state as prompt_state

LEASE_PREFIX = "lease#"
# A lease lapses this long after its last renewal; renewed every RENEW_SECONDS. Three
# renewals fit in one lease, so one slow DynamoDB call never loses it.
LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0
CLEANUP_SECONDS = 86_400


@dataclass
class Lease:
    name: str
    holder: str
    lease_until: float
    release_at: float


class LeaseLostError(Exception):
    """Another watcher holds the lease now."""


class LeaseStore:
    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or prompt_state.dynamodb_client()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.prompt_state_table)

    def _key(self, name: str) -> dict[str, Any]:
        return {prompt_state.KEY: {"S": f"{LEASE_PREFIX}{name}"}}

    def acquire(self, name: str, holder: str, release_at: float) -> Lease | None:
        """The lease, or None while another holder's is still valid."""
        at = prompt_state.now()
        lease = Lease(name, holder, at + LEASE_SECONDS, release_at)
        if not self.enabled:
            return lease  # local runs without the table: one watcher by construction
        item = {
            prompt_state.KEY: f"{LEASE_PREFIX}{name}",
            "holder": holder,
            "lease_until": lease.lease_until,
            "release_at": release_at,
            prompt_state.TTL_ATTRIBUTE: int(at) + CLEANUP_SECONDS,
        }
        try:
            self.client.put_item(
                TableName=self.settings.prompt_state_table,
                Item={key: prompt_state.to_attribute(value) for key, value in item.items()},
                ConditionExpression="attribute_not_exists(prompt_id) OR lease_until < :now OR holder = :me",
                ExpressionAttributeValues={":now": prompt_state.to_attribute(at),
                                           ":me": prompt_state.to_attribute(holder)},
            )
        except Exception as exc:  # noqa: BLE001 - botocore error types are generated
            if client_error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return lease

    def current(self, name: str) -> Lease | None:
        if not self.enabled:
            return None
        answer = self.client.get_item(TableName=self.settings.prompt_state_table, Key=self._key(name),
                                      ConsistentRead=True)
        item = prompt_state.from_item(answer["Item"]) if answer.get("Item") else None
        if not item:
            return None
        return Lease(name, str(item.get("holder")), float(item.get("lease_until") or 0),
                     float(item.get("release_at") or 0))

    def renew(self, lease: Lease) -> None:
        """Push the lapse time forward; LeaseLostError when someone else holds it."""
        if not self.enabled:
            return
        until = prompt_state.now() + LEASE_SECONDS
        try:
            self.client.update_item(
                TableName=self.settings.prompt_state_table,
                Key=self._key(lease.name),
                UpdateExpression="SET lease_until = :until",
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":until": prompt_state.to_attribute(until),
                                           ":me": prompt_state.to_attribute(lease.holder)},
            )
        except Exception as exc:  # noqa: BLE001 - botocore error types are generated
            if client_error_code(exc) == "ConditionalCheckFailedException":
                raise LeaseLostError(lease.name) from exc
            raise
        lease.lease_until = until

    def release(self, lease: Lease) -> None:
        """Let go (only if still ours). Never raises: an unreleased lease lapses anyway."""
        if not self.enabled:
            return
        try:
            self.client.delete_item(
                TableName=self.settings.prompt_state_table,
                Key=self._key(lease.name),
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": prompt_state.to_attribute(lease.holder)},
            )
        except Exception as exc:  # noqa: BLE001 - botocore error types are generated
            if client_error_code(exc) != "ConditionalCheckFailedException":
                logger.warning("Lease not released; it lapses by itself", extra={"error": repr(exc)})
