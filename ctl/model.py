"""``p2pctl model train|publish|info``: train, publish and inspect the learned evaluator's
model.

``train`` reads transfer records, holds out whole clusters, fits the model and writes it
(with its metrics and a summary of the data) to ``--out`` in one piece, so a scheduler
watching that path hot-reloads it. The records come from every record file under
``--records`` (the scheduler's records directory, or ``p2psim --records`` output), or
from the schedulers' Redis stream (``--redis-url``, or $STARLING_REDIS_URL when
``--records`` is not given; the newest ``--limit`` records). With ``--current MODEL``
the new model is written only if it beats the current one on the same held-out records
(lower log-throughput error), so a retrain never replaces a better model with a worse.

``publish`` checks a model file (a valid model of this scheduler's feature set) and
publishes it: to Redis (``--redis-url``, or $STARLING_REDIS_URL), where every scheduler
replica with that redis_url loads it within its model_reload_s; and/or to a file
(``--to PATH``, written whole), for a scheduler without Redis whose model_path it is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from scheduler.core.learned import ModelMismatchError, check_model
from scheduler.learning.artifact import (
    MODEL_ARTIFACT,
    ModelFileError,
    load_model,
    model_bytes,
    save_model,
)
from scheduler.learning.dataset import Dataset, dataset_from_records, read_records
from scheduler.learning.train import TrainingError, evaluate, split_clusters, train
from scheduler.service.config import ENV_REDIS_URL, SchedulerConfig
from scheduler.service.redis_store import (
    RedisArtifactStore,
    RedisRecordStore,
    StoreUnavailable,
    data_client,
)

DEFAULT_LIMIT = 1_000_000
REDIS_TIMEOUT_S = 10.0


class ModelCommandError(Exception):
    pass


def add_model_command(commands: Any) -> None:
    model = commands.add_parser(
        "model",
        help="train and inspect the learned evaluator's model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    train_parser = actions.add_parser("train", help="train a model from transfer records")
    train_parser.add_argument(
        "--records", type=Path, metavar="DIR", help="read every record file under DIR"
    )
    _redis_options(train_parser, "read the records from the schedulers' Redis stream")
    train_parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"with Redis: the newest N records (default {DEFAULT_LIMIT})",
    )
    train_parser.add_argument("--out", required=True, type=Path, metavar="MODEL")
    train_parser.add_argument(
        "--current",
        type=Path,
        metavar="MODEL",
        help="write --out only if the new model beats this one on the held-out records",
    )
    train_parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    publish = actions.add_parser(
        "publish", help="publish a model to the schedulers (Redis and/or a file)"
    )
    publish.add_argument("model", type=Path, metavar="MODEL")
    _redis_options(publish, "publish to the schedulers' Redis")
    publish.add_argument(
        "--to", type=Path, metavar="PATH", help="also write the model to PATH (model_path)"
    )
    info = actions.add_parser("info", help="print a model's versions, size and metrics")
    info.add_argument("model", type=Path, metavar="MODEL")


def _redis_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"{what}, e.g. redis://redis:6379/0 (default ${ENV_REDIS_URL})",
    )
    parser.add_argument(
        "--redis-key-prefix",
        default=SchedulerConfig.redis_key_prefix,
        metavar="PREFIX",
        help=f"the schedulers' redis_key_prefix (default {SchedulerConfig.redis_key_prefix})",
    )


def run_model_command(args: argparse.Namespace) -> int:
    try:
        if args.model_command == "info":
            return _info(args.model)
        if args.model_command == "publish":
            return _publish(args)
        return _train(args)
    except (
        ModelFileError,
        TrainingError,
        ModelMismatchError,
        ModelCommandError,
        StoreUnavailable,
        OSError,
    ) as exc:
        print(f"p2pctl model {args.model_command}: {exc}", file=sys.stderr)
        return 1


def _redis_url(args: argparse.Namespace) -> str | None:
    url: str | None = args.redis_url or os.environ.get(ENV_REDIS_URL, "").strip() or None
    return url


async def _read_redis(url: str, prefix: str, limit: int) -> list[dict[str, Any]]:
    client = data_client(url, REDIS_TIMEOUT_S)
    try:
        return await RedisRecordStore(client, prefix, max_len=1).read(limit)
    finally:
        await client.aclose()


async def _put_redis(url: str, prefix: str, data: bytes) -> None:
    client = data_client(url, REDIS_TIMEOUT_S)
    try:
        await RedisArtifactStore(client, prefix).put(MODEL_ARTIFACT, data)
    finally:
        await client.aclose()


def _records(args: argparse.Namespace) -> Dataset:
    if args.records is not None and args.redis_url:
        raise ModelCommandError("--records and --redis-url: give one source of records")
    if args.records is not None:
        return read_records(args.records)
    url = _redis_url(args)
    if url is None:
        raise ModelCommandError(
            f"no records: give --records DIR or --redis-url (or ${ENV_REDIS_URL})"
        )
    if args.limit < 1:
        raise ModelCommandError("--limit must be positive")
    records = asyncio.run(_read_redis(url, args.redis_key_prefix, args.limit))
    print(f"{len(records)} records read from Redis ({args.redis_key_prefix}records)")
    return dataset_from_records(records)


def _publish(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    check_model(model)
    url = _redis_url(args)
    if url is None and args.to is None:
        raise ModelCommandError(
            f"nowhere to publish: give --redis-url (or ${ENV_REDIS_URL}) or --to"
        )
    if url is not None:
        asyncio.run(_put_redis(url, args.redis_key_prefix, model_bytes(model)))
        print(
            f"published model {model.version} to Redis "
            f"({args.redis_key_prefix}artifact:{MODEL_ARTIFACT})"
        )
    if args.to is not None:
        save_model(model, args.to)
        print(f"published model {model.version} to {args.to}")
    return 0


def _info(path: Path) -> int:
    model = load_model(path)
    print(
        json.dumps(
            {
                "version": model.version,
                "feature_version": model.feature_version,
                "target": model.target,
                "trees": model.tree_count,
                "nodes": model.node_count,
                "depth": model.depth,
                "metadata": dict(model.metadata),
            },
            indent=2,
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    dataset = _records(args)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = train(dataset, seed=args.seed, trained_at=now)
    held = result.metrics["held_out"]
    print(
        f"{len(dataset)} records from {len(set(dataset.clusters.tolist()))} clusters; "
        f"held out by {result.metrics['split_by']}: {held['records']} records"
    )
    print(
        f"held-out ln-throughput rmse {held['rmse']:.3f} (mean only {held['rmse_mean_only']:.3f}), "
        f"r2 {held['r2']:.3f}; pairwise order accuracy {_share(held['pairwise_accuracy'])} "
        f"(rule scores {_share(held['rule_pairwise_accuracy'])})"
    )
    if args.current is not None and args.current.exists():
        current = load_model(args.current)
        check_model(current)
        held_out, _ = split_clusters(dataset, args.seed)
        theirs = evaluate(current, dataset.subset(held_out))
        print(f"current model {current.version}: held-out rmse {theirs['rmse']:.3f}")
        if not held["rmse"] < theirs["rmse"]:
            print(f"not promoted: {args.out} left as it is")
            return 0
    save_model(result.model, args.out)
    print(
        f"wrote {args.out}: model {result.model.version}, {result.model.tree_count} trees, "
        f"{result.model.node_count} nodes"
    )
    return 0


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
