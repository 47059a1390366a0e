"""Schemathesis fuzzes the scheduler API from the OpenAPI document the scheduler serves.

A real scheduler app listens on 127.0.0.1 (an ephemeral port, in a thread of its own, since
schemathesis calls it with blocking requests) and requires the cluster token. Every
operation of the document gets schema-valid and schema-violating requests; then a state
machine follows the document's links (announce a host, register peers on it, report,
block, finish, leave) so requests reach the core with hosts and peers that exist.

Every response must:

- not be a 5xx (``not_a_server_error``);
- have a status, content type, headers and body the document gives for that operation;
- for a schema-violating request, be a 4xx (``negative_data_rejection``);
- for a schema-valid request, be a success, 401, 404 or 409, or a 400 for one of the rules
  across fields the document states in words (``accepts_valid_requests`` below);
- when it refuses a body (400, 413, 415), name the field it refuses in ``field`` and in
  the message (``refusals_name_their_field``).

The example counts keep the whole module at about fifteen seconds on two cores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.specs.openapi.schemas import OpenApiSchema

from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from scheduler.service.openapi import DOCUMENT
from tests.integration.scheduler.conftest import TOKEN
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.timeout(120)

# Per operation and generation mode: enough to find the bugs this test was written
# for (each took fewer than 30 examples), few enough to stay quick.
MAX_EXAMPLES = 40
SEED = 20261122
STATEFUL_SCENARIOS = 60
STATEFUL_STEPS = 12
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Rules that tie fields together, which a JSON Schema cannot state: a schema-valid body may
# still break them, and the document says so in the operation's description. Keyed by
# operation, the fields whose 400 such a body may get.
CROSS_FIELD_RULES: dict[str, re.Pattern[str]] = {
    "POST /api/v1/peers": re.compile(r"piece_bytes|pieces\[\d+\]|piece_digests"),
    "POST /api/v1/peers/{peer_id}/pieces": re.compile(
        r"reports\[\d+\]\.(piece_index|size_bytes|parent_id)"
    ),
    "POST /api/v1/peers/{peer_id}/block": re.compile(r"parent_id"),
    "POST /api/v1/peers/{peer_id}/claims": re.compile(r"claim|release"),
}
# JSON Schema counts 3.0 as an integer; the API, as its document says, does not.
INTEGRAL_FLOAT = "expected an integer, got number"


@pytest.fixture(scope="module")
def scheduler_url() -> Iterator[str]:
    app = create_app(SchedulerConfig(rng_seed=1, token=TOKEN))
    with ThreadedServer(app, name="fuzzed scheduler") as server:
        yield server.url


def _config(
    base_url: str | None = None,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> schemathesis.Config:
    # A fixed seed: a failure in CI reproduces on the next run and on a laptop.
    config = schemathesis.Config(seed=SEED)
    project = config.projects.default
    project.update(headers={"Authorization": f"Bearer {TOKEN}"}, base_url=base_url)
    project.generation.update(modes=list(modes), max_examples=MAX_EXAMPLES)
    # positive_data_acceptance: replaced by accepts_valid_requests, which knows the
    # documented cross-field rules. ensure_resource_availability (ST302) takes a 404 after
    # a successful POST /api/v1/peers for a lost resource unless a DELETE came between; but
    # POST /api/v1/peers/{peer_id}/failed removes the peer too, as documented, and the state
    # machine follows the registration's links after it.
    project.checks.update(
        excluded_check_names=["positive_data_acceptance", "ensure_resource_availability"]
    )
    return config


@pytest.fixture(scope="module")
def api_schema(scheduler_url: str) -> OpenApiSchema:
    """The document as the scheduler serves it (to anyone: no token needed).

    Schema-valid requests only: the stateless test sends the invalid ones, and a sequence
    of calls gets furthest when each call can succeed.
    """
    return schemathesis.openapi.from_url(
        f"{scheduler_url}/api/v1/openapi.json",
        config=_config(scheduler_url, modes=(GenerationMode.POSITIVE,)),
    )


def _json(response: Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def accepts_valid_requests(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A schema-valid request is served, or refused only for a documented reason."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in (401, 404, 409):
        return None
    answer = _json(response)
    if status == 400 and isinstance(answer, dict):
        field, error = answer.get("field", ""), answer.get("error", "")
        rule = CROSS_FIELD_RULES.get(case.operation.label)
        if (rule is not None and rule.fullmatch(field)) or error.endswith(INTEGRAL_FLOAT):
            return None
    raise AssertionError(
        f"{case.operation.label}: a schema-valid request got {status} {response.text[:300]}"
    )


def refusals_name_their_field(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every refusal is JSON ``{error, field?}``; a refused body names the field to blame."""
    status = response.status_code
    if status < 400:
        return None
    answer = _json(response)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str), (
        f"{case.operation.label}: {status} without a JSON error: {response.text[:300]}"
    )
    if status in (400, 413, 415):
        field = answer.get("field")
        assert isinstance(field, str) and field, f"{status} names no field: {answer}"
        assert field in answer["error"] or field == "body", f"message omits {field}: {answer}"
    return None


CHECKS = [accepts_valid_requests, refusals_name_their_field]
# Parametrizing needs the document when the module is collected, before any server runs,
# so it is taken from the code; the first test checks it is the one the scheduler serves.
# (schemathesis.pytest.from_fixture would load it from the server, but 4.32 does not run
# under pytest 9.)
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT)), config=_config())


def test_the_fuzzed_document_is_the_served_one(api_schema: OpenApiSchema) -> None:
    assert api_schema.raw_schema == schema.raw_schema


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_survives_fuzzing(case: Case, scheduler_url: str) -> None:
    case.call_and_validate(base_url=scheduler_url, additional_checks=CHECKS)


def test_linked_calls_survive_fuzzing(api_schema: OpenApiSchema) -> None:
    """Sequences along the document's links: requests that reach hosts and peers that exist."""
    # Not origin-pieces: with shares off (the default, as here) it answers every peer
    # with no pieces, so it leads nowhere. As one more inferred link it changed the
    # sequences, and in full runs of the suite (not alone, not with this directory) they
    # stopped with FlakyStrategyDefinition: the machine's scheduler keeps its state from
    # one sequence to the next, so a sequence Hypothesis builds on an earlier one can
    # meet other answers. The stateless test above fuzzes it.
    base = api_schema.exclude(operation_id="takeOriginPieces").as_state_machine()
    reached: set[tuple[str, int]] = set()

    class Machine(base):  # type: ignore[misc, valid-type]
        def validate_response(
            self,
            response: Response,
            case: Case,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            reached.add((case.operation.label, response.status_code))
            super().validate_response(response, case, additional_checks=CHECKS, **kwargs)

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
    )
    # The links must lead somewhere: hosts and peers created, then used, not only 404s.
    succeeded = {label for label, status in reached if status == 200}
    reached_text = "; ".join(f"{label} {status}" for label, status in sorted(reached))
    assert {"POST /api/v1/hosts", "POST /api/v1/peers"} <= succeeded, reached_text
    # Which per-peer calls a run reaches with a 200 varies with the tests that ran before
    # (schemathesis keeps state across runs in one process), so it is not asserted; the
    # checks above hold for every call that was made.
