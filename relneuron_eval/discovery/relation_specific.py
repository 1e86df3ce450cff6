"""Relation-specific neurons (Liu et al. 2025): rank units by average precision.

For relation r, positives are r's discovery prompts the model answers correctly and
negatives are ``ratio`` times as many prompts drawn (seeded) from the other relations.
A unit's score on a prompt is its token-mean output; its expertise for r is the AP of
those scores against the labels. The top-k units per relation are kept.

Memory is bounded by one layer of the activation store plus one sorted chunk of units,
so the paper's 835k-unit setting fits easily in a few GB (see tests/benchmarks).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from relneuron_eval.core.neuron_set import Neuron, NeuronSet
from relneuron_eval.discovery.activations import ActivationStore
from relneuron_eval.discovery.ap import SortedBlock
from relneuron_eval.discovery.correct import CRITERIA, check_criterion
from relneuron_eval.errors import RelNeuronError

log = logging.getLogger(__name__)


@dataclass
class Labelling:
    """Rows of the store used for one relation, and which of them are positive."""

    relation: str
    rows: np.ndarray  # sorted prompt indices (positives and negatives)
    positive: np.ndarray  # bool, aligned with rows


TOO_FEW_HINT = (
    "options that help: --fewshot N (few-shot demos, as the tasks use), a lower "
    "--min-positives, --skip-unscorable (leave these relations out), more facts per relation "
    "(--max-facts, or a larger discovery split)"
)


def _too_few(rel: str, positives: int, prompts: int, min_positives: int) -> str:
    return (
        f"{rel}: {positives} of {prompts} discovery prompts answered correctly, "
        f"{min_positives} needed"
    )


def _report_problems(
    problems: list[str], any_scorable: bool, skip_unscorable: bool, hint: str | None, warn: bool
) -> None:
    """Raise for unscorable relations, or (``skip_unscorable``) warn and go on."""
    if not problems:
        return
    if skip_unscorable and any_scorable:
        if warn:
            for problem in problems:
                log.warning("skipping %s", problem)
            log.warning(
                "%d relation(s) skipped before the activation pass; to keep them, %s",
                len(problems),
                hint or TOO_FEW_HINT,
            )
        return
    raise RelNeuronError(
        "too few correctly answered discovery prompts: " + "; ".join(problems),
        hint=hint or TOO_FEW_HINT,
    )


def make_labellings(
    prompt_relations: Sequence[str],
    correct: Sequence[bool],
    relations: Sequence[str],
    *,
    ratio: int = 4,
    seed: int = 0,
    min_positives: int = 10,
    skip_unscorable: bool = False,
    hint: str | None = None,
    warn: bool = True,
) -> dict[str, Labelling]:
    """Positives and seeded negatives per relation; too few positives is an error
    (or, with ``skip_unscorable``, the relation is left out with a warning, unless
    ``warn`` is False: the answers-only pre-check has said so already).

    Negatives are drawn from all discovery prompts of the other relations (correct or
    not), with a generator seeded by (seed, relation) so the draw for one relation does
    not depend on which other relations are in the run.
    """
    prompt_relations = list(prompt_relations)
    correct = np.asarray(correct, dtype=bool)
    out: dict[str, Labelling] = {}
    problems = []
    for rel in relations:
        mine = [i for i, r in enumerate(prompt_relations) if r == rel]
        pos = [i for i in mine if correct[i]]
        if len(pos) < min_positives:
            problems.append(_too_few(rel, len(pos), len(mine), min_positives))
            continue
        others = [i for i, r in enumerate(prompt_relations) if r != rel]
        if not others:
            problems.append(f"{rel}: no prompts of other relations to draw negatives from")
            continue
        rng = random.Random(f"relneuron-negatives:{seed}:{rel}")
        neg = rng.sample(others, min(len(others), ratio * len(pos)))
        rows = np.array(sorted(pos + neg))
        out[rel] = Labelling(rel, rows, np.isin(rows, pos))
    _report_problems(problems, bool(out), skip_unscorable, hint, warn=warn)
    return out


def check_answerable(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    store: ActivationStore,
    config: RelationSpecificConfig,
    *,
    hint: str | None = None,
    progress: bool = True,
    warn: bool = True,
) -> None:
    """Fail before the activation pass when a relation cannot reach ``min_positives``;
    with ``skip_unscorable``, say here which relations are skipped and what would keep
    them (before: only after the activation pass, 14 min on a user's 7 relations).

    Greedy answers only (no activations), relation by relation, stopping as soon as a
    relation has enough correct ones; answers already in a resumed store count. The
    activation pass computes the same answers again for the labels it uses.
    """
    from tqdm.auto import tqdm

    from relneuron_eval.discovery.activations import answers_correct

    done = np.asarray(store.done()) != 0
    correct = np.asarray(store.correct()).astype(bool) & done
    relations = list(dict.fromkeys(p.relation for p in prompts))
    problems = []
    for rel in tqdm(relations, desc="checking answers", disable=not progress, unit="relation"):
        mine = [i for i, p in enumerate(prompts) if p.relation == rel]
        todo = [i for i in mine if not done[i]]
        for start in range(0, len(todo), config.batch_size):
            if correct[mine].sum() >= config.min_positives:
                break
            batch = todo[start : start + config.batch_size]
            correct[batch] = answers_correct(
                model,
                tokenizer,
                [prompts[i].text for i in batch],
                [prompts[i].answers for i in batch],
                criterion=config.correct,
            )
        if correct[mine].sum() < config.min_positives:
            problems.append(
                _too_few(rel, int(correct[mine].sum()), len(mine), config.min_positives)
            )
    scorable = len(problems) < len(relations)
    _report_problems(problems, scorable, config.skip_unscorable, hint, warn=warn)


class TopK:
    """Running top-k of (score, global unit id); ties keep the lower unit id."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = torch.empty(0)
        self.ids = torch.empty(0, dtype=torch.long)

    def push(self, scores: torch.Tensor, ids: torch.Tensor) -> None:
        s = torch.cat([self.scores, scores.float()])
        i = torch.cat([self.ids, ids])
        # sort by id first so a stable score sort breaks ties by id
        by_id = torch.argsort(i, stable=True)
        s, i = s[by_id], i[by_id]
        order = torch.sort(s, descending=True, stable=True).indices[: self.k]
        self.scores, self.ids = s[order], i[order]


def rank_units(
    store: ActivationStore,
    labellings: dict[str, Labelling],
    top_k: int,
    *,
    unit_chunk: int = 4096,
    progress: bool = True,
) -> dict[str, TopK]:
    """AP of every unit for every relation, keeping the top-k per relation."""
    from tqdm.auto import tqdm

    layout = store.layout
    upl = layout.units_per_layer
    best = {rel: TopK(top_k) for rel in labellings}
    for layer in tqdm(range(layout.num_layers), desc="average precision", disable=not progress):
        block = store.read_layer(layer)
        for rel, lab in labellings.items():
            sub = np.asarray(block[lab.rows])  # [m, units_per_layer], copies only these rows
            for start in range(0, upl, unit_chunk):
                chunk = SortedBlock(sub[:, start : start + unit_chunk].T, units_first=True)
                ap = torch.from_numpy(chunk.average_precision(lab.positive))
                ids = torch.arange(start, start + ap.shape[0]) + layer * upl
                best[rel].push(ap, ids)
            del sub
        del block
    return best


def to_neurons(best: dict[str, TopK], store: ActivationStore) -> list[Neuron]:
    """Neurons per relation in descending score, named by (site, layer, index)."""
    layout = store.layout
    upl = layout.units_per_layer
    neurons = []
    for rel, top in best.items():
        for score, uid in zip(top.scores.tolist(), top.ids.tolist(), strict=True):
            layer, col = divmod(uid, upl)
            site, index = layout.unit_of(col)
            neurons.append(Neuron(rel, site, layer, index, round(float(score), 6)))
    return neurons


# ====================================================================== the driver
PAPER_SITES = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
METHOD_NAME = "relation-specific"


@dataclass(frozen=True)
class RelationSpecificConfig:
    """Everything that changes the result, as recorded in the set's header.

    Only the fields in ``ACTIVATION_KEYS`` (with the model, the prompts and their
    accepted answers) change the stored activations and ``correct`` flags, so only they
    key the checkpoint.
    """

    top_k: int = 3000
    sites: tuple[str, ...] = PAPER_SITES
    ratio: int = 4
    seed: int = 0
    fewshot: int | dict[str, int] = 0  # demos per prompt; per relation where they differ
    demos: str = "per-prompt"  # how demos are chosen (data.relation_prompts)
    average_over: str = "query"  # "query": the prompt's last line; "prompt": every token
    min_positives: int = 10
    skip_unscorable: bool = False
    batch_size: int = 16
    store_dtype: str = "float32"
    correct: str = "match"  # when a prompt counts as answered: discovery.correct.CRITERIA

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "sites": list(self.sites)}


