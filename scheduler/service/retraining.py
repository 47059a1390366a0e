"""Scheduled retraining: every ``retrain_interval_s`` one replica fits a candidate on the
newest records and publishes it only if it beats the current model.

Opt-in (``retrain_interval_s``; None, the default, is off). Each round:

1. **One replica.** With Redis, a replica takes the lease ``{prefix}retrain:lease`` for
   one interval (``SET NX PX``) and renews it while it trains; a replica that finds it
   taken skips the round (``result="skipped"``). So at most one replica trains at a
   time, and about one round happens per interval however many replicas there are.
   Without Redis there is one scheduler, and no lease.
2. **Off the event loop.** Reading the records, fitting and scoring run in a child
   process (``python -m scheduler.service.retraining``, at a lower CPU priority): seconds
   of CPU and hundreds of MB that never touch the writer, the event loop or the GIL of
   the process answering peers. The child reads the newest ``retrain_records`` records
   itself (the Redis stream, or ``records_dir``) and gets the current model on stdin;
   it answers one JSON line. The scheduling path is not changed at all.
3. **Compare, then promote.** ``scheduler.learning.retrain``: the candidate is fitted on
   the older records, and it and the current model (the published one, else the one this
   replica serves) are scored on the newest, held out by time. Only a candidate with a
   strictly lower held-out error is published, to Redis (or ``model_path``), where every
   replica's model watcher picks it up within ``model_reload_s``.

Each round is logged with both scores, and counted: ``p2p_scheduler_retrains_total{result}``
(promoted, rejected, failed, skipped; attempts are all but skipped),
``p2p_scheduler_retrain_held_out_rmse{model}`` (candidate, current: the last round's
scores) and ``p2p_scheduler_retrain_duration_seconds`` (the last round's length).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler.core.tree_model import ModelFormatError, TreeEnsemble, from_json
from scheduler.learning.artifact import ModelFileError, model_bytes, parse_model
from scheduler.service.config import SchedulerConfig
from scheduler.service.models import ModelServing
from scheduler.service.records import FileRecordStore, RecordStore
from scheduler.service.redis_store import RedisRecordStore, StoreUnavailable, data_client
from scheduler.service.stores import DATA_TIMEOUT_S, Stores
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

RESULTS = ("promoted", "rejected", "failed", "skipped")
# The child's CPU priority below the scheduler's (nice increment).
CHILD_NICENESS = 10
# A round that takes longer than this is stopped (the child killed) and counts as failed.
MIN_ROUND_TIMEOUT_S = 600.0


class RetrainMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds = Counter(
            "p2p_scheduler_retrains",
            "Scheduled retraining rounds, by result: promoted (the candidate beat the current "
            "model on held-out records and was published), rejected, failed (too few "
            "records, Redis down, an error), skipped (another replica holds the lease).",
            ["result"],
            registry=registry,
        )
        self.rmse = Gauge(
            "p2p_scheduler_retrain_held_out_rmse",
            "The last round's held-out error (RMSE of ln piece throughput in bytes/s; lower "
            "is better), of the candidate and of the current model.",
            ["model"],
            registry=registry,
        )
        self.duration = Gauge(
            "p2p_scheduler_retrain_duration_seconds",
            "How long the last attempted round took, reading records to publishing.",
            registry=registry,
        )
        for result in RESULTS:
            self.rounds.labels(result)


class Retrainer:
    def __init__(
        self,
        config: SchedulerConfig,
        stores: Stores,
        models: ModelServing,
        registry: CollectorRegistry,
    ) -> None:
        assert config.retrain_interval_s is not None
        if stores.publish_target is None:
            raise ValueError("retraining needs redis_url or model_path to publish to")
        self._config = config
        self._interval_s = config.retrain_interval_s
        self._stores = stores
        self._target = stores.publish_target
        self._models = models
        self.metrics = RetrainMetrics(registry)
        self._task: asyncio.Task[None] | None = None
        self._store_failing = False
        # When the round under way started (None between rounds): see _count.
        self._round_started: float | None = None

    def start(self, writer: StateWriter) -> None:
        log.info(
            "retraining every %g s on the newest %d records (%s)",
            self._interval_s,
            self._config.retrain_records,
            "one replica at a time, by a Redis lease" if self._stores.lease else "no lease",
        )
        self._task = asyncio.create_task(self._run(writer), name="retraining")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, writer: StateWriter) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once(writer)
            except Exception:
                self.metrics.rounds.labels("failed").inc()
                log.exception("retraining failed; trying again in %g s", self._interval_s)

    async def run_once(self, writer: StateWriter) -> str:
        """One round; its result (one of ``RESULTS``)."""
        lease = self._stores.lease
        if lease is not None:
            try:
                if not await lease.acquire(self._interval_s):
                    log.debug("retraining: another replica holds the lease this round")
                    self.metrics.rounds.labels("skipped").inc()
                    return "skipped"
            except StoreUnavailable as exc:
                return self._failed(f"cannot take the lease: {exc}", store=True)
        self._round_started = time.monotonic()
        keeper = asyncio.create_task(self._keep_lease()) if lease is not None else None
        try:
            answer = await self._train(await self._current())
            result = await self._decide(answer, writer)
        except StoreUnavailable as exc:
            result = self._failed(str(exc), store=True)
        finally:
            self._round_started = None
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        return result

    async def _current(self) -> TreeEnsemble | None:
        """The published model; else the one this replica serves; else None."""
        store, name = self._target
        data = await store.get(name)
        if data is not None:
            try:
                return await asyncio.to_thread(parse_model, data, f"the published {name!r}")
            except ModelFileError as exc:
                log.warning("retraining: the published model is not valid (%s)", exc)
        return self._models.model

    async def _keep_lease(self) -> None:
        assert self._stores.lease is not None
        while True:
            await asyncio.sleep(self._interval_s / 3)
            try:
                if not await self._stores.lease.renew(self._interval_s):
                    log.warning("retraining: the lease expired during the round")
            except StoreUnavailable as exc:
                log.warning("retraining: cannot renew the lease: %s", exc)

    async def _train(self, current: TreeEnsemble | None) -> dict[str, Any]:
        """Run the round's child process; its answer."""
        config = self._config
        source: dict[str, Any]
        if "redis" in self._stores.records:
            source = {"redis_url": config.redis_url, "key_prefix": config.redis_key_prefix}
        else:
            source = {"records_dir": config.records_dir}
        job = {
            "source": source,
            "limit": config.retrain_records,
            "current": current.to_json() if current is not None else None,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                child.communicate(json.dumps(job).encode()),
                max(MIN_ROUND_TIMEOUT_S, self._interval_s),
            )
        except BaseException:  # timed out, or the scheduler is stopping: no orphan
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            answer: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            answer = {
                "ok": False,
                "kind": "bug",
                "error": f"the training process exited {child.returncode}: {' | '.join(tail)}",
            }
        return answer

    async def _decide(self, answer: dict[str, Any], writer: StateWriter) -> str:
        if not answer.get("ok"):
            kind = answer.get("kind")
            return self._failed(
                str(answer.get("error")), store=kind == "store", quiet=kind == "training"
            )
        if self._store_failing:
            self._store_failing = False
            log.info("retraining: Redis answers again")
        try:
            candidate = from_json(answer["candidate"])
        except ModelFormatError as exc:
            return self._failed(f"the candidate is not a valid model: {exc}")
        candidate_rmse = float(answer["candidate_rmse"])
        current_rmse = float(answer["current_rmse"])
        self.metrics.rmse.labels("candidate").set(candidate_rmse)
        self.metrics.rmse.labels("current").set(current_rmse)
        promote = candidate_rmse < current_rmse
        result = "promoted" if promote else "rejected"
        log.info(
            "retraining: candidate %s held-out rmse %.4f vs current %s %.4f (fitted on %d "
            "records, %d newest held out): %s",
            candidate.version,
            candidate_rmse,
            answer["current_version"],
            current_rmse,
            answer["fit_records"],
            answer["held_out_records"],
            result,
        )
        if promote:
            store, name = self._target
            await store.put(name, model_bytes(candidate))
            with contextlib.suppress(Exception):
                await self._models.reload_now(writer)  # here at once; others within a poll
        self._count(result)
        return result

    def _count(self, result: str) -> None:
        """A round's result; a round under way records its length first, so whoever sees
        the count go up (a test, a dashboard) sees that round's length too."""
        if self._round_started is not None:
            self.metrics.duration.set(time.monotonic() - self._round_started)
        self.metrics.rounds.labels(result).inc()

    def _failed(self, error: str, store: bool = False, quiet: bool = False) -> str:
        self._count("failed")
        if store:
            if not self._store_failing:
                log.warning(
                    "retraining: Redis unreachable (%s); rounds fail until it answers", error
                )
            self._store_failing = True
        elif quiet:
            log.info("retraining: no candidate this round: %s", error)
        else:
            log.warning("retraining failed: %s", error)
        return "failed"


