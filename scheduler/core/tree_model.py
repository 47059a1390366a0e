"""A regression tree ensemble as plain arrays: what a trained model is when it is served.

Training (``scheduler.learning.train``) fits scikit-learn's
``HistGradientBoostingRegressor`` and exports its trees into the JSON document this module
reads. Serving needs neither scikit-learn nor pickle:

- **Safe to load.** A model file is data: numbers and names, checked here (indices in
  range, children after their parent so every walk ends, finite numbers). A hostile file
  can at worst score badly; it cannot run code, unlike a pickle.
- **Fast.** scikit-learn's ``predict`` validates its input and starts a thread pool on
  every call, some 100-300 microseconds for 15 rows. Here all trees of all rows walk down
  together, one numpy step per tree level: tens of microseconds for a decision.

Prediction of one row: ``baseline + sum over trees of the value of the leaf the row
reaches``, where a node sends a row left when ``x[feature] <= threshold`` (a missing
value, NaN, goes where ``missing_left`` says), exactly as scikit-learn's predictor does.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

MODEL_FORMAT = "starling-tree-ensemble"
MODEL_FORMAT_VERSION = 1
# A served model stays small: a bigger file is a mistake or an attack on the loader.
MAX_NODES = 200_000


class ModelFormatError(ValueError):
    """The document is not a tree ensemble this version can serve."""


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """All trees' nodes in flat arrays; leaves point at themselves."""

    feature_version: str
    feature_names: tuple[str, ...]
    target: str
    baseline: float
    roots: np.ndarray  # (trees,) node index of each root
    feature: np.ndarray  # (nodes,) column tested; 0 at leaves
    threshold: np.ndarray  # (nodes,) go left when x <= threshold; +inf at leaves
    missing_left: np.ndarray  # (nodes,) bool
    left: np.ndarray  # (nodes,) node index; itself at leaves
    right: np.ndarray
    value: np.ndarray  # (nodes,) leaf values; 0 inside
    depth: int  # longest root-to-leaf path
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # A short hash of the trees: names the model in logs and in the model_info metric.
    version: str = ""

    @property
    def tree_count(self) -> int:
        return len(self.roots)

    @property
    def node_count(self) -> int:
        return len(self.value)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One prediction per row of ``features`` (rows x ``len(feature_names)``)."""
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features, got shape {features.shape}"
            )
        rows = features.shape[0]
        if rows == 0:
            return np.zeros(0)
        # Row-major offsets into the flattened rows, and each node's two successors side
        # by side ([right, left]), so one step is two gathers and no branch: the next
        # node is successors[2 x node + went_left].
        flat = np.ascontiguousarray(features, dtype=np.float64).ravel()
        offsets = (np.arange(rows) * features.shape[1])[:, None]
        successors = self._successors
        any_missing = bool(np.isnan(flat).any())
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for _ in range(self.depth):
            x = flat[offsets + self.feature[node]]
            went_left = x <= self.threshold[node]
            if any_missing:
                went_left = np.where(np.isnan(x), self.missing_left[node], went_left)
            node = successors[2 * node + went_left]
        result: np.ndarray = self.baseline + self.value[node].sum(axis=1)
        return result

    @cached_property
    def _successors(self) -> np.ndarray:
        pairs = np.empty(2 * len(self.left), dtype=np.intp)
        pairs[0::2] = self.right
        pairs[1::2] = self.left
        return pairs

    def to_json(self) -> dict[str, Any]:
        """The document ``from_json`` reads: one entry per tree, local node indices."""
        trees = []
        for tree, root in enumerate(self.roots):
            end = self.roots[tree + 1] if tree + 1 < len(self.roots) else len(self.value)
            span = range(int(root), int(end))
            leaf = [bool(self.left[i] == i) for i in span]
            trees.append(
                {
                    "feature": [int(self.feature[i]) for i in span],
                    "threshold": [
                        0.0 if is_leaf else float(self.threshold[i])
                        for i, is_leaf in zip(span, leaf, strict=True)
                    ],
                    "missing_left": [bool(self.missing_left[i]) for i in span],
                    "left": [
                        -1 if is_leaf else int(self.left[i] - root)
                        for i, is_leaf in zip(span, leaf, strict=True)
                    ],
                    "right": [
                        -1 if is_leaf else int(self.right[i] - root)
                        for i, is_leaf in zip(span, leaf, strict=True)
                    ],
                    "value": [float(self.value[i]) for i in span],
                }
            )
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "feature_version": self.feature_version,
            "feature_names": list(self.feature_names),
            "target": self.target,
            "baseline": self.baseline,
            "trees": trees,
            "metadata": dict(self.metadata),
        }


def from_json(document: Any) -> TreeEnsemble:
    """Check a parsed model document and build the ensemble; ``ModelFormatError`` if bad."""
    if not isinstance(document, dict):
        raise ModelFormatError("a model document is a JSON object")
    if document.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"format: expected {MODEL_FORMAT!r}")
    if document.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"format_version {document.get('format_version')!r}: this scheduler reads "
            f"{MODEL_FORMAT_VERSION}"
        )
    feature_version = _text(document, "feature_version")
    target = _text(document, "target")
    names = document.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFormatError("feature_names: a non-empty list of names")
    baseline = _finite(document.get("baseline"), "baseline")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFormatError("metadata: expected an object")
    trees = document.get("trees")
    if not isinstance(trees, list) or not trees:
        raise ModelFormatError("trees: a non-empty list")
    columns: dict[str, list[Any]] = {
        k: [] for k in ("feature", "threshold", "missing_left", "left", "right", "value")
    }
    roots: list[int] = []
    depth = 0
    for number, tree in enumerate(trees):
        offset = len(columns["value"])
        roots.append(offset)
        depth = max(depth, _add_tree(tree, number, offset, len(names), columns))
        if len(columns["value"]) > MAX_NODES:
            raise ModelFormatError(f"more than {MAX_NODES} nodes")
    canonical = json.dumps([baseline, trees], sort_keys=True, separators=(",", ":"))
    return TreeEnsemble(
        feature_version=feature_version,
        feature_names=tuple(names),
        target=target,
        baseline=baseline,
        roots=np.array(roots, dtype=np.intp),
        feature=np.array(columns["feature"], dtype=np.intp),
        threshold=np.array(columns["threshold"], dtype=np.float64),
        missing_left=np.array(columns["missing_left"], dtype=bool),
        left=np.array(columns["left"], dtype=np.intp),
        right=np.array(columns["right"], dtype=np.intp),
        value=np.array(columns["value"], dtype=np.float64),
        depth=depth,
        metadata=metadata,
        version=hashlib.sha256(canonical.encode()).hexdigest()[:12],
    )


def _add_tree(
    tree: Any, number: int, offset: int, feature_count: int, columns: dict[str, list[Any]]
) -> int:
    """Append one tree's nodes (global indices); returns its depth."""
    where = f"trees[{number}]"
    if not isinstance(tree, dict):
        raise ModelFormatError(f"{where}: expected an object")
    lists = {}
    for key in columns:
        value = tree.get(key)
        if not isinstance(value, list):
            raise ModelFormatError(f"{where}.{key}: expected a list")
        lists[key] = value
    size = len(lists["value"])
    if size == 0 or any(len(v) != size for v in lists.values()):
        raise ModelFormatError(f"{where}: node lists must be non-empty and of equal length")
    node_depth = [0] * size
    for i in range(size):
        left, right = lists["left"][i], lists["right"][i]
        value = _finite(lists["value"][i], f"{where}.value[{i}]")
        if left == -1 and right == -1:
            columns["feature"].append(0)
            columns["threshold"].append(math.inf)
            columns["missing_left"].append(True)
            columns["left"].append(offset + i)
            columns["right"].append(offset + i)
            columns["value"].append(value)
            continue
        feature = lists["feature"][i]
        # Children come after their parent: every walk goes forward and ends.
        for child in (left, right):
            if not (isinstance(child, int) and i < child < size):
                raise ModelFormatError(f"{where}: node {i} has a bad child {child!r}")
            node_depth[child] = node_depth[i] + 1
        if not (isinstance(feature, int) and 0 <= feature < feature_count):
            raise ModelFormatError(f"{where}.feature[{i}]: no such feature {feature!r}")
        columns["feature"].append(feature)
        columns["threshold"].append(_finite(lists["threshold"][i], f"{where}.threshold[{i}]"))
        columns["missing_left"].append(bool(lists["missing_left"][i]))
        columns["left"].append(offset + left)
        columns["right"].append(offset + right)
        columns["value"].append(0.0)
    return max(node_depth)


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise ModelFormatError(f"{key}: expected a non-empty string")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelFormatError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def feature_columns_match(model: TreeEnsemble, names: Sequence[str]) -> bool:
    return tuple(names) == model.feature_names
