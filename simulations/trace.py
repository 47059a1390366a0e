"""Event traces: every call a simulated run makes on the scheduler core, with its answer.

The simulator and ``p2p-scheduler`` run the same core, so the same inputs at the same
times with the same random stream must give the same decisions. A trace makes that
checkable: it holds what the simulated peers told the scheduler (core events with their
simulated times), every decision they asked for with the answer they got, every import
claim with its answer (claims link parents too), every take of origin pieces with the
pieces handed out, and every piece spread a seed read, in call order. Replaying the
events into a fresh core (``replay_core``) or, over HTTP, into the service
(``tests/integration/test_sim_service_parity.py``) must give the recorded answers.

A trace is recorded by ``record``, which swaps the swarm's core for a ``TracingState``
before the run: a subclass noting each public call after it returns. The answers are the
core's own values; recording draws no random number and changes no decision.

The file is JSON lines (``p2psim --trace FILE``)::

    {"trace": "p2psim", "version": 1, "scenario": {...}, "rng_seed": N, "settings": {...}}
    {"t": 0.0, "event": "HostAnnounced", "fields": {"host_id": "...", ...}}
    {"t": 0.002, "schedule": "<peer_id>", "decision": {"action": "parents", ...}}
    {"t": 0.51, "spread": "<task_id>", "result": [3, 1, 0]}
    {"t": 0.6, "claims": "<peer_id>", "claim": [4], "release": [], "answer": {...}}
    {"t": 0.7, "take": "<peer_id>", "want": 4, "pieces": [8, 9, 10, 11]}

Event fields are the core event's dataclass fields, so they double as the service's
request bodies. Decisions use the service's response shapes without the piece digests
(``action``, ``parents``, ``reason``, ``after_s``). ``rng_seed`` seeds the scheduler's
``random.Random``, as the service's ``rng_seed`` does; ``settings`` are the core's
``SchedulerSettings``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from scheduler.core import (
    Decision,
    Evaluator,
    Event,
    HostAnnounced,
    HostExpired,
    ParentReported,
    PeerFailed,
    PeerFinished,
    PeerLeft,
    PeerRegistered,
    PieceReport,
    PiecesReported,
    Removal,
    RuleEvaluator,
    SchedulerSettings,
    SchedulerState,
)
from scheduler.core.claims import ClaimsAnswer
from scheduler.core.transfers import TransferRecorder
from scheduler.service import wire
from simulations.report import RunResult, result_of
from simulations.scenario import Scenario
from simulations.swarm import Swarm

FORMAT = "p2psim"
VERSION = 1
_EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        HostAnnounced,
        HostExpired,
        PeerRegistered,
        PiecesReported,
        ParentReported,
        PeerFinished,
        PeerFailed,
        PeerLeft,
    )
}


class TraceError(ValueError):
    """A run that cannot be traced, a file that is no trace, a trace that cannot replay."""


@dataclass(frozen=True)
class EventStep:
    """The core consumed ``event`` at ``t``."""

    t: float
    event: Event


@dataclass(frozen=True)
class ScheduleStep:
    """The peer asked for a decision at ``t`` and got ``decision`` (``decision_json``)."""

    t: float
    peer_id: str
    decision: dict[str, Any]


@dataclass(frozen=True)
class SpreadStep:
    """A seed read the task's piece spread (``SchedulerState.task_spread``) at ``t``."""

    t: float
    task_id: str
    spread: tuple[int, ...]


@dataclass(frozen=True)
class ClaimsStep:
    """The peer claimed and released pieces at ``t`` (``SchedulerState.claim_imports``)
    and got ``answer`` (the service's response shape, ``wire.claims_json``)."""

    t: float
    peer_id: str
    claim: tuple[int, ...]
    release: tuple[int, ...]
    answer: dict[str, Any]


@dataclass(frozen=True)
class TakeStep:
    """The peer took ``pieces`` of a shared origin fetch at ``t``, asking for ``want``
    (``SchedulerState.take_origin_pieces``)."""

    t: float
    peer_id: str
    want: int
    pieces: tuple[int, ...]


Step: TypeAlias = EventStep | ScheduleStep | SpreadStep | ClaimsStep | TakeStep


