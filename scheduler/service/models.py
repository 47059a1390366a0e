"""Which evaluator the scheduler runs, and swapping in newly published models.

With ``evaluator: learned`` the scheduler loads ``model_path`` (default: the model shipped
in the package, ``scheduler/learning/default_model.json``) and scores with the learned
evaluator; the default is ``rule`` until a learned model beats it (docs/learned-scoring.md).
When there is no model, the file is not a valid model, or it was trained on another
feature version, the scheduler schedules with the rule evaluator
instead and says so: a warning in the log, ``p2p_scheduler_model_fallbacks_total{reason}``
goes up, and ``p2p_scheduler_model_info{version="rule"}`` is the one set to 1.

Where published models come from:

- without Redis, the file ``model_path``: every ``model_reload_s`` its identity (inode,
  size, mtime) is checked. Publish by writing a temporary file and renaming it over
  ``model_path`` (``p2pctl model train --out`` and ``p2pctl model publish --to`` do), so
  the reloader never reads half a file;
- with ``redis_url``, the artifact ``model`` in Redis (``{redis_key_prefix}artifact:model``,
  ``p2pctl model publish --redis-url``, or a promotion by scheduled retraining), so every
  replica serves the same model: every ``model_reload_s`` its digest is compared, and
  the artifact is fetched only when it changed. The file (``model_path`` or the shipped
  model) is only what a replica starts with while nothing is published; a published
  model is loaded before the replica answers its first request. While Redis is down the
  model in use stays, with one log line when that starts and one when it ends.

Hot reload: a changed model is parsed and checked off the writer (in a thread), then the
evaluator is swapped by one writer operation. Requests queued around it are decided by
the old or the new evaluator, never dropped. A bad new model keeps the model in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler.core import Evaluator, RuleEvaluator, SchedulerState
from scheduler.core.learned import LearnedEvaluator, ModelMismatchError
from scheduler.core.tree_model import TreeEnsemble
from scheduler.learning.artifact import (
    DEFAULT_MODEL_PATH,
    MODEL_ARTIFACT,
    ModelFileError,
    load_model,
    parse_model,
)
from scheduler.service.records import ArtifactStore
from scheduler.service.redis_store import StoreUnavailable
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

FALLBACK_REASONS = ("no_model", "invalid_model", "feature_version", "bad_scores")
# How long a replica waits for Redis at start for the published model before it starts
# with the file's model instead (and keeps polling).
_FIRST_LOAD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ModelSettings:
    evaluator: str = "rule"  # or "learned"
    model_path: str | None = None  # None: the shipped model
    model_reload_s: float = 10.0
    exploration: float = 0.0
    parents_per_decision: int = 4


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fallbacks = Counter(
            "p2p_scheduler_model_fallbacks",
            "Times the scheduler fell back to the rule evaluator, by reason (no_model, "
            "invalid_model, feature_version: at load; bad_scores: one decision).",
            ["reason"],
            registry=registry,
        )
        self.info = Gauge(
            "p2p_scheduler_model_info",
            "1 for the evaluator model in use (version: the model's hash, or 'rule').",
            ["version", "feature_version"],
            registry=registry,
        )
        self.reloads = Counter(
            "p2p_scheduler_model_reloads",
            "Published model files loaded after start, by result (ok, refused).",
            ["result"],
            registry=registry,
        )
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason)
        self.reloads.labels("ok")
        self.reloads.labels("refused")


class ModelServing:
    """Builds the evaluator at start and keeps it current with the published model (the
    file, or the Redis artifact)."""

    def __init__(
        self,
        settings: ModelSettings,
        registry: CollectorRegistry,
        rng: random.Random,
        published: ArtifactStore | None = None,
    ) -> None:
        """``published``: the store models are published to (Redis); None: the file."""
        self.settings = settings
        self.metrics = ModelMetrics(registry)
        self._rng = rng
        self.path = Path(settings.model_path) if settings.model_path else DEFAULT_MODEL_PATH
        self._published = published
        self._identity: tuple[int, int, int] | None = None
        self._stamp: str | None = None
        self._store_failing = False
        # One reload at a time (the watcher, and a replica's own promotion).
        self._reloading = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._active: tuple[str, str] | None = None
        self._bad_scores_seen = 0
        self.evaluator: Evaluator = self._initial()

    def _initial(self) -> Evaluator:
        if self.settings.evaluator == "rule":
            self._show("rule", "")
            return RuleEvaluator()
        self._identity = _identity(self.path)
        evaluator, reason = self._build_file(self.path)
        if evaluator is None:
            self.metrics.fallbacks.labels(reason).inc()
            self._show("rule", "")
            return RuleEvaluator()
        return evaluator

    def _build_file(self, path: Path) -> tuple[LearnedEvaluator | None, str]:
        """The learned evaluator for the model at ``path``, or None and why not."""
        if not path.exists():
            log.warning("no model at %s: scheduling with the rule evaluator", path)
            return None, "no_model"
        return self._build(lambda: load_model(path), str(path))

    def _build(
        self, load: Callable[[], TreeEnsemble], where: str
    ) -> tuple[LearnedEvaluator | None, str]:
        """The learned evaluator for the model ``load`` returns, or None and why not."""
        try:
            model = load()
            evaluator = LearnedEvaluator(
                model,
                self._rng,
                self.settings.exploration,
                self.settings.parents_per_decision,
            )
        except ModelFileError as exc:
            log.warning("model refused, scheduling with the rule evaluator: %s", exc)
            return None, "invalid_model"
        except ModelMismatchError as exc:
            log.warning("model refused, scheduling with the rule evaluator: %s", exc)
            return None, "feature_version"
        log.info(
            "learned evaluator: model %s from %s (%d trees, feature set %s, exploration %g)",
            model.version,
            where,
            model.tree_count,
            model.feature_version,
            self.settings.exploration,
        )
        self._show(model.version, model.feature_version)
        return evaluator, ""

    @property
    def model(self) -> TreeEnsemble | None:
        """The model the learned evaluator scores with; None while the rule evaluator does."""
        evaluator = self.evaluator
        if isinstance(evaluator, LearnedEvaluator) and isinstance(evaluator.model, TreeEnsemble):
            return evaluator.model
        return None

    def _show(self, version: str, feature_version: str) -> None:
        if self._active is not None:
            self.metrics.info.remove(*self._active)
        self._active = (version, feature_version)
        self.metrics.info.labels(version, feature_version).set(1)

    def count_bad_scores(self) -> None:
        """Carry the learned evaluator's per-decision fallbacks into the metric."""
        evaluator = self.evaluator
        if isinstance(evaluator, LearnedEvaluator) and evaluator.fallbacks > self._bad_scores_seen:
            self.metrics.fallbacks.labels("bad_scores").inc(
                evaluator.fallbacks - self._bad_scores_seen
            )
            self._bad_scores_seen = evaluator.fallbacks

    async def start(self, writer: StateWriter) -> None:
        """Load the published model (when it comes from Redis), then watch for new ones."""
        if self.settings.evaluator != "learned":
            return
        if self._published is not None:
            try:
                await asyncio.wait_for(self.reload_now(writer), _FIRST_LOAD_TIMEOUT_S)
            except (StoreUnavailable, TimeoutError) as exc:
                self._store_lost(exc)
        self._task = asyncio.create_task(self._watch(writer), name="model reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload_now(self, writer: StateWriter) -> bool:
        """Load the published model if it changed since the last look; whether the
        evaluator changed. Raises ``StoreUnavailable`` when Redis does not answer."""
        async with self._reloading:
            return await self._reload(writer)

    async def _reload(self, writer: StateWriter) -> bool:
        if self._published is None:
            identity = await asyncio.to_thread(_identity, self.path)
            if identity == self._identity or identity is None:
                return False
            self._identity = identity
            evaluator, reason = await asyncio.to_thread(self._build_file, self.path)
        else:
            stamp = await self._published.stamp(MODEL_ARTIFACT)
            if stamp == self._stamp or stamp is None:
                return False
            data = await self._published.get(MODEL_ARTIFACT)
            if data is None:
                return False
            self._stamp = stamp
            where = f"the published artifact {MODEL_ARTIFACT!r}"
            evaluator, reason = await asyncio.to_thread(
                self._build, lambda: parse_model(data, where), where
            )
        if evaluator is None:
            self.metrics.reloads.labels("refused").inc()
            self.metrics.fallbacks.labels(reason).inc()
            log.warning("published model not loaded (%s); keeping %s", reason, self.evaluator.name)
            return False
        self.count_bad_scores()

        def swap(state: SchedulerState, now: float, rng: random.Random) -> None:
            state.evaluator = evaluator

        await writer.submit(swap)
        self.evaluator = evaluator
        self._bad_scores_seen = 0
        self.metrics.reloads.labels("ok").inc()
        return True

    async def _watch(self, writer: StateWriter) -> None:
        while True:
            await asyncio.sleep(self.settings.model_reload_s)
            try:
                await self.reload_now(writer)
                self.count_bad_scores()
            except StoreUnavailable as exc:
                self._store_lost(exc)
                continue
            except Exception:
                log.exception(
                    "model reload failed; trying again in %g s", self.settings.model_reload_s
                )
            if self._store_failing:
                self._store_failing = False
                log.info("Redis answers again: watching for published models")

    def _store_lost(self, exc: Exception) -> None:
        if not self._store_failing:
            self._store_failing = True
            log.warning(
                "cannot read the published model from Redis (%s): scheduling goes on with "
                "%s, trying again every %g s",
                exc or "timed out",
                self.evaluator.name,
                self.settings.model_reload_s,
            )


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
