"""Which evaluator the scheduler runs, and swapping in newly published models.

With ``evaluator: learned`` the scheduler loads ``model_path`` (default: the model shipped
in the package, ``scheduler/learning/default_model.json``) and scores with the learned
evaluator; the default is ``rule`` until a learned model beats it (docs/learned-scoring.md).
When there is no model, the file is not a valid model, or it was trained on another
feature version, the scheduler schedules with the rule evaluator
instead and says so: a warning in the log, ``p2p_scheduler_model_fallbacks_total{reason}``
goes up, and ``p2p_scheduler_model_info{version="rule"}`` is the one set to 1.

Hot reload: every ``model_reload_s`` the file's identity (inode, size, mtime) is checked;
when it changed the new file is loaded and checked off the writer (in a thread), then
the evaluator is swapped by one writer operation. Requests queued around it are decided
by the old or the new evaluator, never dropped. A bad new file keeps the model in use.
Publish by writing a temporary file and renaming it over ``model_path``
(``p2pctl model train --out`` does), so the reloader never reads half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler.core import Evaluator, RuleEvaluator, SchedulerState
from scheduler.core.learned import LearnedEvaluator, ModelMismatchError
from scheduler.learning.artifact import DEFAULT_MODEL_PATH, ModelFileError, load_model
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

FALLBACK_REASONS = ("no_model", "invalid_model", "feature_version", "bad_scores")


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
    """Builds the evaluator at start and keeps it current with the published model file."""

    def __init__(
        self, settings: ModelSettings, registry: CollectorRegistry, rng: random.Random
    ) -> None:
        self.settings = settings
        self.metrics = ModelMetrics(registry)
        self._rng = rng
        self.path = Path(settings.model_path) if settings.model_path else DEFAULT_MODEL_PATH
        self._identity: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._active: tuple[str, str] | None = None
        self._bad_scores_seen = 0
        self.evaluator: Evaluator = self._initial()

    def _initial(self) -> Evaluator:
        if self.settings.evaluator == "rule":
            self._show("rule", "")
            return RuleEvaluator()
        self._identity = _identity(self.path)
        evaluator, reason = self._build(self.path)
        if evaluator is None:
            self.metrics.fallbacks.labels(reason).inc()
            self._show("rule", "")
            return RuleEvaluator()
        return evaluator

    def _build(self, path: Path) -> tuple[LearnedEvaluator | None, str]:
        """The learned evaluator for the model at ``path``, or None and why not."""
        if not path.exists():
            log.warning("no model at %s: scheduling with the rule evaluator", path)
            return None, "no_model"
        try:
            model = load_model(path)
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
            path,
            model.tree_count,
            model.feature_version,
            self.settings.exploration,
        )
        self._show(model.version, model.feature_version)
        return evaluator, ""

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

    def start(self, writer: StateWriter) -> None:
        if self.settings.evaluator == "learned":
            self._task = asyncio.create_task(self._watch(writer), name="model reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload_now(self, writer: StateWriter) -> bool:
        """Load the file if it changed since the last look; whether the evaluator changed."""
        identity = await asyncio.to_thread(_identity, self.path)
        if identity == self._identity or identity is None:
            return False
        self._identity = identity
        evaluator, reason = await asyncio.to_thread(self._build, self.path)
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
            except Exception:
                log.exception(
                    "model reload failed; trying again in %g s", self.settings.model_reload_s
                )


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