@dataclass(frozen=True)
class TraceHeader:
    """What a replay needs besides the steps. ``scenario`` is the run's, as JSON has it;
    its strategy names the evaluator (only ``rule`` and ``learned`` run in the service)."""

    scenario: dict[str, Any]
    rng_seed: int
    settings: SchedulerSettings

    @property
    def strategy(self) -> str:
        return str(self.scenario["strategy"])


@dataclass
class Trace:
    header: TraceHeader
    steps: list[Step]


# -- JSON ------------------------------------------------------------------------------


def decision_json(decision: Decision) -> dict[str, Any]:
    """A decision in the service's response shape (``scheduler.service.wire``), without
    the piece digests: what the replay compares with the service's answers."""
    payload = wire.decision_json(decision, {})
    payload.pop("piece_digests", None)
    return payload


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields as JSON values: sets as sorted lists, tuples as lists."""
    fields = dataclasses.asdict(event)
    if isinstance(event, PeerRegistered):
        fields["pieces"] = sorted(event.pieces)
        fields["piece_digests"] = list(event.piece_digests)
    return fields


def event_from_json(name: str, fields: dict[str, Any]) -> Event:
    cls = _EVENT_TYPES.get(name)
    if cls is None:
        raise TraceError(f"unknown event {name!r}")
    if cls is PeerRegistered:
        fields = {
            **fields,
            "pieces": frozenset(fields.get("pieces", ())),
            "piece_digests": tuple(fields.get("piece_digests", ())),
        }
    elif cls is PiecesReported:
        fields = {**fields, "reports": tuple(PieceReport(**r) for r in fields["reports"])}
    return cls(**fields)


def step_json(step: Step) -> dict[str, Any]:
    if isinstance(step, EventStep):
        return {"t": step.t, "event": type(step.event).__name__, "fields": event_fields(step.event)}
    if isinstance(step, ScheduleStep):
        return {"t": step.t, "schedule": step.peer_id, "decision": step.decision}
    if isinstance(step, ClaimsStep):
        return {
            "t": step.t,
            "claims": step.peer_id,
            "claim": list(step.claim),
            "release": list(step.release),
            "answer": step.answer,
        }
    if isinstance(step, TakeStep):
        return {"t": step.t, "take": step.peer_id, "want": step.want, "pieces": list(step.pieces)}
    return {"t": step.t, "spread": step.task_id, "result": list(step.spread)}


def step_from_json(data: dict[str, Any]) -> Step:
    t = float(data["t"])
    if "event" in data:
        return EventStep(t, event_from_json(data["event"], data["fields"]))
    if "schedule" in data:
        return ScheduleStep(t, data["schedule"], data["decision"])
    if "spread" in data:
        return SpreadStep(t, data["spread"], tuple(data["result"]))
    if "claims" in data:
        claim, release = tuple(data["claim"]), tuple(data["release"])
        return ClaimsStep(t, data["claims"], claim, release, data["answer"])
    if "take" in data:
        return TakeStep(t, data["take"], int(data["want"]), tuple(data["pieces"]))
    raise TraceError(f"not a trace step: {sorted(data)}")


def header_json(header: TraceHeader) -> dict[str, Any]:
    return {
        "trace": FORMAT,
        "version": VERSION,
        "scenario": header.scenario,
        "rng_seed": header.rng_seed,
        "settings": dataclasses.asdict(header.settings),
    }


def header_from_json(data: dict[str, Any]) -> TraceHeader:
    if data.get("trace") != FORMAT or data.get("version") != VERSION:
        raise TraceError(f"not a {FORMAT} trace, version {VERSION}")
    return TraceHeader(
        data["scenario"], int(data["rng_seed"]), SchedulerSettings(**data["settings"])
    )


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def write_trace(trace: Trace, path: Path) -> None:
    with path.open("w") as fh:
        fh.write(_line(header_json(trace.header)))
        fh.writelines(_line(step_json(step)) for step in trace.steps)


def read_trace(path: Path) -> Trace:
    with path.open() as fh:
        lines = (json.loads(line) for line in fh if line.strip())
        try:
            header = header_from_json(next(lines))
        except StopIteration:
            raise TraceError(f"{path}: empty") from None
        return Trace(header, [step_from_json(data) for data in lines])


# -- recording -------------------------------------------------------------------------


class TracingState(SchedulerState):
    """The scheduler core, noting each public call after it returns.

    Calls without a ``now`` of their own (finishing, leaving, host expiry) are stamped
    with ``clock()``, the simulated time; the core does not read the time for them.
    """

    def __init__(
        self,
        settings: SchedulerSettings,
        evaluator: Evaluator,
        recorder: TransferRecorder | None,
        sink: Callable[[Step], None],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(settings, evaluator, recorder)
        self._sink = sink
        self._clock = clock
        # Set while a call runs that another public call is part of (failing removes):
        # the outer call is the one traced.
        self._quiet = False

    def _event(self, event: Event, now: float | None = None) -> None:
        if not self._quiet:
            self._sink(EventStep(self._clock() if now is None else now, event))

    def announce_host(self, event: HostAnnounced, now: float) -> None:
        super().announce_host(event, now)
        self._event(event, now)

    def expire_host(self, host_id: str) -> Removal:
        removal = super().expire_host(host_id)
        self._event(HostExpired(host_id))
        return removal

    def register_peer(self, event: PeerRegistered, now: float) -> None:
        super().register_peer(event, now)
        self._event(event, now)

    def report_pieces(self, event: PiecesReported, now: float) -> None:
        super().report_pieces(event, now)
        self._event(event, now)

    def block_parent(self, peer_id: str, parent_id: str) -> None:
        super().block_parent(peer_id, parent_id)
        self._event(ParentReported(peer_id, parent_id))

    def finish_peer(self, peer_id: str) -> None:
        super().finish_peer(peer_id)
        self._event(PeerFinished(peer_id))

    def remove_peer(self, peer_id: str) -> Removal:
        removal = super().remove_peer(peer_id)
        self._event(PeerLeft(peer_id))
        return removal

    def fail_peer(self, peer_id: str) -> Removal:
        self._quiet = True
        try:
            removal = super().fail_peer(peer_id)
        finally:
            self._quiet = False
        self._event(PeerFailed(peer_id))
        return removal

    def schedule(self, peer_id: str, now: float, rng: random.Random) -> Decision:
        decision = super().schedule(peer_id, now, rng)
        self._sink(ScheduleStep(now, peer_id, decision_json(decision)))
        return decision

    def task_spread(self, task_id: str) -> list[int]:
        spread = super().task_spread(task_id)
        self._sink(SpreadStep(self._clock(), task_id, tuple(spread)))
        return spread

    def claim_imports(
        self, peer_id: str, pieces: list[int], released: list[int], now: float
    ) -> ClaimsAnswer:
        answer = super().claim_imports(peer_id, pieces, released, now)
        step = ClaimsStep(now, peer_id, tuple(pieces), tuple(released), wire.claims_json(answer))
        self._sink(step)
        return answer

    def take_origin_pieces(self, peer_id: str, want: int, now: float) -> list[int]:
        pieces = super().take_origin_pieces(peer_id, want, now)
        self._sink(TakeStep(now, peer_id, want, tuple(pieces)))
        return pieces


def record(swarm: Swarm, sink: Callable[[Step], None]) -> TraceHeader:
    """Trace ``swarm``'s calls on the core into ``sink``; call before ``swarm.run()``.

    Returns the header (scenario, scheduler seed, settings) the steps need for a replay.
    """
    state = swarm.state
    if state is None:
        raise TraceError("direct pulls use no scheduler: there is nothing to trace")
    if state.hosts or swarm.queue.processed:
        raise TraceError("a trace must start before the run does")
    swarm.use_state(
        TracingState(state.settings, state.evaluator, state.recorder, sink, lambda: swarm.queue.now)
    )
    # The scenario as JSON has it (lists, not tuples), so a header read back compares equal.
    scenario = json.loads(json.dumps(dataclasses.asdict(swarm.scenario)))
    return TraceHeader(scenario, swarm.scheduler_seed, state.settings)


def trace_run(scenario: Scenario) -> Trace:
    """Run the scenario and return its whole trace (small runs: it is held in memory)."""
    swarm = Swarm(scenario)
    steps: list[Step] = []
    header = record(swarm, steps.append)
    swarm.run()
    return Trace(header, steps)


class TraceWriter:
    """Writes a run's trace as it happens, for runs too large to hold in memory."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh
        self.steps = 0

    def header(self, header: TraceHeader) -> None:
        self._fh.write(_line(header_json(header)))

    def __call__(self, step: Step) -> None:
        self._fh.write(_line(step_json(step)))
        self.steps += 1


