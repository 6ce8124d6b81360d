"""The live watcher: one WebSocket to ComfyUI for most of a Lambda invocation.

Started by a schedule every WATCHER_TICK_SECONDS. An invocation takes the lease (lease.py)
or exits at once; the holder connects as WATCHER_CLIENT_ID, the client id every prompt of
this deployment is submitted under (jobs.run_workflow), so ComfyUI sends it every message
about our prompts. On `executing` null a prompt is archived at once (archive.archive_one:
files to S3, manifest, then its events and webhook, claimed once in the prompt-state table);
while a prompt runs its progress goes to the prompt-state table, at most once a second.

Handover: the holder plans to stop HANDOVER_GRACE seconds after one of the schedule's ticks,
the last that leaves SHUTDOWN_MARGIN before its timeout. The invocation of that tick finds
the lease held with its release a few seconds away and waits for it instead of exiting.
The holder closes its socket first and releases the lease after, so the successor never
connects while the old socket is still registered: ComfyUI keeps one socket per clientId
and, when the older of two closes, forgets the id and the newer one goes silent.

Faults: a broken socket (ComfyUI restarting) is reconnected with backoff; after every
connect the watcher catches up from /history (archive.run_sweep), so what finished while it
was away is archived too. A socket that stays open but silent while ComfyUI's queue moved
(an older socket with our id closed) is reconnected. Whatever all of this misses, the
archiver's schedule still sweeps.

A fleet (fleet.backends): one Watcher per backend, side by side on threads of the one
invocation (run_watcher), each with that backend's client, its own lease
(`lease#<backend>`) and socket, progress saved under its name, archives made through its
client; the archives of all of them share one pool of ARCHIVE_WORKERS, so memory stays what
one watcher needs. One backend down is that backend's reconnect loop; the others go on. A
lone server runs exactly as before (one Watcher, `lease#default`).

The backends are read once, when the invocation starts: one added to the registry while it
runs is picked up by the next scheduled start, which finds that backend's lease free and
watches it (the others' leases are held: it exits for those at once). So that the two
invocations do not stay out of step, the newcomer lets go at the same moment as the
invocation already holding leases (aligned_release), and the tick after that takes over
every backend. A backend removed meanwhile is watched until the handover.
"""

from __future__ import annotations

import contextvars
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..answers import EXTRA_DATA_KEY
from ..archive import sweep as archive
from ..comfyui.client import ComfyUIClient, get_client
from ..comfyui.protocol import Done, Ended, Event, Progressed, QueueStatus, Started, Tracker, Throttle
from ..comfyui.protocol import nodes_to_run
from ..comfyui.socket import ComfySocket, socket_url
from ..config import Settings, get_settings
from ..errors import ComfyUIError, ConfigurationError
from ..fleet.pool import Fleet, get_fleet
from ..observability import logger, metrics
from . import state as prompt_state
from .lease import RENEW_SECONDS, Lease, LeaseLostError, LeaseStore

# Time kept at the end of an invocation for archives still running and the release.
SHUTDOWN_MARGIN = 20.0
# The holder lets go this long after a tick: the successor of that tick is up by then.
HANDOVER_GRACE = 5.0
# A successor waits for a release at most this far ahead; further away, it exits at once.
HANDOVER_WAIT = 15.0
LEASE_POLL = 0.2
RENEW_RETRY_SECONDS = 5.0
RECEIVE_TIMEOUT = 0.5
PROGRESS_INTERVAL = 1.0  # at most one progress write per prompt per second
# After an end event, `executing` null should follow at once; if it does not, archive anyway.
DONE_FALLBACK = 5.0
# History is written a moment after the end event: retry a not-yet-finished prompt.
NOT_FINISHED_RETRIES = 20
NOT_FINISHED_PAUSE = 0.25
# Silence this long makes the watcher ask ComfyUI's queue whether it missed something.
WATCHDOG_SECONDS = 30.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
ARCHIVE_WORKERS = 4
DURATIONS_CACHE_SECONDS = 60.0
EMPTY_DURATIONS_CACHE_SECONDS = 5.0


