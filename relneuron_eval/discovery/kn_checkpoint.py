"""Knowledge-neuron checkpoints: one fact's stored result, sharding and resumable runs.

Runs are sharded by fact (``rank::world_size``) and checkpointed per fact (one atomic
``.npz`` per fact, never pickle) under a ``run.json`` that records the model and the
``IGConfig``; a fact file carries a key of the fact and that record, so stale or damaged
files are computed again and a merge only reads current ones.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.architectures import model_card, model_shape
from relneuron_eval.discovery.ig_kernels import PromptAttribution, prompt_attributions
from relneuron_eval.discovery.kn_config import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DEFAULT_IG,
    METHOD_NAME,
    IGConfig,
    KnowledgeFact,
    _is_int,
    encode,
    validate_facts,
    validate_ig,
)
from relneuron_eval.errors import RelNeuronError


@dataclass
class FactResult:
    """What the checkpoint keeps of one fact: enough to select at any threshold >= stored."""

    fact_id: str
    relation: str
    fingerprint: str
    layers: list[int]
    intermediate_size: int
    units: np.ndarray  # int64 flat ids layer * intermediate_size + index, sorted
    attr: np.ndarray  # float32 [n_prompts, len(units)]
    max_attr: np.ndarray  # float32 [n_prompts]
    prob: np.ndarray  # float32 [n_prompts], clean P(y*)
    methods: list[str] = field(default_factory=list)
    store_fraction: float | None = None

    @classmethod
    def from_prompts(
        cls,
        fact: KnowledgeFact,
        parts: Sequence[PromptAttribution],
        intermediate_size: int,
        store_fraction: float | None,
        fingerprint: str,
    ) -> FactResult:
        layers = parts[0].layers
        full = np.stack([p.attr for p in parts]).reshape(len(parts), -1)  # [P, nL * I]
        flat_ids = (
            np.asarray(layers, dtype=np.int64)[:, None] * intermediate_size
            + np.arange(intermediate_size, dtype=np.int64)[None, :]
        ).reshape(-1)
        max_attr = full.max(axis=1).astype(np.float32)
        if store_fraction is None:
            keep = np.ones(full.shape[1], dtype=bool)
        else:
            keep = ((full >= store_fraction * max_attr[:, None]) & (max_attr[:, None] > 0)).any(0)
        order = np.argsort(flat_ids[keep], kind="stable")
        return cls(
            fact_id=fact.fact_id,
            relation=fact.relation,
            fingerprint=fingerprint,
            layers=list(layers),
            intermediate_size=intermediate_size,
            units=flat_ids[keep][order],
            attr=np.ascontiguousarray(full[:, keep][:, order], dtype=np.float32),
            max_attr=max_attr,
            prob=np.asarray([p.prob for p in parts], dtype=np.float32),
            methods=[p.method for p in parts],
            store_fraction=store_fraction,
        )

    def save(self, path: Path) -> None:
        meta = {
            "fact_id": self.fact_id,
            "relation": self.relation,
            "fingerprint": self.fingerprint,
            "layers": self.layers,
            "intermediate_size": self.intermediate_size,
            "methods": self.methods,
            "store_fraction": self.store_fraction,
        }
        with atomic_write(path, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                units=self.units,
                attr=self.attr,
                max_attr=self.max_attr,
                prob=self.prob,
            )

    @classmethod
    def load(cls, path: Path) -> FactResult:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in ("units", "attr", "max_attr", "prob")}
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise RelNeuronError(f"unreadable checkpoint file ({exc})", path=path) from None
        return cls(**meta, **arrays)


def fact_attributions(
    model: Any, tokenizer: Any, fact: KnowledgeFact, config: IGConfig, fingerprint: str = ""
) -> FactResult:
    """Attributions of every prompt of one fact, reduced to what selection needs."""
    parts = []
    for prompt in fact.prompts:
        prompt_ids, answer_ids = encode(tokenizer, prompt, fact.answer, config)
        parts.append(prompt_attributions(model, prompt_ids, answer_ids, config))
    size = model_shape(model).intermediate_size
    return FactResult.from_prompts(
        fact, parts, size, config.store_fraction, fingerprint or fact.fingerprint()
    )


# ======================================================================= checkpoints
def _fact_path(root: Path, fact_id: str) -> Path:
    return root / "facts" / f"{hashlib.sha256(fact_id.encode()).hexdigest()[:24]}.npz"


def _run_meta(model: Any, config: IGConfig, model_id: str | None) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_card(model, model_id),
        "ig": config.as_dict(),
    }


def _open_checkpoint(root: Path, meta: dict[str, Any]) -> None:
    """Check (or write) ``run.json``; an unreadable one is rewritten, as fact files carry
    a key derived from it and stale ones are simply computed again."""
    from relneuron_eval.discovery.activations import notice_line, read_json_object

    path = root / "run.json"
    old = read_json_object(path) if path.exists() else None
    if path.exists() and old is None:
        notice_line(f"checkpoint {path} is unreadable; writing it again")
    elif old is not None:
        if old != meta:
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise RelNeuronError(
                f"checkpoint folder was made with other settings ({', '.join(diff)} differ)",
                path=root,
                hint="use another checkpoint folder, or delete this one to start over",
            )
        return
    with atomic_write(path) as handle:
        handle.write(json.dumps(meta, indent=1, sort_keys=True))


def _fact_key(fact: KnowledgeFact, meta: dict[str, Any]) -> str:
    text = fact.fingerprint() + json.dumps(meta, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_done(root: Path, fact: KnowledgeFact, meta: dict[str, Any]) -> bool:
    """A current result exists (an unreadable or stale file is redone, damage with a notice)."""
    from relneuron_eval.discovery.activations import notice_line

    path = _fact_path(root, fact.fact_id)
    if not path.exists():
        return False
    try:
        return FactResult.load(path).fingerprint == _fact_key(fact, meta)
    except RelNeuronError:
        notice_line(f"checkpoint {path} ({fact.fact_id}) is damaged; computing it again")
        return False


def shard(facts: Sequence[KnowledgeFact], rank: int, world_size: int) -> list[KnowledgeFact]:
    """This process's facts: every ``world_size``-th, starting at ``rank``."""
    if not (_is_int(world_size) and world_size >= 1 and _is_int(rank) and 0 <= rank < world_size):
        raise RelNeuronError(f"bad rank/world_size {rank}/{world_size}")
    return list(facts[rank::world_size])