@dataclass
class RelationSummary:
    relation: str
    prompts: int
    correct: int
    positives: int
    negatives: int
    best_ap: float
    kth_ap: float


def validate_config(config: RelationSpecificConfig, total_units: int | None = None) -> None:
    """Every argument error before any model work or file write."""
    from relneuron_eval.core.neuron_set import SITES

    unknown = [s for s in config.sites if s not in SITES]
    if unknown or not config.sites:
        raise RelNeuronError(f"unknown or no site(s) {unknown}", hint=f"sites: {list(SITES)}")
    if config.top_k < 1:
        raise RelNeuronError(f"--top-k must be positive, got {config.top_k}")
    if total_units is not None and config.top_k > total_units:
        raise RelNeuronError(
            f"--top-k {config.top_k} is larger than the {total_units:,} units at the chosen "
            f"sites ({', '.join(config.sites)})",
            hint=f"use --top-k {total_units} or less",
        )
    if config.ratio < 1 or config.min_positives < 1 or config.batch_size < 1:
        raise RelNeuronError("--negatives-ratio, --min-positives and --batch-size must be >= 1")
    counts = config.fewshot.values() if isinstance(config.fewshot, dict) else [config.fewshot]
    if any(n < 0 for n in counts):
        raise RelNeuronError(f"--fewshot must be >= 0, got {config.fewshot}")
    if config.average_over not in ("query", "prompt"):
        raise RelNeuronError(
            f"unknown --average-over {config.average_over!r}", hint="use query or prompt"
        )
    if config.store_dtype not in ("float32", "float16"):
        raise RelNeuronError(f"unknown store dtype {config.store_dtype!r}")
    check_criterion(config.correct)