def _check_settings(settings: Settings) -> None:
    if not settings.watcher_client_id:
        raise ConfigurationError("WATCHER_CLIENT_ID is not set")
    if not settings.image_bucket:
        raise ConfigurationError("IMAGE_BUCKET is not set")


def handover_time(started: float, seconds_left: float, tick: float) -> float:
    """When to let go: HANDOVER_GRACE after the last tick that still leaves SHUTDOWN_MARGIN
    (the invocation started on a tick); with no such tick, at the margin."""
    budget = seconds_left - SHUTDOWN_MARGIN
    ticks = int((budget - HANDOVER_GRACE) // tick) if tick > 0 else 0
    if ticks >= 1:
        return started + ticks * tick + HANDOVER_GRACE
    return started + max(0.0, budget)


class Backoff:
    """0.5 s, 1 s, 2 s... up to 10 s, with jitter so a fleet does not reconnect in step."""

    def __init__(self) -> None:
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)


class SocketSilentError(ComfyUIError):
    """The socket is open but ComfyUI's queue moved without a word on it."""


@dataclass
class WatchSummary:
    # handed_over | lease_held | lease_lost | stopped (ComfyUI never reachable this time)
    status: str = "stopped"
    holder: str = ""
    connects: int = 0
    reconnects: int = 0
    prompts_started: int = 0
    prompts_archived: int = 0
    prompts_already_archived: int = 0
    progress_writes: int = 0
    catch_up_sweeps: int = 0
    connected_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _PromptInfo:
    workflow: str | None
    nodes_total: int | None