# -- replaying into the core -------------------------------------------------------------


def core_evaluator(header: TraceHeader) -> Evaluator:
    """The evaluator the service would run for the trace's strategy."""
    strategy = header.strategy
    if strategy == "rule":
        return RuleEvaluator()
    if strategy == "learned":
        from simulations.evaluators import learned_evaluator

        return learned_evaluator(str(header.scenario.get("model_path", "")))
    if strategy == "tuned":
        from simulations.evaluators import tuned_evaluator

        return tuned_evaluator(str(header.scenario.get("rule_weights", "")))
    raise TraceError(f"strategy {strategy!r} has an evaluator only the simulator runs")


Query: TypeAlias = ScheduleStep | SpreadStep | ClaimsStep | TakeStep
# A query step's index in the trace, the step, and the answer a replay got for it.
Answer: TypeAlias = tuple[int, Query, object]


def replay_core(trace: Trace) -> Iterator[Answer]:
    """Feed the trace into a fresh core, yielding what it answers each query step.

    Decisions are answered as ``decision_json``, spreads as tuples: comparable with the
    recorded ``expected(step)``. Event steps are applied and not yielded.
    """
    header = trace.header
    state = SchedulerState(header.settings, core_evaluator(header))
    rng = random.Random(header.rng_seed)
    for index, step in enumerate(trace.steps):
        if isinstance(step, EventStep):
            state.apply(step.event, step.t)
        elif isinstance(step, ScheduleStep):
            yield index, step, decision_json(state.schedule(step.peer_id, step.t, rng))
        elif isinstance(step, ClaimsStep):
            answer = state.claim_imports(step.peer_id, list(step.claim), list(step.release), step.t)
            yield index, step, wire.claims_json(answer)
        elif isinstance(step, TakeStep):
            yield index, step, state.take_origin_pieces(step.peer_id, step.want, step.t)
        else:
            yield index, step, tuple(state.task_spread(step.task_id))


