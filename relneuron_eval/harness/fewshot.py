"""Few-shot demos that depend on the relation and the seed only (lm-eval ``fewshot_config``).

lm-eval's default sampler draws each document's demos from one random stream in the
order the documents are built, so a document's prompt changes with the number of
processes (each rank builds its own shard; EleutherAI/lm-evaluation-harness#1308), with
``--samples`` and with anything else that changes which documents come first.

``RelationSampler`` instead fixes, once per task, a seeded order of the few-shot pool and
gives every document the first ``n`` demos of it. The seed is lm-eval's few-shot seed
(``--seed``, default 1234) plus the relation the pool belongs to, so

- a document's prompt is byte-identical at any process count, ``--limit``, ``--samples``
  and document order;
- every document of a relation shares the same demos, hence the same prompt prefix
  (computable once per relation), and the generation and multiple-choice tasks of a
  relation show the same demo facts when their pools agree;
- ``n`` demos are the first ``n`` of ``n + 1``.

The task YAMLs reference the class with ``sampler: !function
relneuron_eval.harness.fewshot.RelationSampler`` (lm-eval accepts a ``ContextSampler`` subclass
there), so no registration in lm-eval is needed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from lm_eval.api.samplers import ContextSampler

from relneuron_eval.errors import RelNeuronError

DEFAULT_SEED = 1234  # lm-eval's default few-shot seed, used when none is set


def doc_key(doc: dict[str, Any]) -> str:
    """A document's identity, independent of its position: fact id, chain id or content."""
    for field in ("fact_id", "chain_id"):
        if doc.get(field):
            return str(doc[field])
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def relation_key(pool: Sequence[dict[str, Any]]) -> str:
    """The pool's relation(s), or its chains' two-hop pairs; not the language, so that a
    relation's probes in every language draw the same demo facts where their pools agree."""
    return ",".join(sorted({str(d.get("relation") or d.get("pair") or "") for d in pool}))


def pool_label(pool: Sequence[dict[str, Any]]) -> str:
    """The relation key plus the language(s), for messages."""
    langs = {str(d["lang"]) for d in pool if d.get("lang") not in (None, "en")}
    key = relation_key(pool)
    return f"{key} ({','.join(sorted(langs))})" if langs else key


def seeded_order(pool: Sequence[dict[str, Any]], seed: int | str) -> list[dict[str, Any]]:
    """The pool sorted by identity, then shuffled by ``seed`` and the pool's relation."""
    ordered = sorted(pool, key=doc_key)
    random.Random(f"relfacts-fewshot:{seed}:{relation_key(ordered)}").shuffle(ordered)
    return ordered


class RelationSampler(ContextSampler):
    """Same demos for every document of a relation, whatever the rank, order or limit."""

    def __init__(
        self,
        df: Sequence[dict[str, Any]] | None = None,
        *,
        rnd: int | None = None,
        fewshot_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(df, rnd=rnd, fewshot_indices=fewshot_indices, **kwargs)
        self.seed = DEFAULT_SEED if rnd is None else rnd
        self._order: list[dict[str, Any]] | None = None

    def set_rnd(self, rnd: int | None) -> RelationSampler:
        super().set_rnd(rnd)
        self.seed = DEFAULT_SEED if rnd is None else rnd
        self._order = None
        return self

    def replace_df(self, df: Sequence[dict[str, Any]]) -> RelationSampler:
        super().replace_df(df)
        self._order = None
        return self

    def sample(
        self,
        n: int,
        eval_doc: dict[str, Any] | None = None,
        df: Sequence[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """The first ``n`` demos of the seeded order (skipping ``eval_doc`` if it is there)."""
        if n <= 0:
            return []
        if df:
            self.replace_df(df)
        if self._order is None:
            self._order = seeded_order(self.fewshot_docs(), self.seed)
        pool = self._order
        if eval_doc is not None:
            pool = [d for d in pool if d != eval_doc]
        if len(pool) < n:
            raise RelNeuronError(
                f"{n} few-shot demos asked for, the few-shot pool of "
                f"{pool_label(self._order) or 'this task'} has {len(pool)}",
                hint="lower --num_fewshot",
            )
        return list(pool[:n])