class Watcher:
    def __init__(
        self,
        *,
        settings: Settings | None = None,
        client: ComfyUIClient | None = None,
        holder: str | None = None,
        seconds_left: Callable[[], float] | None = None,
        leases: LeaseStore | None = None,
        socket_factory: Callable[[], Any] | None = None,
        archive_one: Callable[[str], dict[str, Any]] | None = None,
        sweep: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        backend: str | None = None,
        pool: ThreadPoolExecutor | None = None,
        release_at: float | None = None,
    ) -> None:
        """`backend`: the name its lease and progress go under (default: the client's).
        `pool`: archive workers shared with the fleet's other watchers (default: its own).
        `release_at`: epoch seconds to let go (default: handover_time's)."""
        self.settings = settings or get_settings()
        self.client = client or get_client()
        self.holder = holder or str(uuid.uuid4())
        self.seconds_left = seconds_left or (lambda: 900.0)
        self.leases = leases or LeaseStore(self.settings)
        self.socket_factory = socket_factory or self._new_socket
        self.archive_one = archive_one or (lambda pid: archive.archive_one(pid, client=self.client,
                                                                           settings=self.settings))
        self.sweep = sweep or (lambda: archive.run_sweep(client=self.client, settings=self.settings,
                                                         seconds_left=self._sweep_seconds_left))
        self.clock = clock
        self.sleep = sleep
        self.summary = WatchSummary(holder=self.holder)
        self.tracker = Tracker()
        self.throttle = Throttle(PROGRESS_INTERVAL)
        self.backend = backend or getattr(self.client, "backend", None) or prompt_state.DEFAULT_BACKEND
        self._shared_pool = pool
        self._release_at = release_at
        self._info: dict[str, _PromptInfo] = {}
        self._durations: dict[str, tuple[float, list[float]]] = {}
        self._end_seen: dict[str, float] = {}  # prompt -> clock() of its end event
        self._archiving: set[str] = set()  # submitted or done, never submitted twice
        self._lock = threading.Lock()
        self._futures: list[Future] = []
        self._archived: queue.SimpleQueue[str] = queue.SimpleQueue()  # from workers to the loop
        self._stop_at = 0.0  # clock() time to hand over
        self._last_message = 0.0
        self._next_renewal = 0.0

    def _new_socket(self) -> ComfySocket:
        url = socket_url(self.client.base_url, self.settings.watcher_client_id)
        # The same auth header as every HTTP call (a ComfyUI behind an authenticating proxy).
        return ComfySocket(url, self.client._auth_headers(), self.settings.connect_timeout)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        _check_settings(self.settings)
        started_wall, started = prompt_state.now(), self.clock()
        release_at = self._release_at
        if release_at is None:
            release_at = handover_time(started_wall, self.seconds_left(), self.settings.watcher_tick_seconds)
        lease = self._take_lease(release_at)
        if lease is None:
            self.summary.status = "lease_held"
            return self.summary.as_dict()
        self._stop_at = started + (release_at - started_wall)
        self._lease = lease
        pool = self._shared_pool or ThreadPoolExecutor(max_workers=ARCHIVE_WORKERS,
                                                      thread_name_prefix="watcher-archive")
        self._pool = pool
        lost = False
        try:
            lost = self._connected_loop()
        finally:
            if not lost:
                self.leases.release(lease)  # after the socket is closed (see the module doc)
            self._finish_archives()
            if pool is not self._shared_pool:
                pool.shutdown(wait=False)
        logger.info("Watcher stopped", extra=self.summary.as_dict())
        return self.summary.as_dict()

    def _take_lease(self, release_at: float) -> Lease | None:
        lease = self.leases.acquire(self.backend, self.holder, release_at)
        if lease is not None:
            return lease
        current = self.leases.current(self.backend)
        if current is None:  # released between the two calls
            return self.leases.acquire(self.backend, self.holder, release_at)
        if current.release_at - prompt_state.now() > HANDOVER_WAIT:
            return None  # a holder that stays: exit at once
        # The holder hands over within seconds: be the one that takes over.
        wait_until = current.release_at + HANDOVER_WAIT
        while prompt_state.now() < wait_until and self.seconds_left() > SHUTDOWN_MARGIN:
            self.sleep(LEASE_POLL)
            lease = self.leases.acquire(self.backend, self.holder, release_at)
            if lease is not None:
                logger.info("Lease taken over", extra={"previous": current.holder})
                return lease
        return None

    def _connected_loop(self) -> bool:
        """Connect, read, reconnect, until the handover time. True when the lease was lost."""
        backoff = Backoff()
        self._next_renewal = self.clock() + RENEW_SECONDS
        while self.clock() < self._stop_at:
            socket = self.socket_factory()
            connected_at: float | None = None
            try:
                socket.connect()
                connected_at = self.clock()
                self.summary.connects += 1
                if self.summary.connects > 1:
                    self.summary.reconnects += 1
                    metrics.add_metric(name="WatcherReconnected", unit=MetricUnit.Count, value=1)
                backoff.reset()
                self._after_connect()
                self._read(socket)
                self.summary.status = "handed_over"
            except LeaseLostError:
                self.summary.status = "lease_lost"
                logger.warning("Watcher lease taken by another invocation; stopping")
                return True
            except ComfyUIError as exc:
                self.summary.errors = (self.summary.errors + [exc.message])[-10:]
                delay = min(backoff.next(), max(0.0, self._stop_at - self.clock()))
                logger.info("ComfyUI socket down; reconnecting", extra={"error": exc.message, "in": delay})
                try:
                    self._pause(delay)
                except LeaseLostError:
                    self.summary.status = "lease_lost"
                    return True
            finally:
                if connected_at is not None:
                    self.summary.connected_seconds += self.clock() - connected_at
                socket.close()
        return False

    def _pause(self, seconds: float) -> None:
        """Sleep, renewing the lease meanwhile (ComfyUI may be down for a while)."""
        end = self.clock() + seconds
        while self.clock() < end:
            self._renew_if_due()
            self.sleep(min(RECEIVE_TIMEOUT, max(0.0, end - self.clock())))

    def _read(self, socket: Any) -> None:
        self._last_message = self.clock()
        while self.clock() < self._stop_at:
            self._periodic()
            raw = socket.receive(RECEIVE_TIMEOUT)
            if raw is None:
                continue
            self._last_message = self.clock()
            for event in self.tracker.read(raw):
                self._on_event(event)

    # -- housekeeping between messages ---------------------------------------------------
    def _periodic(self) -> None:
        self._renew_if_due()
        while not self._archived.empty():  # forgotten here: only this thread touches the tracker
            prompt_id = self._archived.get_nowait()
            self.tracker.forget(prompt_id)
            self.throttle.forget(prompt_id)
        now = self.clock()
        for prompt_id in self.throttle.due(now):
            self._save(prompt_id)
        for prompt_id, seen in list(self._end_seen.items()):
            if now - seen >= DONE_FALLBACK:
                self._archive_soon(prompt_id)
        if now - self._last_message >= WATCHDOG_SECONDS:
            self._last_message = now
            self._watchdog()

    def _renew_if_due(self) -> None:
        if self.clock() < self._next_renewal:
            return
        try:
            self.leases.renew(self._lease)
        except LeaseLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - DynamoDB trouble: the lease outlives a few failed renewals
            logger.warning("Lease renewal failed; retrying", extra={"error": repr(exc)})
            self._next_renewal = self.clock() + RENEW_RETRY_SECONDS
            return
        self._next_renewal = self.clock() + RENEW_SECONDS

    def _watchdog(self) -> None:
        """A quiet socket is normal; one that missed queue changes is not (see module doc)."""
        known = self.tracker.queue_remaining
        actual = self.client.queue_remaining()
        if known is not None and actual != known:
            metrics.add_metric(name="WatcherSocketSilent", unit=MetricUnit.Count, value=1)
            raise SocketSilentError(f"ComfyUI's queue is at {actual}, the socket last said {known}")

    # -- messages ------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, Started):
            self.summary.prompts_started += 1
            info = self._prompt_info(event.prompt_id)
            self.tracker.adopt(event.prompt_id, info.nodes_total)
            self._offer(event.prompt_id)
        elif isinstance(event, Progressed):
            self._offer(event.prompt_id)
        elif isinstance(event, Ended):
            self._end_seen[event.prompt_id] = self.clock()
            self.throttle.forget(event.prompt_id)
            self._save(event.prompt_id)
        elif isinstance(event, Done):
            self._archive_soon(event.prompt_id)
        elif isinstance(event, QueueStatus):
            pass  # kept by the tracker for the watchdog

    def _offer(self, prompt_id: str) -> None:
        if self.throttle.offer(prompt_id, self.clock()):
            self._save(prompt_id)

    def _save(self, prompt_id: str) -> None:
        progress = self.tracker.prompts.get(prompt_id)
        if progress is None:
            return
        info = self._info.get(prompt_id) or _PromptInfo(None, None)
        started_at = progress.started_at or prompt_state.now()
        typical = prompt_state.typical_duration(self._recent(info.workflow)) if info.workflow else None
        expected_end = started_at + typical if typical is not None and progress.outcome is None else None
        if prompt_state.save_progress(
            prompt_id,
            status=progress.outcome or "running",
            progress=progress.snapshot(),
            workflow=info.workflow,
            started_at=started_at,
            expected_end=expected_end,
            backend=self.backend,
            settings=self.settings,
        ):
            self.summary.progress_writes += 1

    def _recent(self, workflow: str) -> list[float]:
        cached = self._durations.get(workflow)
        # A workflow without recorded runs is asked again sooner: its first runs finish
        # (and are recorded) within the minute, and its ETA should show from the next one.
        lifetime = DURATIONS_CACHE_SECONDS if cached and cached[1] else EMPTY_DURATIONS_CACHE_SECONDS
        if cached is not None and self.clock() - cached[0] < lifetime:
            return cached[1]
        durations = prompt_state.recent_durations(workflow, self.settings)
        self._durations[workflow] = (self.clock(), durations)
        return durations

    def _prompt_info(self, prompt_id: str) -> _PromptInfo:
        """Workflow and node count of a prompt, from one GET /queue that also tells about
        every other prompt of ours waiting there (a burst costs one request, not fifty)."""
        if prompt_id not in self._info:
            try:
                self._learn_queue()
            except ComfyUIError as exc:
                logger.info("Queue unreadable; progress without totals", extra={"error": exc.message})
        return self._info.setdefault(prompt_id, _PromptInfo(None, None))

    def _learn_queue(self) -> list[str]:
        """Remember our queued and running prompts; the ids of the running ones."""
        queue = self.client.queue()
        running: list[str] = []
        for key in ("queue_running", "queue_pending"):
            for item in queue.get(key) or []:
                if not isinstance(item, list) or len(item) < 5 or not isinstance(item[3], dict):
                    continue
                extra = item[3]
                if extra.get("client_id") != self.settings.watcher_client_id:
                    continue  # someone else's prompt: the sweep archives it, we do not follow it
                origin = extra.get(EXTRA_DATA_KEY) if isinstance(extra.get(EXTRA_DATA_KEY), dict) else {}
                workflow = origin.get("workflow") if isinstance(origin.get("workflow"), str) else None
                prompt_id = str(item[1])
                self._info[prompt_id] = _PromptInfo(workflow, nodes_to_run(item[2], item[4]))
                if key == "queue_running":
                    running.append(prompt_id)
        return running

    # -- archiving -----------------------------------------------------------------------
    def _after_connect(self) -> None:
        """Follow what runs now, and archive what finished while nobody listened."""
        self.tracker.queue_remaining = None  # the watchdog compares with this socket's word only
        try:
            for prompt_id in self._learn_queue():
                self.tracker.adopt(prompt_id, self._info[prompt_id].nodes_total)
        except ComfyUIError as exc:
            logger.info("Queue unreadable after connect", extra={"error": exc.message})
        self.summary.catch_up_sweeps += 1
        self._submit(self.sweep)

    def _archive_soon(self, prompt_id: str) -> None:
        self._end_seen.pop(prompt_id, None)
        with self._lock:
            if prompt_id in self._archiving:
                return
            self._archiving.add(prompt_id)
        self._submit(lambda: self._archive(prompt_id))

    def _submit(self, work: Callable[[], Any]) -> None:
        # The invocation's deadline (a context variable) goes along into the worker thread.
        context = contextvars.copy_context()
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(context.run, work))

    def _archive(self, prompt_id: str) -> None:
        try:
            for _ in range(NOT_FINISHED_RETRIES):
                result = self.archive_one(prompt_id)
                if result.get("status") != "not_finished":
                    break
                self.sleep(NOT_FINISHED_PAUSE)  # ComfyUI writes history just after the end event
            status = result.get("status")
            with self._lock:
                if status == "already_archived":
                    self.summary.prompts_already_archived += 1
                elif status in ("archived", "nothing_to_archive", "incomplete"):
                    self.summary.prompts_archived += 1
            if status not in ("archived", "nothing_to_archive", "already_archived"):
                logger.warning("Prompt not archived by the watcher; the sweep retries",
                               extra={"prompt_id": prompt_id, "result": result})
        except Exception:  # noqa: BLE001 - one prompt's failure must not end the watch
            logger.exception("Archiving failed in the watcher", extra={"prompt_id": prompt_id})
        finally:
            self._archived.put(prompt_id)

    def _finish_archives(self) -> None:
        pending = [f for f in self._futures if not f.done()]
        if pending:
            wait(pending, timeout=max(0.0, self.seconds_left() - 2.0))

    def _sweep_seconds_left(self) -> float:
        return self.seconds_left()


