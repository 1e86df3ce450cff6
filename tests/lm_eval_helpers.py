"""Run the real ``lm_eval`` CLI in a subprocess and read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LM_EVAL = [sys.executable, "-m", "lm_eval"]


def _env() -> dict[str, str]:
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return {**os.environ, **offline, "TOKENIZERS_PARALLELISM": "false"}


def run_lm_eval(
    args: list[str], *, cwd: Path | None = None, check: bool = True, timeout: int = 900
):
    proc = subprocess.run(
        [*LM_EVAL, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lm_eval failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


# Runs lm-eval's own CLI entry point (`cli_evaluate`, what `lm_eval ARGS` runs) once per
# argument list read from stdin, all in one Python process; stops at the first failure.
_IN_ONE_PROCESS = """\
import json, sys
from lm_eval.__main__ import cli_evaluate
for argv in json.load(sys.stdin):
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        if exc.code:
            print(f"lm_eval run {argv} exited {exc.code}", file=sys.stderr)
            raise
"""


def run_lm_eval_in_one_process(
    runs: list[list[str]], *, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Several ``lm_eval`` CLI runs in one Python process, in order.

    Why: each ``lm_eval`` start-up costs ~7 CPU s of imports; a test about what several
    runs wrote (not about start-up or per-process state) pays it once. Each run still
    parses its arguments, builds its model and tasks and writes its files as the CLI does.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _IN_ONE_PROCESS],
        input=json.dumps(runs),
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"lm_eval failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def result_files(output: Path) -> list[Path]:
    return sorted(output.rglob("results_*.json"))


def load_results(output: Path) -> dict:
    files = result_files(output)
    assert len(files) == 1, f"expected one results file under {output}, found {files}"
    return json.loads(files[0].read_text())


def load_samples(output: Path, task: str) -> list[dict]:
    files = sorted(output.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, f"expected one samples file for {task} under {output}, found {files}"
    rows = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def responses(samples: list[dict]) -> list:
    """What the model produced per document (loglikelihoods or generations)."""
    return [row["resps"] for row in samples]


def write_toy_task(folder: Path, docs: list[dict]) -> Path:
    """A generation task and a multiple-choice task over the same small JSONL file."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = f"""dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{question}}}}"
"""
    (folder / "toy_gen.yaml").write_text(
        "task: toy_gen\n"
        + common
        + """output_type: generate_until
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""
    )
    (folder / "toy_mc.yaml").write_text(
        "task: toy_mc\n"
        + common
        + """output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: "{{choices.index(answer)}}"
metric_list:
  - metric: acc
"""
    )
    return folder


def save_tiny_llama(
    folder: Path, *, hidden: int, intermediate: int, layers: int, mlp_std: float | None = None
) -> Path:
    """A seeded random-weight Llama with the real SmolLM2 tokenizer, saved like any checkpoint.

    ``mlp_std`` re-draws the MLP weights larger than the default init, so that a few
    units move the logits visibly.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from relneuron_eval.core.embedded import ensure_local

    tokenizer = AutoTokenizer.from_pretrained(ensure_local(verbose=False))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if mlp_std is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                    proj.weight.normal_(0.0, mlp_std)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The tiny Llama of the in-process ``relneuron-hf`` tests (lm_model, prefix_cache, per_doc)
TINY_LAYERS, TINY_INTERMEDIATE, TINY_HIDDEN = 2, 48, 32


def save_tiny_lm(folder: Path) -> Path:
    """That tiny Llama, with MLP weights large enough for a few units to move the logits."""
    return save_tiny_llama(
        folder, hidden=TINY_HIDDEN, intermediate=TINY_INTERMEDIATE, layers=TINY_LAYERS, mlp_std=0.4
    )


def save_tiny_set(
    path: Path, groups: list[str], sites: list[str], *, per_layer: int, seed: int
) -> Path:
    """A neuron set for ``save_tiny_lm``: ``per_layer`` seeded units per (group, site, layer)."""
    import random

    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    rng = random.Random(seed)
    neurons = [
        Neuron(group, site, layer, index, 1.0)
        for group in groups
        for site in sites
        for layer in range(TINY_LAYERS)
        for index in rng.sample(range(TINY_INTERMEDIATE), per_layer)
    ]
    model = {
        "id": "tiny",
        "architecture": "LlamaForCausalLM",
        "num_layers": TINY_LAYERS,
        "intermediate_size": TINY_INTERMEDIATE,
        "hidden_size": TINY_HIDDEN,
    }
    NeuronSet(make_header(model=model, method={"name": "test"}), neurons).save(path)
    return path


def char_tokenizer(first: str):
    """A character-level HF tokenizer (printable ASCII, ``first`` at id 0), unlike SmolLM2's BPE."""
    import string

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [first, *sorted(set(string.printable) - {first})]
    vocab = {c: i for i, c in enumerate([*chars, "<unk>", "<s>", "</s>"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )


def save_constant_llama(folder: Path, tokenizer, token: str) -> Path:
    """A tiny Llama whose greedy generation repeats ``token`` whatever the prompt.

    Every input embeds to the same vector and the blocks add nothing, so the last hidden
    state is constant; only ``token``'s output row points along it.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] = 1.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