ACTIVATION_KEYS = ("sites", "average_over", "store_dtype", "correct")


def checkpoint_key(model: Any, card: dict, prompts: list, config: RelationSpecificConfig) -> dict:
    """What the stored activations and answers depend on, and nothing else.

    Not in it: ``top_k``, ``ratio``, ``seed``, ``min_positives`` and ``skip_unscorable``
    (they only act on the stored numbers), ``fewshot``/``demos`` (the prompts' text
    carries them) and ``batch_size``: padding changes only the last bits (on a tiny
    Llama up to 1e-5 in 4-63 % of the stored means, the same answers), so a resume may
    use another; each row records its batch size and the header lists them. Neither is
    the device (not measured here; a checkpoint moved between devices is reused).
    """
    from relneuron_eval.discovery.data import answers_fingerprint, prompts_fingerprint

    return {
        "model": card,
        "weights": weights_fingerprint(model),
        "prompts": prompts_fingerprint(prompts),
        "answers": answers_fingerprint(prompts),
        "config": {k: config.as_dict()[k] for k in ACTIVATION_KEYS},
    }


def weights_fingerprint(model: Any) -> str:
    """Dtype and rounded sum of every parameter: another checkpoint at the same path differs."""
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            total = float(param.sum(dtype=torch.float64))
            digest.update(f"{name}:{param.dtype}:{tuple(param.shape)}:{total:.8e}\n".encode())
    return digest.hexdigest()[:16]


def too_few_hint(config: RelationSpecificConfig, max_facts: int | None) -> str:
    """Every option that can give a relation enough positives, with its current value."""
    more = f"--max-facts, now {max_facts}, or " if max_facts is not None else ""
    skip = "" if config.skip_unscorable else "--skip-unscorable to leave these relations out, "
    lenient = (
        "" if config.correct == "prefix2" else "--correct prefix2 (the first 2 answer tokens), "
    )
    return (
        f"options that help: --fewshot N (few-shot demos; now {config.fewshot}), a lower "
        f"--min-positives (now {config.min_positives}), {lenient}{skip}or more facts per "
        f"relation ({more}a larger discovery split)"
    )


def _open_store(workdir, layout, prompts, meta, config, rank, barrier) -> ActivationStore:
    """Rank 0 opens (verifies, or starts) the store; the others open it after it did."""
    from pathlib import Path

    workdir = Path(workdir)
    if rank == 0:
        store = ActivationStore.open(workdir, layout, len(prompts), meta, dtype=config.store_dtype)
    barrier()
    if rank != 0:
        store = ActivationStore.open(
            workdir, layout, len(prompts), meta, dtype=config.store_dtype, create=False
        )
    return store


def _finished_answers(store: ActivationStore) -> np.ndarray:
    """Every prompt's ``correct`` flag, once all processes have filled the store."""
    missing = int((np.asarray(store.done()) == 0).sum())
    if missing:
        raise RelNeuronError(
            f"{missing} prompts have no activations after all processes finished",
            path=store.root,
            hint="run the same command again to resume",
        )
    return np.asarray(store.correct()).astype(bool)