def expected(step: Query) -> object:
    """The answer the simulator got for a query step."""
    if isinstance(step, ScheduleStep):
        return step.decision
    if isinstance(step, TakeStep):
        return list(step.pieces)
    return step.answer if isinstance(step, ClaimsStep) else step.spread


def _kind(step: ScheduleStep | ClaimsStep | TakeStep) -> str:
    """What a peer asked the core for in ``step``, as ``mismatches`` names it."""
    if isinstance(step, ScheduleStep):
        return "schedule"
    return "claims" if isinstance(step, ClaimsStep) else "take"


def mismatches(answers: Iterable[Answer], limit: int = 5) -> list[str]:
    """The first ``limit`` answers that differ from the recorded ones, described."""
    found: list[str] = []
    for index, step, answer in answers:
        if answer != expected(step):
            what = "spread" if isinstance(step, SpreadStep) else f"{_kind(step)} {step.peer_id}"
            found.append(
                f"step {index} ({what} at t={step.t}): recorded {expected(step)}, got {answer}"
            )
            if len(found) >= limit:
                break
    return found


def simulate_tracing(
    scenario: Scenario, path: Path, on_tick: Callable[[Swarm], None] | None = None
) -> tuple[RunResult, int]:
    """Run the scenario writing its trace to ``path`` as it goes; the result and step count.

    A run that fails leaves no trace file behind, only whole ones.
    """
    swarm = Swarm(scenario)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w") as fh:
            writer = TraceWriter(fh)
            writer.header(record(swarm, writer))
            if on_tick is not None:
                swarm.queue.on_tick = lambda: on_tick(swarm)
            swarm.run()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return result_of(swarm), writer.steps