# The invocation's status when its backends' differ: the first of these any backend has.
_STATUS_WORST_FIRST = ("lease_lost", "stopped", "handed_over", "lease_held")
_TOTALS = ("connects", "reconnects", "prompts_started", "prompts_archived", "prompts_already_archived",
           "progress_writes", "catch_up_sweeps", "connected_seconds")


def aligned_release(leases: LeaseStore, names: list[str], holder: str, release_at: float) -> float:
    """When to let go, for an invocation that watches some backends while another holds the
    leases of others (it started before a backend was added): that one's release time, when
    it comes first. Both then hand over on the same tick, whose run takes over every
    backend; otherwise the two would stay out of step for good. A release due within
    HANDOVER_WAIT is the usual handover, waited for (Watcher._take_lease), not aligned to."""
    now = prompt_state.now()
    for name in names:
        try:
            current = leases.current(name)
        except Exception as exc:  # noqa: BLE001 - DynamoDB trouble: that watcher's own acquire will say
            logger.warning("Lease unreadable; release time not aligned", extra={"backend": name, "error": repr(exc)})
            continue
        if current is None or current.holder == holder or current.lease_until < now:
            continue
        if now + HANDOVER_WAIT < current.release_at < release_at:
            release_at = current.release_at
    return release_at


def _fleet_summary(holder: str, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lone watcher's keys, as totals (status: the worst), plus `backends`, each
    backend's own summary keyed by name."""
    total = WatchSummary(holder=holder)
    statuses = {summary["status"] for summary in summaries.values()}
    total.status = next((status for status in _STATUS_WORST_FIRST if status in statuses), "stopped")
    for key in _TOTALS:
        setattr(total, key, sum(summary[key] for summary in summaries.values()))
    total.connected_seconds = round(total.connected_seconds, 3)
    total.errors = [f"{name}: {error}" for name, summary in summaries.items() for error in summary["errors"]][-10:]
    backends = {name: {key: value for key, value in summary.items() if key != "holder"}
                for name, summary in summaries.items()}
    return {**total.as_dict(), "backends": backends}


def _watch_fleet(fleet: Fleet, holder: str, seconds_left: Callable[[], float] | None) -> dict[str, Any]:
    """One Watcher per backend, each on a thread of its own, until the same handover time."""
    settings = fleet.settings
    _check_settings(settings)  # raised as the lone watcher would, before any thread starts
    seconds_left = seconds_left or (lambda: 900.0)
    backends = fleet.backends()
    leases = LeaseStore(settings)
    release_at = aligned_release(
        leases, [backend.name for backend in backends], holder,
        handover_time(prompt_state.now(), seconds_left(), settings.watcher_tick_seconds))
    archives = ThreadPoolExecutor(max_workers=ARCHIVE_WORKERS, thread_name_prefix="watcher-archive")
    watchers = [Watcher(settings=settings, client=fleet.client(backend), backend=backend.name, holder=holder,
                        seconds_left=seconds_left, leases=leases, pool=archives, release_at=release_at)
                for backend in backends]

    def watch(watcher: Watcher) -> dict[str, Any]:
        logger.thread_safe_append_keys(backend=watcher.backend)  # this thread's context only
        return watcher.run()

    try:
        with ThreadPoolExecutor(max_workers=len(watchers), thread_name_prefix="watcher") as threads:
            # Each thread runs in a copy of this context: the invocation's deadline goes along.
            futures = [threads.submit(contextvars.copy_context().run, watch, watcher) for watcher in watchers]
            wait(futures)
    finally:
        archives.shutdown(wait=False)
    summaries: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []
    for watcher, future in zip(watchers, futures):
        error = future.exception()
        if error is None:
            summaries[watcher.backend] = future.result()
            continue
        # DynamoDB or a bug, not ComfyUI (that is the watcher's reconnect loop): raised below,
        # after the other backends' watchers ran their course, so the invocation fails visibly.
        logger.error("Watcher failed", extra={"backend": watcher.backend, "error": repr(error)}, exc_info=error)
        failures.append(error)
    if failures:
        raise failures[0]
    summary = _fleet_summary(holder, summaries)
    logger.info("Watchers stopped", extra={key: value for key, value in summary.items() if key != "backends"})
    return summary


def run_watcher(holder: str | None, seconds_left: Callable[[], float] | None) -> dict[str, Any]:
    """The watcher function's one call: one Watcher for a lone server, one per backend of
    a fleet."""
    fleet = get_fleet()
    backends = fleet.backends()
    if len(backends) == 1:
        return Watcher(holder=holder, seconds_left=seconds_left, client=fleet.client(backends[0])).run()
    return _watch_fleet(fleet, holder or str(uuid.uuid4()), seconds_left)