def find_relation_specific(
    model,
    tokenizer,
    prompts: list,
    workdir,
    out,
    config: RelationSpecificConfig = RelationSpecificConfig(),
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    model_id: str | None = None,
    data: dict | None = None,
    progress: bool = True,
    stop_after: int | None = None,
):
    """Collect this rank's activations, wait for the others, rank and save on rank 0.

    ``prompts`` are ``DiscoveryPrompt`` objects of the discovery split. Returns
    ``(NeuronSet, [RelationSummary])`` on rank 0 and None elsewhere. The work folder
    holds a resumable activation store; it is removed after a successful save. Before
    the activation pass, a cheap answers-only pass stops a run whose relations cannot
    get ``min_positives`` positives.
    """
    import shutil

    from relneuron_eval.core.architectures import model_card, model_shape
    from relneuron_eval.discovery.activations import Layout, collect, query_token_counts

    layout = Layout.for_shape(model_shape(model), config.sites)
    validate_config(config, layout.total_units)
    barrier = barrier or (lambda: None)
    card = model_card(model, model_id)
    texts = [p.text for p in prompts]
    meta = checkpoint_key(model, card, prompts, config)
    store = _open_store(workdir, layout, prompts, meta, config, rank, barrier)
    hint = too_few_hint(config, (data or {}).get("max_facts_per_relation"))
    check_answerable(
        model, tokenizer, prompts, store, config, hint=hint, progress=progress, warn=rank == 0
    )
    average_last = query_token_counts(tokenizer, texts) if config.average_over == "query" else None
    collect(
        model,
        tokenizer,
        store,
        texts,
        [p.answers for p in prompts],
        batch_size=config.batch_size,
        rank=rank,
        world_size=world_size,
        progress=progress,
        stop_after=stop_after,
        average_last=average_last,
        criterion=config.correct,
    )
    barrier()
    if rank != 0:
        return None
    result = _rank_and_save(store, prompts, config, card, meta, data, out, hint, progress)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _rank_and_save(
    store: ActivationStore,
    prompts: list,
    config: RelationSpecificConfig,
    card: dict,
    meta: dict,
    data: dict | None,
    out: Any,
    hint: str,
    progress: bool,
) -> tuple[NeuronSet, list[RelationSummary]]:
    """Rank 0, after every rank's activations are in: label, rank, save; the summaries."""
    correct = _finished_answers(store)
    relations = list(dict.fromkeys(p.relation for p in prompts))
    prompt_relations = [p.relation for p in prompts]
    labellings = make_labellings(
        prompt_relations,
        correct,
        relations,
        ratio=config.ratio,
        seed=config.seed,
        min_positives=config.min_positives,
        skip_unscorable=config.skip_unscorable,
        hint=hint,
        warn=False,  # check_answerable said it before the activation pass
    )
    best = rank_units(store, labellings, config.top_k, progress=progress)
    neuron_set = _neuron_set(
        store, best, card, config, meta, data, skipped=[r for r in relations if r not in labellings]
    )
    store.close()
    neuron_set.save(out)
    return neuron_set, _summaries(prompt_relations, correct, labellings, best)


def _neuron_set(store, best, card, config, meta, data, *, skipped: list[str]):
    """The set with its header: how it was made, including the batch sizes used."""
    from relneuron_eval.core.neuron_set import NeuronSet, make_header

    sizes = Counter(int(b) for b in np.asarray(store.batch_sizes()))
    header = make_header(
        model=card,
        method={
            "name": METHOD_NAME,
            "paper": "Liu et al. 2025, On Relation-Specific Neurons in Large Language Models",
            "params": {
                **config.as_dict(),
                # prompts per batch size when a resumed run changed --batch-size
                "batch_size": next(iter(sizes))
                if len(sizes) == 1
                else {str(k): v for k, v in sorted(sizes.items())},
                "score": "average precision of the token-mean output vs. labels",
                "correct": config.correct,
                "correct_rule": CRITERIA[config.correct],
            },
            "data": {
                "split": "discovery",
                "templates": "discovery",
                "prompts": store.n_prompts,
                "prompts_fingerprint": meta["prompts"],
                "relations_skipped": skipped,
                **(data or {}),
            },
        },
    )
    return NeuronSet(header, to_neurons(best, store))


def _summaries(prompt_relations, correct, labellings, best) -> list[RelationSummary]:
    """One summary row per relation of the run (skipped ones with zeros)."""
    out = []
    for rel in dict.fromkeys(prompt_relations):
        mine = [i for i, r in enumerate(prompt_relations) if r == rel]
        lab = labellings.get(rel)
        scores = best[rel].scores.tolist() if rel in best else []
        out.append(
            RelationSummary(
                rel,
                len(mine),
                int(correct[mine].sum()),
                int(lab.positive.sum()) if lab else 0,
                int((~lab.positive).sum()) if lab else 0,
                round(scores[0], 4) if scores else 0.0,
                round(scores[-1], 4) if scores else 0.0,
            )
        )
    return out
