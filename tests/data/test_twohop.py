"""Two-hop chains (honest splits, fact ids) and the compositionality gap read from samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relneuron_eval.cli import main as cli_main
from relneuron_eval.data import facts, twohop
from relneuron_eval.data.facts import subject_key
from relneuron_eval.errors import RelNeuronError


@pytest.fixture(scope="module")
def chains():
    return twohop.build_chains()


def test_chains_join_test_facts_through_the_bridge(chains):
    assert len(chains) >= 200
    for chain in chains:
        assert chain.hop1.split == "test" and chain.hop2.split == "test"
        assert subject_key(chain.hop1.object) == subject_key(chain.hop2.subject)
        assert (chain.hop1.relation, chain.hop2.relation) in twohop.PAIRS
    counts = twohop.chain_counts(chains)
    for pair in (
        "landmark_in_country>country_capital_city",
        "landmark_in_country>country_largest_city",
        "product_by_company>company_hq",
    ):
        assert counts[pair] >= 30, pair


def test_fewshot_chains_never_touch_test_facts(chains):
    demos = twohop.fewshot_chains()
    assert 3 <= len(demos) <= twohop.MAX_FEWSHOT_CHAINS
    test_ids = {c.hop1.fact_id for c in chains} | {c.hop2.fact_id for c in chains}
    for demo in demos:
        assert demo.hop1.split != "test" and demo.hop2.split != "test"
        assert demo.hop1.fact_id not in test_ids and demo.hop2.fact_id not in test_ids
    assert len({d.pair for d in demos}) >= 5  # demos are mixed over pairs


def test_documents_carry_fact_ids_and_prompts(chains):
    chain = next(c for c in chains if c.pair == "landmark_in_country>country_capital_city")
    doc = chain.doc()
    hop1 = facts.fact_by_id(doc["hop1_fact"])
    hop2 = facts.fact_by_id(doc["hop2_fact"])
    assert hop1.relation == "landmark_in_country" and hop2.relation == "country_capital_city"
    assert doc["bridge"] == hop1.object and doc["answer"] == hop2.object
    assert doc["prompt_direct"].startswith("The capital of the country where " + hop1.subject)
    assert doc["prompt_cot"].startswith("Q: What is the capital of the country where")
    assert doc["prompt_hop1"].startswith(hop1.subject) or hop1.subject in doc["prompt_hop1"]
    assert hop2.subject in doc["prompt_hop2"]
    assert hop2.object not in doc["prompt_direct"] and hop1.object not in doc["prompt_direct"]
    # the demo reasoning states both hops and ends with the answer
    assert doc["cot_target"].endswith(f"So the answer is {hop2.object}.")
    assert hop1.object in doc["cot_target"]


def test_heldout_hop1_prompt_ends_unlike_any_discovery_or_eval_template(chains):
    """Knowledge neurons are found on the discovery templates, which end in the same
    tokens as relfacts_2hop_hop1's eval templates ("... the country of"); the held-out
    hop 1 asks the same fact as a question, so it ends in other tokens."""
    from relneuron_eval.harness.task_data import rows_for

    rows = rows_for("2hop")
    for chain in chains:
        doc = chain.doc()
        heldout = doc["prompt_hop1_heldout"]
        assert chain.hop1.subject in heldout and heldout.endswith("?\nA:")
        rel = chain.hop1_relation
        for template in rel.templates["discovery"] + rel.templates["eval"]:
            filled = template.replace("{subject}", chain.hop1.subject)
            assert filled.split()[-1] != heldout.split()[-1], (filled, heldout)
            assert heldout != filled
    # every test and demo row carries it (demos show the question with its answer)
    assert all(r["prompt_hop1_heldout"].startswith("Q: ") for r in rows["test"] + rows["fewshot"])
    assert twohop.HOP1_HELDOUT_TASK in twohop.TASKS


def test_gap_reads_the_heldout_samples_apart_from_hop1(tmp_path):
    """samples_relfacts_2hop_hop1_heldout_* must not be taken for hop 1's samples."""
    found = {}
    for task in twohop.TASKS:
        path = tmp_path / f"samples_{task}_2025-01-01T00-00-00.jsonl"
        path.write_text("")
        found[task] = path
    assert twohop._find_samples([str(tmp_path)]) == found


def test_ambiguous_products_are_not_chained(chains):
    rel = facts.load_relation("product_by_company")
    multi = {f.fact_id for f in rel.facts if len(set(f.answers) & set(rel.objects)) > 1}
    assert multi  # e.g. Clang: Apple, Sony, Intel, Microsoft
    assert not multi & {c.hop1.fact_id for c in chains}


