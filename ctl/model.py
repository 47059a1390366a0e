"""``p2pctl model train|info``: train the learned evaluator's model from transfer records.

``train`` reads every record file under ``--records`` (the scheduler's records directory,
or ``p2psim --records`` output), holds out whole clusters, fits the model and writes it
(with its metrics and a summary of the data) to ``--out`` in one piece, so a scheduler
watching that path hot-reloads it. With ``--current MODEL`` the new model is written only
if it beats the current one on the same held-out records (lower log-throughput error),
so a scheduled retrain never replaces a better model with a worse one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from scheduler.core.learned import ModelMismatchError, check_model
from scheduler.learning.artifact import ModelFileError, load_model, save_model
from scheduler.learning.dataset import read_records
from scheduler.learning.train import TrainingError, evaluate, split_clusters, train


def add_model_command(commands: Any) -> None:
    model = commands.add_parser(
        "model",
        help="train and inspect the learned evaluator's model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    train_parser = actions.add_parser("train", help="train a model from transfer records")
    train_parser.add_argument("--records", required=True, type=Path, metavar="DIR")
    train_parser.add_argument("--out", required=True, type=Path, metavar="MODEL")
    train_parser.add_argument(
        "--current",
        type=Path,
        metavar="MODEL",
        help="write --out only if the new model beats this one on the held-out records",
    )
    train_parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    info = actions.add_parser("info", help="print a model's versions, size and metrics")
    info.add_argument("model", type=Path, metavar="MODEL")


def run_model_command(args: argparse.Namespace) -> int:
    try:
        if args.model_command == "info":
            return _info(args.model)
        return _train(args)
    except (ModelFileError, TrainingError, ModelMismatchError, OSError) as exc:
        print(f"p2pctl model {args.model_command}: {exc}", file=sys.stderr)
        return 1


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
    dataset = read_records(args.records)
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
