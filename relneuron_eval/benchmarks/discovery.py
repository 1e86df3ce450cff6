"""The relation-specific statistics pass vs a plain batched forward, and its memory.

The statistics pass is what ``relneuron find relation-specific`` runs before ranking:
``ActivationStore.open`` of a fresh store and ``activations.collect`` over the discovery
prompts (the paper's sites ``mlp.gate_proj``, ``mlp.up_proj``, ``mlp.down_proj``;
token-means over the query, the command's defaults). ``collect`` does the correctness
check in the same pass (``run_batch``: the hooked forward gives the first greedy token,
a second greedy token is computed only for rows whose answer is still open) and writes
each batch to the on-disk store, so all of that is timed. The baseline is a plain
``model(**batch)`` under ``torch.no_grad`` over the same prompts, batches and right
padding (``make_batches``, ``pad_right``); it computes logits at every position, the
pass's forwards only at each row's last token. Both arms run interleaved on the largest
prompt count, in one process, with the model loaded once (loading is not timed).

Memory: every prompt count runs in a fresh process that loads the model, warms up on
one batch, resets its peak RSS (``/proc/self/clear_refs``) and then runs the pass once.
Reported per count: seconds, the peak RSS over the RSS just before the pass (VmHWM -
VmRSS), split by a 5 ms sampler into anonymous memory and file-backed pages (the
store's memory maps: page cache the kernel can write back and drop), and the store's
size on disk. The store grows with prompts x units; anonymous memory should not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from relneuron_eval.benchmarks.timing import interleaved, median, ratios

MIB = 1 << 20
SAMPLE_SECONDS = 0.005


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument(
        "--prompts",
        default="32,64,128",
        help="comma-separated prompt counts for the memory runs; the timing uses the largest",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fewshot", type=int, default=0, help="few-shot demos per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt sample")
    parser.add_argument("--workdir", default=None, help="where stores go (default: a temp dir)")


# ------------------------------------------------------------------- shared parts
def load_model(name: str) -> tuple[Any, Any]:
    """float32 on CPU, loaded exactly as ``relneuron find`` loads it (its default dtype)."""
    from relneuron_eval.discovery.cli import load_model as load_for_discovery

    model, tokenizer, _ = load_for_discovery(name, "cpu", "float32")
    return model, tokenizer


def sample_prompts(count: int, fewshot: int = 0, seed: int = 0) -> list:
    """A seeded sample of the discovery prompts of all relations (nested: 32 in 64 ...)."""
    from relneuron_eval.discovery.data import discovery_prompts, resolve_relations

    prompts = discovery_prompts(resolve_relations("all"), fewshot=fewshot, seed=seed)
    order = list(range(len(prompts)))
    random.Random(f"bench-discovery:{seed}").shuffle(order)
    return [prompts[i] for i in order[:count]]


def statistics_pass(model: Any, tokenizer: Any, prompts: list, root: Path, batch_size: int) -> int:
    """A fresh store at ``root`` filled by ``collect``, as ``find_relation_specific`` does.

    Returns how many prompts the model answered correctly.
    """
    import numpy as np

    from relneuron_eval.core.architectures import model_card, model_shape
    from relneuron_eval.discovery.activations import (
        ActivationStore,
        Layout,
        collect,
        query_token_counts,
    )
    from relneuron_eval.discovery.data import prompts_fingerprint
    from relneuron_eval.discovery.relation_specific import RelationSpecificConfig

    config = RelationSpecificConfig(batch_size=batch_size)
    layout = Layout.for_shape(model_shape(model), config.sites)
    meta = {
        "model": model_card(model),
        "prompts": prompts_fingerprint(prompts),
        "config": config.as_dict(),
    }
    store = ActivationStore.open(root, layout, len(prompts), meta, dtype=config.store_dtype)
    texts = [p.text for p in prompts]
    collect(
        model,
        tokenizer,
        store,
        texts,
        [p.answers for p in prompts],
        batch_size=config.batch_size,
        progress=False,
        average_last=query_token_counts(tokenizer, texts),
        # the 2-token check, as when the README's figure was taken; the default `match`
        # check generates up to 16 tokens per undecided prompt on top
        criterion="prefix2",
    )
    correct = int(np.asarray(store.correct()).sum())
    store.close()
    return correct


def plain_forward(model: Any, tokenizer: Any, prompts: list, batch_size: int) -> None:
    """``model(**batch)`` over the same batches and right padding as the pass."""
    import torch

    from relneuron_eval.discovery.activations import make_batches, pad_right

    texts = [p.text for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for rows in make_batches(tokenizer, texts, batch_size):
            ids, mask = pad_right([tokenizer(texts[i])["input_ids"] for i in rows], pad)
            batch = {"input_ids": ids, "attention_mask": mask}
            model(**batch)


def disk_bytes(root: Path) -> tuple[int, int]:
    """(apparent size, allocated on disk) of the files under ``root``."""
    apparent = allocated = 0
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


# ------------------------------------------------------------------ memory (child)
def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Peak RssAnon and RssFile, read every few milliseconds."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = _status()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            now = _status()
            for key in ("RssAnon", "RssFile"):
                self.peak[key] = max(self.peak[key], now[key])


def measure(model_name: str, count: int, batch_size: int, fewshot: int, seed: int, workdir: str):
    """One prompt count in this (fresh) process: seconds, peak memory, store size."""
    import gc

    import torch

    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.discovery.activations import Layout
    from relneuron_eval.discovery.relation_specific import PAPER_SITES

    model, tokenizer = load_model(model_name)
    prompts = sample_prompts(count, fewshot, seed)
    units = Layout.for_shape(model_shape(model), PAPER_SITES).total_units
    root = Path(tempfile.mkdtemp(prefix=f"store-{count}-", dir=workdir))
    try:
        statistics_pass(model, tokenizer, prompts[:batch_size], root / "warmup", batch_size)
        shutil.rmtree(root / "warmup")
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            reset = True
        except OSError:
            reset = False
        before = _status()
        sampler = _Sampler()
        sampler.start()
        start = time.perf_counter()
        correct = statistics_pass(model, tokenizer, prompts, root / "store", batch_size)
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        after = _status()
        apparent, allocated = disk_bytes(root / "store")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "prompts": len(prompts),
        "units": units,
        "correct": correct,
        "seconds": round(seconds, 3),
        "threads": torch.get_num_threads(),
        "peak_reset": reset,
        "rss_before_mib": round(before["VmRSS"] / MIB, 1),
        "peak_rss_increase_mib": round((after["VmHWM"] - before["VmRSS"]) / MIB, 1),
        "peak_anon_increase_mib": round((sampler.peak["RssAnon"] - before["RssAnon"]) / MIB, 1),
        "peak_file_increase_mib": round((sampler.peak["RssFile"] - before["RssFile"]) / MIB, 1),
        "store_bytes": apparent,
        "store_on_disk_bytes": allocated,
    }


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def _measure_in_child(args: argparse.Namespace, count: int, workdir: str) -> dict[str, Any]:
    spec = [args.model, count, args.batch_size, args.fewshot, args.seed, workdir]
    proc = subprocess.run(
        [sys.executable, "-m", "relneuron_eval.benchmarks.discovery", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory run for {count} prompts failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.discovery.activations import Layout
    from relneuron_eval.discovery.relation_specific import PAPER_SITES

    counts = sorted({int(c) for c in str(args.prompts).split(",") if c.strip()})
    if not counts or counts[0] < 1 or args.batch_size < 1 or args.rounds < 1:
        raise SystemExit("--prompts, --batch-size and --rounds must be positive")
    model, tokenizer = load_model(args.model)
    prompts = sample_prompts(counts[-1], args.fewshot, args.seed)
    units = Layout.for_shape(model_shape(model), PAPER_SITES).total_units
    work = Path(tempfile.mkdtemp(prefix="relneuron-bench-discovery-", dir=args.workdir))
    try:
        calls = iter(range(1 << 30))

        def stats() -> None:
            root = work / f"store-{next(calls)}"
            statistics_pass(model, tokenizer, prompts, root, args.batch_size)
            shutil.rmtree(root)

        times = interleaved(
            {
                "forward": lambda: plain_forward(model, tokenizer, prompts, args.batch_size),
                "statistics": stats,
            },
            rounds=args.rounds,
        )
        memory = [_measure_in_child(args, count, str(work)) for count in counts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = ratios(times, "forward")["statistics"]
    seconds = {k: round(median(v), 4) for k, v in times.items()}
    relations = len({p.relation for p in prompts})
    summary = [
        f"{len(prompts)} discovery prompts ({relations} relations, seeded sample), batch size "
        f"{args.batch_size}, sites gate/up/down_proj ({units:,} units), "
        f"{torch.get_num_threads()} torch threads, {args.rounds} interleaved rounds",
        "statistics pass (activations.collect: hooked forward + greedy correctness check + "
        f"store writes) median {seconds['statistics']:.3f} s vs plain model(**batch) "
        f"{seconds['forward']:.3f} s: ratio {ratio:.3f} (goal <= 1.25)",
        "memory per prompt count, each in a fresh process (model loaded and warmed up, peak "
        "reset before the pass); peak = VmHWM - VmRSS before the pass, its anon/file split "
        "sampled every 5 ms (file = the store's memory maps, reclaimable page cache):",
    ]
    for m in memory:
        summary.append(
            f"  {m['prompts']:>5} prompts: {m['seconds']:.2f} s, peak RSS +{m['peak_rss_increase_mib']:.1f}"
            f" MiB (anon +{m['peak_anon_increase_mib']:.1f}, file +{m['peak_file_increase_mib']:.1f}),"
            f" store {_size(m['store_on_disk_bytes'])} on disk"
            f" ({m['prompts']} x {m['units']:,} x 4 B = {_size(m['prompts'] * m['units'] * 4)})"
        )
    return {
        "model": args.model,
        "prompts": len(prompts),
        "relations": relations,
        "batch_size": args.batch_size,
        "units": units,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_seconds": seconds,
        "ratio_statistics_vs_forward": ratio,
        "memory": memory,
        "summary": summary,
    }


if (
    __name__ == "__main__"
):  # one memory run: python -m ... '[model, count, batch, fewshot, seed, dir]'
    print(json.dumps(measure(*json.loads(sys.argv[1]))))