# ------------------------------------------------------------------ the gap
def _write(folder: Path, task: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{task}_2025-01-01T00-00-00.000000.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(oks, pairs, extra=None):
    return [
        {
            "doc_id": i,
            "doc": {"chain_id": f"c{i}", "pair": pairs[i]},
            "acc_match": float(ok),
            **(extra[i] if extra else {}),
        }
        for i, ok in enumerate(oks)
    ]


@pytest.fixture
def run_folder(tmp_path):
    #          chain:   0  1  2  3  4  5
    pairs = ["a>b", "a>b", "a>b", "c>d", "c>d", "c>d"]
    hop1 = [1, 1, 1, 1, 0, 1]
    hop2 = [1, 1, 0, 1, 1, 1]
    direct = [1, 0, 1, 0, 0, 1]
    cot = [1, 1, 0, 0, 1, 1]
    bridge = [{"bridge_recall": b} for b in (1, 1, 0, 1, 0, 1)]
    folder = tmp_path / "run" / "model"
    _write(folder, "relfacts_2hop_hop1", _rows(hop1, pairs))
    _write(folder, "relfacts_2hop_hop2", _rows(hop2, pairs))
    _write(folder, "relfacts_2hop", _rows(direct, pairs))
    _write(folder, "relfacts_2hop_cot", _rows(cot, pairs, bridge))
    return tmp_path / "run"


def test_gap_by_hand(run_folder):
    result = twohop.compute_gap(twohop._find_samples([str(run_folder)]))
    table = result["pairs"]
    # both hops right: chains 0, 1, 3, 5; composed wrong among them: 1, 3 -> 2/4
    assert table["all"]["both_hops"] == 4 and table["all"]["gap"] == pytest.approx(0.5)
    # a>b: both right 0, 1; composed wrong: 1 -> 1/2. c>d: both right 3, 5; wrong: 3 -> 1/2
    assert table["a>b"]["gap"] == pytest.approx(0.5) and table["c>d"]["both_hops"] == 2
    # CoT wrong among both-right chains: 3 -> 1/4; bridge stated in chains 0, 1, 3, 5
    assert table["all"]["cot_gap"] == pytest.approx(0.25)
    assert table["all"]["cot_bridge_recall"] == 4
    text = twohop.format_gap(result)
    assert "| all | 6 | 5 | 5 | 4 | 3 | 50.0% |" in text


def test_gap_cli_writes_json(run_folder, tmp_path, capsys):
    out = tmp_path / "gap.json"
    assert cli_main(["gap", str(run_folder), "--json", str(out)]) == 0
    assert "| a>b |" in capsys.readouterr().out
    assert json.loads(out.read_text())["pairs"]["all"]["chains"] == 6


def test_gap_missing_task_is_a_clear_error(run_folder, capsys):
    next(run_folder.rglob("samples_relfacts_2hop_hop2_*.jsonl")).unlink()
    assert cli_main(["gap", str(run_folder)]) == 2
    err = capsys.readouterr().err
    assert "relfacts_2hop_hop2" in err and "--log_samples" in err


def test_gap_mismatched_documents(run_folder):
    hop1 = next(run_folder.rglob("samples_relfacts_2hop_hop1_*.jsonl"))
    rows = [json.loads(line) for line in hop1.read_text().splitlines()]
    hop1.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    with pytest.raises(RelNeuronError, match="same --limit"):
        twohop.compute_gap(twohop._find_samples([str(run_folder)]))
    rows[2]["doc"]["chain_id"] = "other"
    hop1.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RelNeuronError, match="doc 2 is chain 'other'"):
        twohop.compute_gap(twohop._find_samples([str(run_folder)]))


def test_gap_bad_sample_line(run_folder):
    direct = next(run_folder.rglob("samples_relfacts_2hop_2025*.jsonl"))
    direct.write_text(direct.read_text() + "{not json\n")
    with pytest.raises(RelNeuronError) as info:
        twohop.compute_gap(twohop._find_samples([str(run_folder)]))
    assert info.value.line == 7 and info.value.path == str(direct)


def test_gap_reads_generations_with_line_separators(run_folder):
    """lm-eval writes samples with ensure_ascii=False: a generation may hold U+2028."""
    hop1 = next(run_folder.rglob("samples_relfacts_2hop_hop1_*.jsonl"))
    before = twohop.compute_gap(twohop._find_samples([str(run_folder)]))
    rows = [json.loads(line) for line in hop1.read_text().split("\n") if line]
    rows[0]["resps"] = [["Paris\u2028is the capital\x85"]]
    hop1.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert twohop.compute_gap(twohop._find_samples([str(run_folder)])) == before


def test_gap_refuses_a_non_finite_metric(run_folder):
    hop2 = next(run_folder.rglob("samples_relfacts_2hop_hop2_*.jsonl"))
    lines = hop2.read_text().splitlines()
    lines[1] = (
        lines[1]
        .replace('"acc_match": 1.0', '"acc_match": NaN')
        .replace('"acc_match": 0.0', '"acc_match": NaN')
    )
    assert "NaN" in lines[1]
    hop2.write_text("\n".join(lines) + "\n")
    with pytest.raises(RelNeuronError, match="NaN is not a JSON number") as info:
        twohop.compute_gap(twohop._find_samples([str(run_folder)]))
    assert info.value.line == 2 and info.value.path == str(hop2)