@dataclass
class ShardReport:
    computed: int
    skipped: int


def compute_shard(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    config: IGConfig = DEFAULT_IG,
    *,
    rank: int = 0,
    world_size: int = 1,
    model_id: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> ShardReport:
    """Attribute this rank's facts into ``checkpoint``; facts already there are skipped.

    ``stop_after`` simulates an interruption after that many facts (tests).
    """
    from tqdm.auto import tqdm

    validate_facts(facts)
    validate_ig(config, model_shape(model).num_layers)
    mine = shard(facts, rank, world_size)
    root = Path(checkpoint)
    meta = _run_meta(model, config, model_id)
    _open_checkpoint(root, meta)
    todo = [fact for fact in mine if not _is_done(root, fact, meta)]
    done = 0
    bar = tqdm(
        todo,
        desc=f"{METHOD_NAME}[{rank}]" if world_size > 1 else METHOD_NAME,
        unit="fact",
        disable=not progress,
    )
    for fact in bar:
        if stop_after is not None and done >= stop_after:
            raise KeyboardInterrupt("simulated interruption")
        result = fact_attributions(model, tokenizer, fact, config, _fact_key(fact, meta))
        result.save(_fact_path(root, fact.fact_id))
        done += 1
    return ShardReport(computed=done, skipped=len(mine) - len(todo))


def load_results(
    facts: Sequence[KnowledgeFact], checkpoint: str | Path
) -> tuple[dict[str, Any], list[FactResult]]:
    """The run's metadata and every fact's result; missing or stale facts are an error."""
    root = Path(checkpoint)
    from relneuron_eval.discovery.activations import read_json_object

    meta = read_json_object(root / "run.json")
    if meta is None:
        raise RelNeuronError(
            "not a knowledge-neuron checkpoint (no readable run.json)",
            path=root,
            hint="run the attribution step again (it resumes) before merging",
        )
    results, missing = [], []
    for fact in facts:
        path = _fact_path(root, fact.fact_id)
        result = FactResult.load(path) if path.exists() else None
        if result is None or result.fingerprint != _fact_key(fact, meta):
            missing.append(fact.fact_id)
        else:
            results.append(result)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise RelNeuronError(
            f"{len(missing)} of {len(facts)} facts have no (current) result: {shown}",
            path=root,
            hint="run the attribution step again (it resumes) before merging",
        )
    return meta, results
