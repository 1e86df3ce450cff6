"""``relneuron-hf``: lm-eval's ``hf`` model with a neuron intervention applied at run time.

Every ``hf`` (HFLM) argument works unchanged. The extra arguments select neurons from a
neuron-set file and say what to do to them; the intervention is applied around each
request type lm-eval sends (loglikelihood, generation, rolling loglikelihood) and
undone afterwards, so the model object is clean whenever lm-eval is not scoring, and
an exception during evaluation never leaves folded weights or hooks behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM

from relneuron_eval.core.architectures import unwrap
from relneuron_eval.core.embedded import is_embedded, resolve_pretrained
from relneuron_eval.core.interventions import (
    HookState,
    Intervention,
    UnitKey,
    apply_intervention,
    check_model,
    edits_for,
    install_hooks,
    prompt_only,
)
from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.core.spec import SETTING_NAMES, InterventionSpec
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness import context_cache
from relneuron_eval.harness.model_args import check_arguments, check_set_fits, early_config
from relneuron_eval.harness.prefix_cache import PrefixCache, parse_flag

log = logging.getLogger(__name__)


def _base_name(pretrained: Any) -> str:
    """A model's name for variant labels: the string given, or a loaded model's path."""
    if isinstance(pretrained, str):
        return pretrained
    from relneuron_eval.core.embedded import alias_of

    config = getattr(pretrained, "config", None)
    path = getattr(config, "_name_or_path", None)
    if not path:
        return type(pretrained).__name__
    return alias_of(path) or str(path)


class RelNeuronLM(HFLM):
    """HFLM plus the intervention settings of :class:`InterventionSpec` (``neuron_set``,
    ``groups``, ``mode``, ``factor``, ``value``, ``top_k``, ``fraction``, ``layers``,
    ``sites``, ``positions``, ``control``, ``seed``, ``per_doc``, ``strategy``, ``name``)
    ``prefix_cache`` and ``context_cache``. Without ``neuron_set`` it scores exactly as
    ``hf``: ``prefix_cache`` (default on) computes shared few-shot prefixes of generations
    once, with the same answers. ``context_cache`` (default off, opt-in because its
    log-likelihoods equal ``hf``'s only up to float rounding) computes each
    multiple-choice context once for all its choices (see ``context_cache``)."""

    def __init__(
        self,
        pretrained: Any = "smollm2-135m",
        *,
        prefix_cache: Any = True,
        context_cache: Any = False,
        **kwargs: Any,
    ) -> None:
        # Validate everything cheap before the (slow) model load: a typo first (it can
        # make a setting look missing), then the settings, then the set against the config.
        config = early_config(pretrained, kwargs)
        check_arguments([k for k in kwargs if k not in SETTING_NAMES], config)
        spec = InterventionSpec.from_model_args(
            {k: kwargs.pop(k) for k in SETTING_NAMES if k in kwargs}
        )
        self._rn: Intervention | None = None
        self._rn_spec = spec
        self._rn_per_doc: str | None = spec.per_doc
        self._rn_group_sets: dict[str, NeuronSet] = {}
        self._rn_strategy = spec.strategy
        # loglikelihood inputs of this batch's requests -> (last prompt position, group)
        self._rn_rows: dict[tuple[int, ...], tuple[int, int | None]] | None = None
        # per_doc: each request's group row (0: none), then each prompt's, while scoring
        self._rn_doc_groups: list[int] | None = None
        self._rn_prompt_groups: dict[str, int] | None = None
        self._rn_batch_prompts: list[str] = []
        self._rn_state: HookState | None = None
        self._rn_pretrained_arg = pretrained
        self._rn_prefix = PrefixCache(enabled=parse_flag("prefix_cache", prefix_cache))
        self._rn_context_cache = parse_flag("context_cache", context_cache)
        self._rn_context_stats: Counter[str] = Counter()  # requests served from shared contexts
        if not spec.is_base:
            self._build_intervention(pretrained, spec)
            assert self._rn is not None
            check_set_fits(self._rn.selection, config, _base_name(pretrained))
        if is_embedded(pretrained) and kwargs.get("dtype") in (None, "auto"):
            kwargs["dtype"] = "float32"
        super().__init__(pretrained=resolve_pretrained(pretrained), **kwargs)
        self._enable_cpu_data_parallel()
        if self._rn is not None:
            check_model(self.model, self._rn.selection)

    def _build_intervention(self, pretrained: Any, spec: InterventionSpec) -> None:
        """The intervention, its per-document group sets, and its variant name."""
        self._rn = Intervention.from_spec(spec)
        if spec.per_doc:
            # top_k/fraction apply per group, so each group's own units are its part
            # of the selection
            selection = self._rn.selection
            self._rn_group_sets = {g: selection.select([g]) for g in selection.groups()}
            self._rn.description.update(per_doc=spec.per_doc, num_groups=len(self._rn_group_sets))
        self._rn.description["variant"] = spec.label(_base_name(pretrained))

    def _enable_cpu_data_parallel(self) -> None:
        """Shard requests across ``accelerate launch`` processes on CPU machines too.

        HFLM only shards when it counts more than one GPU; on CPU every process would
        evaluate everything. With an accelerator of several CPU processes (gloo), take
        the rank and world size from it, as HFLM does for GPUs.
        """
        accelerator = getattr(self, "accelerator", None)
        if (
            accelerator is not None
            and accelerator.num_processes > 1
            and self._world_size == 1
            and accelerator.device.type == "cpu"
        ):
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes

    # ------------------------------------------------------------- lm-eval API
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._run(super().loglikelihood, requests, disable_tqdm, per_row=True)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._run(super().loglikelihood_rolling, requests, disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._run(self._generate_until, requests, disable_tqdm, per_row=True)

    def _generate_until(self, requests, disable_tqdm: bool = False):
        """HFLM's, with this call's (one intervention state's) shared prompt prefixes.

        per_doc rows: prompts seen with two groups go to separate rounds, so each batch
        row's prompt names its group (see ``tok_batch_encode``).
        """
        groups, self._rn_doc_groups = self._rn_doc_groups, None
        if groups is None:
            with self._rn_prefix.session(self, requests):
                return super().generate_until(requests, disable_tqdm=disable_tqdm)
        results: list[Any] = [None] * len(requests)
        prompts = [request.args[0] for request in requests]
        for indices in _rounds(prompts, groups):
            subset = [requests[i] for i in indices]
            self._rn_prompt_groups = {prompts[i]: groups[i] for i in indices}
            try:
                with self._rn_prefix.session(self, subset):
                    outputs = super().generate_until(subset, disable_tqdm=disable_tqdm)
            finally:
                self._rn_prompt_groups = None
            for i, output in zip(indices, outputs, strict=True):
                results[i] = output
        return results

    def tok_batch_encode(self, strings, *args: Any, **kwargs: Any):
        """HFLM encodes each generation batch's prompts here: remember them (per_doc rows)."""
        self._rn_batch_prompts = list(strings)
        return super().tok_batch_encode(strings, *args, **kwargs)

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        if self._rn is not None:
            info["relneuron"] = dict(self._rn.description)
            # neuron_set_sha256 (in the description) is the file's; this is what was applied:
            # the same units give the same hash however they were selected
            info["relneuron"]["selection_sha256"] = self._rn.selection.units_hash(
                by_group=bool(self._rn_per_doc)
            )
            info["relneuron"]["method"] = self._rn.selection.method
        return info

    # -------------------------------------------------------------- internals
    def _run(self, method: Callable, requests, disable_tqdm: bool, per_row: bool = False):
        if self._rn is None:
            return method(requests, disable_tqdm=disable_tqdm)
        with _finite_logits(self.model, self._rn):
            if self._rn_per_doc:
                return self._run_per_doc(method, requests, disable_tqdm, per_row)
            return self._run_applied(method, requests, disable_tqdm)

    def _run_applied(self, method: Callable, requests, disable_tqdm: bool):
        assert self._rn is not None
        with apply_intervention(self.model, self._rn, strategy=self._rn_strategy) as state:
            self._rn_state = state
            try:
                return method(requests, disable_tqdm=disable_tqdm)
            finally:
                self._rn_state = None

    def _doc_groups(self, requests) -> list[str | None]:
        """Each request's group: its document's ``per_doc`` field, None if no neurons."""
        field = self._rn_per_doc
        groups: list[str | None] = []
        unknown: set[str] = set()
        for request in requests:
            doc = getattr(request, "doc", None) or {}
            if field not in doc:
                raise RelNeuronError(
                    f"per_doc={field!r}: the task's documents have no field {field!r}",
                    hint=f"fields present: {sorted(doc)}",
                )
            group = None if doc[field] is None else str(doc[field])
            if group is not None and group not in self._rn_group_sets:
                unknown.add(group)
                group = None
            groups.append(group)
        if unknown:
            log.warning(
                "per_doc=%s: %d document group(s) have no neurons in the set and run "
                "unmodified, e.g. %s",
                field,
                len(unknown),
                sorted(unknown)[:5],
            )
        return groups

    def _run_per_doc(self, method: Callable, requests, disable_tqdm: bool, per_row: bool):
        """Each document's group's edits: per batch row (one pass) or per group bucket.

        ``per_row``: every group's edits sit in one table per hooked module and each
        batch row picks its group's row, so batches stay full. Otherwise (rolling
        loglikelihood, whose windows HFLM regroups) the requests run in one call per group.
        """
        assert self._rn is not None
        groups = self._doc_groups(requests)
        rn = self._rn
        names = list(self._rn_group_sets)
        edits = {g: edits_for(self._rn_group_sets[g], rn.mode, rn.factor, rn.value) for g in names}
        keys: list[UnitKey] = sorted({k for e in edits.values() for k in e})
        state = HookState(rn.positions)
        handles = install_hooks(self.model, keys, state)
        self._rn_state = state
        try:
            if per_row:
                state.group_edits = [{}] + [edits[g] for g in names]
                row = {g: i for i, g in enumerate(names, start=1)}
                self._rn_doc_groups = [0 if g is None else row[g] for g in groups]
                return method(requests, disable_tqdm=disable_tqdm)
            buckets: dict[str | None, list[int]] = defaultdict(list)
            for i, group in enumerate(groups):
                buckets[group].append(i)
            results: list[Any] = [None] * len(requests)
            for group, indices in buckets.items():
                state.active = {} if group is None else edits[group]
                outputs = method([requests[i] for i in indices], disable_tqdm=disable_tqdm)
                for i, output in zip(indices, outputs, strict=True):
                    results[i] = output
            return results
        finally:
            for handle in handles:
                handle.remove()
            self._rn_state = None
            self._rn_doc_groups = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        groups, self._rn_doc_groups = self._rn_doc_groups, None
        last = self._rn is not None and self._rn.positions == "last"
        if groups is None and not last:
            if not self._rn_context_cache:
                return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
            return context_cache.loglikelihoods(
                self,
                requests,
                lambda rows: super(RelNeuronLM, self)._loglikelihood_tokens(
                    rows, disable_tqdm, override_bs
                ),
                disable_tqdm,
                self._rn_context_stats,
            )
        # HFLM feeds (context + continuation)[:-1], right-padded with zeros. Remember each
        # real input, where its context ends and its group, so _model_call finds them.
        inputs = [tuple((ctx + cont)[-(self.max_length + 1) :][:-1]) for _, ctx, cont in requests]
        results: list[Any] = [None] * len(requests)
        for indices in _rounds(inputs, groups or [0] * len(requests)):
            self._rn_rows = {
                inputs[i]: (
                    max(0, len(inputs[i]) - len(requests[i][2])),
                    groups[i] if groups else None,
                )
                for i in indices
            }
            try:
                subset = [requests[i] for i in indices]
                outputs = super()._loglikelihood_tokens(subset, disable_tqdm, override_bs)
            finally:
                self._rn_rows = None
            for i, output in zip(indices, outputs, strict=True):
                results[i] = output
        return results

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self._prompt_rows(context):
            return self._rn_prefix.generate(
                self,
                self._plain_generate,
                context,
                max_length,
                stop,
                generation_kwargs,
                self._rn_state,
            )

    def _plain_generate(self, context, max_length, stop, **generation_kwargs):
        state = self._rn_state
        if state is None or state.positions != "last":
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        with prompt_only(self.model, state):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    @contextlib.contextmanager
    def _prompt_rows(self, context: torch.Tensor) -> Iterator[None]:
        """per_doc generation: each row's group, from the prompts HFLM just encoded."""
        state, known = self._rn_state, self._rn_prompt_groups
        if state is None or known is None:
            yield
            return
        prompts = self._rn_batch_prompts
        if len(prompts) != context.shape[0] or any(p not in known for p in prompts):
            raise RelNeuronError(
                f"per_doc: cannot match a generation batch of {context.shape[0]} rows to its "
                "documents' prompts",
                hint="report this; prefix_cache=false or per_doc runs per group meanwhile",
            )
        state.row_groups = torch.tensor([known[p] for p in prompts], dtype=torch.long)
        try:
            yield
        finally:
            state.row_groups = None

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        with self._input_rows(inps):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    @contextlib.contextmanager
    def _input_rows(self, inps: torch.Tensor) -> Iterator[None]:
        """Right-padded loglikelihood batches: each row's last real token and group."""
        state, known = self._rn_state, self._rn_rows
        if state is None or known is None or inps.dim() != 2:
            yield
            return
        last, groups = [], []
        for row in inps.tolist():
            length = len(row)
            while length > 1 and tuple(row[:length]) not in known and row[length - 1] == 0:
                length -= 1
            position, group = known.get(tuple(row[:length]), (length - 1, None))
            last.append(position)
            groups.append(group)
        if state.positions == "last":
            state.last_positions = torch.tensor(last, dtype=torch.long)
        if state.group_edits is not None and any(g is not None for g in groups):
            # a batch of no known row is HFLM's batch-size probe: left unedited
            if None in groups:
                raise RelNeuronError(
                    "per_doc: a loglikelihood batch row matches none of its requests",
                    hint="report this; per_doc cannot tell that row's group",
                )
            state.row_groups = torch.tensor(groups, dtype=torch.long)
        try:
            yield
        finally:
            state.last_positions = None
            state.row_groups = None


@contextlib.contextmanager
def _finite_logits(model: Any, intervention: Intervention) -> Iterator[None]:
    """Stop at the first non-finite logit the intervention causes, with one clear error.

    An edit can overflow (``mode=enhance,factor=1e30`` on a large activation): every
    log-likelihood then is NaN, and lm-eval would score as if choice 0 were picked.
    Checked on the output layer while an intervention runs; the base model is never
    touched (``relneuron-hf`` without ``neuron_set`` stays ``hf`` to the bit).
    """
    head = unwrap(model).get_output_embeddings()
    if head is None:
        yield
        return

    def check(module: Any, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or bool(torch.isfinite(output.sum())):
            return  # one reduction per forward; its overflow alone is checked element-wise
        if not bool(torch.isfinite(output).all()):
            spec = intervention.spec
            what = f"mode={intervention.mode}"
            if intervention.mode in ("enhance", "scale"):
                what += f",factor={intervention.factor:g}"
            elif intervention.mode == "set":
                what += f",value={intervention.value:g}"
            raise RelNeuronError(
                f"the intervention ({what}) made the model's outputs NaN or infinite, so no "
                "log-likelihood or generation would mean anything",
                path=None if spec is None else spec.neuron_set,
                hint="use a smaller factor/value (e.g. factor=2), or fewer units",
            )

    handle = head.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


def _rounds(keys: list[Any], groups: list[int]) -> list[list[int]]:
    """Request indices split so that no key appears with two groups in one round.

    A batch row is known only by its input (tokens or prompt); two documents of
    different groups with the same input must not share a call (HFLM also merges equal
    inputs). Almost always one round.
    """
    seen: dict[Any, list[int]] = defaultdict(list)
    rounds: list[list[int]] = []
    for i, (key, group) in enumerate(zip(keys, groups, strict=True)):
        if group not in seen[key]:
            seen[key].append(group)
        number = seen[key].index(group)
        if number == len(rounds):
            rounds.append([])
        rounds[number].append(i)
    return rounds