# The child process.


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Read the records, fit a candidate, compare it with the current model."""
    from scheduler.learning.dataset import dataset_from_records
    from scheduler.learning.retrain import retrain

    records = asyncio.run(_read(job["source"], int(job["limit"])))
    dataset = dataset_from_records(records)
    current = None
    if job.get("current") is not None:
        try:
            current = from_json(job["current"])
        except ModelFormatError:
            current = None
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    comparison = retrain(dataset, current, trained_at=now)
    return {
        "ok": True,
        "candidate": comparison.candidate.to_json(),
        "candidate_rmse": comparison.candidate_rmse,
        "current_version": comparison.current_version,
        "current_rmse": comparison.current_rmse,
        "fit_records": comparison.fit_records,
        "held_out_records": comparison.held_out_records,
        "records_read": len(records),
    }


async def _read(source: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    store: RecordStore
    if "redis_url" in source:
        client = data_client(source["redis_url"], DATA_TIMEOUT_S)
        try:
            store = RedisRecordStore(client, source["key_prefix"], max_len=1)
            return await store.read(limit)
        finally:
            await client.aclose()
    store = FileRecordStore(source["records_dir"])
    return await store.read(limit)


def main() -> int:
    from scheduler.learning.train import TrainingError

    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)
    job = json.loads(sys.stdin.buffer.read())
    answer: dict[str, Any]
    try:
        answer = run_job(job)
    except TrainingError as exc:
        answer = {"ok": False, "kind": "training", "error": str(exc)}
    except StoreUnavailable as exc:
        answer = {"ok": False, "kind": "store", "error": str(exc)}
    except Exception as exc:
        answer = {"ok": False, "kind": "bug", "error": f"{exc.__class__.__name__}: {exc}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
