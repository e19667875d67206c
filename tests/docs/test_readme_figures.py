"""The figures the READMEs quote are the figures the recorded runs wrote.

Each README table below names the command that made it; that command wrote a JSON file under
``benchmarks/results/`` or ``examples/results/``. These tests read every number of those
tables back from the JSON, to the precision the README prints (``1.84`` means [1.835,
1.845]), so a table cannot drift from its measurements when one of them is rerun without the
other. Why: a figure in a README that was not measured as stated is the one thing the
project's numbers must never be.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES_README = ROOT / "examples" / "README.md"

# a number not glued to a word ("rk4", "3×3" and "√N" are not figures)
_NUMBER = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?(?![\w])")
_F = r"\d+\.\d+"  # a decimal figure in a sentence
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def numbers(cell: str) -> list[str]:
    """The numeric tokens of a table cell, in order, as printed."""
    return _NUMBER.findall(cell.replace("**", ""))


def value_of(token: str) -> float:
    return float(token.replace("−", "-").replace(",", ""))


def agrees(token: str, value: float) -> bool:
    """``token`` is ``value`` rounded to the printed precision (half a unit in the last
    printed digit, and a hair for binary rounding)."""
    text = token.replace("−", "-").replace(",", "")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(value_of(token) - value) <= 0.5 * unit * (1 + 1e-9) + 1e-15 * abs(value)


def assert_agree(tokens: list[str], values: list[float], where: str) -> None:
    assert len(tokens) == len(values), f"{where}: printed {tokens}, recorded {values}"
    for token, value in zip(tokens, values, strict=True):
        assert agrees(token, value), f"{where}: README says {token}, the JSON says {value:.6g}"


def table(path: Path, header: str) -> dict[str, list[str]]:
    """The markdown table whose header row starts with ``header``: first cell → all cells."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"{path.name}: no table starting {header!r}"
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    assert rows, f"{path.name}: table {header!r} is empty"
    return rows


def prose(path: Path) -> str:
    """The file's text with line breaks and runs of spaces folded (sentences wrap)."""
    return " ".join(path.read_text(encoding="utf-8").split())


def load(relative: str) -> dict[str, Any]:
    return json.loads((ROOT / relative).read_text(encoding="utf-8"))


def sizes(cell: str) -> list[tuple[str, int]]:
    """``"1.6 MiB / 320 KiB"`` → [("1.6", 2**20), ("320", 2**10)]; a unit applies to the
    numbers before it that have none (``"64 / 128 KiB"``); "—" is no figure."""
    out: list[tuple[str, int]] = []
    pending: list[str] = []
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|B)?", cell):
        pending.append(number)
        if unit:
            out.extend((n, _UNITS[unit]) for n in pending)
            pending = []
    assert not pending, f"{cell!r}: a size without a unit"
    return out


# ------------------------------------------------------------------------------ README.md
MODES_JSON = "benchmarks/results/final/modes-cpu2.json"


def test_modes_table_is_the_recorded_run():
    text = prose(README)
    record = load(MODES_JSON)
    assert record["command"] in text, "the README must name the command that made the table"
    ratio: dict[tuple[str, int, str], float] = {}
    for r in record["rows"]:
        mode = "checkpoint" if r["mode"].startswith("checkpoint") else r["mode"]
        ratio[(r["integrator"], r["depth"], mode)] = r["time_ratio"]
    rows = table(README, "| integrator | inverse | invert × store")
    assert set(rows) == set(record["config"]["integrators"])
    for name, cells in rows.items():
        assert cells[1] == record["summary"][name]["kind"], name
        for column, mode in ((2, "invert"), (3, "checkpoint")):
            assert_agree(
                numbers(cells[column]),
                [ratio[(name, d, mode)] for d in record["config"]["depths"]],
                f"modes table, {name} {mode}",
            )


def _invert_ratios(relative: str) -> dict[str, list[float]]:
    record = load(relative)
    depths = [str(d) for d in record["config"]["depths"]]
    return {k: [v["invert_time_ratio"][d] for d in depths] for k, v in record["summary"].items()}


def test_tied_and_conv_sentences_are_the_recorded_runs():
    text = prose(README)
    tied = _invert_ratios("benchmarks/results/after-memo-tied/modes-cpu2.json")
    pair = rf"({_F}) / ({_F})"
    found = re.search(rf"euler {pair}, heun {pair}, \*\*rk4 {pair}\*\*", text)
    assert found, "README: the tied-weights sentence moved; update this test"
    assert_agree(list(found.groups()), tied["euler"] + tied["heun"] + tied["rk4"], "tied")

    conv = _invert_ratios("benchmarks/results/conv/modes-cpu2.json")
    exact = [conv[k] for k in ("hamiltonian", "additive_coupling", "midpoint")]
    found = re.search(
        rf"exact invert is ({_F})–({_F})× at N = 10 and \*\*({_F})–({_F})×\*\* at N = 100 "
        rf"\(hamiltonian, additive_coupling, midpoint\), heun {pair}, euler {pair}",
        text,
    )
    assert found, "README: the conv sentence moved; update this test"
    assert_agree(
        list(found.groups()),
        [
            min(r[0] for r in exact),
            max(r[0] for r in exact),
            min(r[1] for r in exact),
            max(r[1] for r in exact),
            *conv["heun"],
            *conv["euler"],
        ],
        "conv",
    )


def test_leapfrog_summed_sentence_is_the_recorded_run():
    record = load("benchmarks/results/leapfrog-summed/modes-cpu2.json")
    text = prose(README)
    assert record["command"].removeprefix("python -m benchmarks.modes ") in text
    e = r"(\d+(?:\.\d+)?e-\d+)"
    found = re.search(rf"float32 invert against store {e} / {e} / {e}", text)
    assert found, "README: the summed-leapfrog sentence moved; update this test"
    errors = {
        r["depth"]: r["grad_err_float32"]
        for r in record["rows"]
        if r["integrator"] == "leapfrog" and r["mode"] == "invert"
    }
    assert_agree(list(found.groups()), [errors[d] for d in (10, 100, 1000)], "leapfrog summed")


def test_dropout_order_sentence_is_the_recorded_run():
    record = load("benchmarks/results/dropout-order/dropout-order-cpu2.json")
    text = prose(README)
    e = r"(\d+(?:\.\d+)?e-\d+)"
    found = re.search(
        rf"N = 64, Heun's invert gradients are {e} off `store`'s with dropout \({e} without\), "
        rf"RK4's {e} \({e}\); with a mask per call, as before 2026-12-03, they were {e} and {e}",
        text,
    )
    assert found, "README: the dropout sentence moved; update this test"
    rows = {(r["integrator"], r["depth"]): r for r in record["rows"]}
    heun, rk4 = rows[("heun", 64)], rows[("rk4", 64)]
    recorded = [heun["per layer"], heun["none"], rk4["per layer"], rk4["none"]]
    assert_agree(list(found.groups()), [*recorded, heun["per call"], rk4["per call"]], "dropout")


PEERS_JSON = "benchmarks/results/peers-cpu2.json"
PEER_ROWS = {  # README row → (odedsl method, peer method, peer's second method in parentheses)
    "momentum, γ = 0.9": ("odedsl momentum invert", "momentumnet memory-free", None),
    "RevNet coupling": ("odedsl additive_coupling invert", "memcnn InvertibleModuleWrapper", None),
    "Euler ResNet": ("odedsl euler invert", "torchdiffeq odeint_adjoint euler", None),
    "Heun / midpoint": ("odedsl heun invert", "torchdiffeq odeint_adjoint midpoint", None),
    "RK4": ("odedsl rk4 invert", "torchdiffeq odeint_adjoint rk4", None),
    "per-layer recomputation": (None, "checkpoint every layer", "checkpoint every √N layers"),
}


def test_peers_table_is_the_recorded_run():
    text = prose(README)
    record = load(PEERS_JSON)
    assert f"`{record['command']}" in text
    depths = record["config"]["depths"]
    deepest = max(depths)
    by = {(r["method"], r["depth"]): r for r in record["rows"]}
    rows = table(README, "| work | odedsl invert | peer |")
    assert set(rows) == set(PEER_ROWS)
    for name, (ours, peer, peer2) in PEER_ROWS.items():
        cells = rows[name]
        where = f"peers table, {name}"
        methods = [m for m in (ours, peer) if m is not None]
        if ours is not None:
            assert_agree(numbers(cells[1]), [by[(ours, d)]["time_ratio"] for d in depths], where)
        times = [by[(peer, d)]["time_ratio"] for d in depths]
        if peer2 is not None:
            times += [by[(peer2, d)]["time_ratio"] for d in depths]
        assert_agree(numbers(cells[2]), times, where + " (peer)")
        memory = sizes(cells[3])
        recorded = [by[(m, deepest)]["saved_bytes"] for m in methods]
        if peer2 is not None:  # "— / 2 MiB (√N)": only the √N checkpoint's memory is quoted
            recorded = [by[(peer2, deepest)]["saved_bytes"]]
        assert_agree(
            [t for t, _ in memory],
            [b / unit for b, (_, unit) in zip(recorded, memory, strict=True)],
            where + " (memory)",
        )
        errors = [by[(m, deepest)]["grad_err_float64"] for m in methods]
        if peer2 is not None:
            errors = [by[(peer, deepest)]["grad_err_float64"]]
        assert_agree(numbers(cells[4]), errors, where + " (gradient error)")


def test_peers_float32_sentence_is_the_recorded_run():
    text = prose(README)
    record = load(PEERS_JSON)
    deepest = max(record["config"]["depths"])
    at = {r["method"]: r for r in record["rows"] if r["depth"] == deepest}
    e = r"(\d+(?:\.\d+)?e-\d+)"
    found = re.search(
        rf"hamiltonian {e} against `store`'s {e}; against `store` in float32: {e} hamiltonian, "
        rf"(\d)–{e} midpoint and coupling, {e} momentum, {e} leapfrog\)",
        text,
    )
    assert found, "README: the float32 peers sentence moved; update this test"
    vs_exact, vs_store = "grad_err_float32", "grad_err_float32_vs_baseline"
    low, high = sorted(
        at[f"odedsl {k} invert"][vs_store] for k in ("midpoint", "additive_coupling")
    )
    ham, mid, mom, leap = found.group(3), found.group(5), found.group(6), found.group(7)
    assert_agree(
        [
            found.group(1),
            found.group(2),
            ham,
            found.group(4) + "e" + mid.split("e")[1],
            mid,
            mom,
            leap,
        ],
        [
            at["odedsl hamiltonian invert"][vs_exact],
            at["odedsl hamiltonian store"][vs_exact],
            at["odedsl hamiltonian invert"][vs_store],
            low,
            high,
            at["odedsl momentum invert"][vs_store],
            at["odedsl leapfrog invert"][vs_store],
        ],
        "float32 peers sentence",
    )
    found = re.search(rf"`store` itself is {e} off in\s+float32 and invert {e}", text)
    assert found, "README: the leapfrog float32 sentence moved; update this test"
    assert_agree(
        list(found.groups()),
        [at[f"odedsl leapfrog {m}"][vs_exact] for m in ("store", "invert")],
        "leapfrog float32",
    )


AMD_PEERS = "benchmarks/results/amd-epyc/peers-cpu2.json"
AMD_ODE = ("benchmarks/results/amd-epyc-ode-short", "benchmarks/results/amd-epyc-ode-1024")


def test_amd_peers_paragraph_is_the_recorded_runs():
    """The AMD EPYC paragraph: the full run's reversible ratios and the points where its few
    rounds put torchdiffeq ahead, then the ODE groups' absolute times from the longer runs."""
    text = prose(README)
    full = load(AMD_PEERS)
    assert full["command"] in text.replace("` `", " ")
    by = {(r["method"], r["depth"]): r for r in full["rows"]}
    depths = full["config"]["depths"]
    for ours, peer, label in (
        ("odedsl momentum invert", "momentumnet memory-free", "momentum invert"),
        ("odedsl additive_coupling invert", "memcnn InvertibleModuleWrapper", "the coupling"),
    ):
        found = re.search(
            rf"{label} ({_F}) / ({_F}) / ({_F})× against \w+'s ({_F}) / ({_F}) / "
            rf"({_F})×",
            text,
        )
        assert found, f"README: the AMD {label} figures moved; update this test"
        ratios = [by[(m, d)]["time_ratio"] for m in (ours, peer) for d in depths]
        assert_agree(list(found.groups()), ratios, f"AMD peers, {label}")
    ahead = re.search(
        rf"Euler at N = 1024 \(({_F}) against ({_F})×\), Heun / midpoint at N = 16 \(({_F}) "
        rf"against ({_F})×\) and rk4 at N = 128 \(({_F}) against ({_F})×\)",
        text,
    )
    assert ahead, "README: the AMD 'ahead at three points' sentence moved; update this test"
    points = [("euler", "euler", 1024), ("heun", "midpoint", 16), ("rk4", "rk4", 128)]
    figures = []
    for ours, theirs, depth in points:
        figures += [
            by[(f"torchdiffeq odeint_adjoint {theirs}", depth)]["time_ratio"],
            by[(f"odedsl {ours} invert", depth)]["time_ratio"],
        ]
        assert figures[-2] < figures[-1]
    assert_agree(list(ahead.groups()), figures, "AMD peers, torchdiffeq ahead")
    long = {}
    for folder in AMD_ODE:
        record = load(f"{folder}/peers-cpu2.json")
        assert f"--out {folder}`" in text, folder
        long.update({(r["method"], r["depth"]): r["time_s"] for r in record["rows"]})
    ms = r"(\d+(?:\.\d+)?)"
    for label, ours, theirs in (
        ("Euler", "euler", "euler"),
        ("Heun / midpoint", "heun", "midpoint"),
        ("rk4", "rk4", "rk4"),
    ):
        found = re.search(rf"{label} {ms} / {ms} / {ms} ms against {ms} / {ms} / {ms} ms", text)
        assert found, f"README: the AMD absolute times of {label} moved; update this test"
        times = [
            1e3 * long[(m, d)]
            for m in (f"odedsl {ours} invert", f"torchdiffeq odeint_adjoint {theirs}")
            for d in (16, 128, 1024)
        ]
        assert_agree(list(found.groups()), times, f"AMD absolute times, {label}")
        assert all(times[i] < times[i + 3] for i in range(3)), label


COMPILE_JSON = "benchmarks/results/compile-cpu2.json"
COMPILE_ROWS = {
    "odedsl store": "store",
    "odedsl checkpoint(√N)": "checkpoint",
    "odedsl invert": "invert",
    "Python loop over layers (reference)": "python-loop",
}


def test_compile_table_is_the_recorded_run():
    record = load(COMPILE_JSON)
    rows = table(README, "| stage | N | cold compile")
    assert set(rows) == set(COMPILE_ROWS)
    for name, mode in COMPILE_ROWS.items():
        cells = rows[name]
        runs = [r for r in record["rows"] if r["mode"] == mode]
        where = f"compile table, {name}"
        assert_agree(numbers(cells[1]), [r["depth"] for r in runs], where + " (N)")
        assert_agree(numbers(cells[2]), [r["cold"]["compile_s"] for r in runs], where)
        assert_agree(numbers(cells[3]), [r["warm"]["compile_s"] for r in runs], where)
        assert {r["cold"]["graphs"] for r in runs} == {int(cells[4])}, where
        assert_agree(
            numbers(cells[5]),
            [r["cold"]["compiled_step_s"] / r["cold"]["eager_step_s"] for r in runs],
            where + " (compiled / eager)",
        )


GRADIENT_JSON = "examples/results/gradient_error_vs_depth.json"


def test_fig3c_slopes_are_the_recorded_run():
    slopes = load(GRADIENT_JSON)["slopes"]
    text = prose(README)
    found = re.search(
        r"slope of \*\*(−[\d.]+)\*\* for the ResNet.*?\*\*(−[\d.]+)\*\* for the", text, re.S
    )
    assert found, "README: the Fig. 3c slopes sentence moved; update this test"
    assert_agree(list(found.groups()), [slopes["euler"], slopes["heun"]], "README slopes")


# ---------------------------------------------------------------------- examples/README.md
def _median_range(values: list[float]) -> list[float]:
    return [statistics.median(values), min(values), max(values)]


def test_gradient_error_table_is_the_recorded_run():
    record = load(GRADIENT_JSON)
    rows = table(EXAMPLES_README, "| N | ResNet gradient error")
    assert sorted(int(n) for n in rows) == record["depths"]
    for n, cells in rows.items():
        per = {
            i: [r for r in record["rows"] if r["integrator"] == i and r["depth"] == int(n)]
            for i in ("euler", "heun")
        }
        where = f"examples gradient-error table, N = {n}"
        for column, integrator in ((1, "euler"), (2, "heun")):
            errors = [r["grad_error"] for r in per[integrator]]
            assert_agree(numbers(cells[column]), _median_range(errors), where)
        for column, integrator in ((3, "euler"), (4, "heun")):
            recon = statistics.median(r["reconstruction_error"] for r in per[integrator])
            assert_agree(numbers(cells[column]), [recon], where + " (reconstruction)")


NOISY_ADJOINT_JSON = "examples/results/adjoint_accuracy_vs_depth-noise1.json"
NOISY_TIED_JSON = "examples/results/tied_to_untied-noise1.json"


def test_noisy_adjoint_table_is_the_recorded_run():
    record = load(NOISY_ADJOINT_JSON)
    assert record["command"] in prose(EXAMPLES_README) and record["command"] in prose(README)
    rows = table(EXAMPLES_README, "| N | ResNet backprop: test accuracy")
    assert sorted(int(n) for n in rows) == record["depths"]
    columns = [("euler", "store"), ("euler", "invert"), ("heun", "store"), ("heun", "invert")]
    for n, cells in rows.items():
        for column, (integrator, mode) in enumerate(columns, start=1):
            sel = [
                r
                for r in record["rows"]
                if (r["integrator"], r["backward"], r["depth"]) == (integrator, mode, int(n))
            ]
            accuracy = _median_range([100 * r["test_accuracy"] for r in sel])
            loss = statistics.median(r["train_loss"] for r in sel)
            where = f"examples noisy adjoint table, N = {n}, {integrator} {mode}"
            assert_agree(numbers(cells[column]), [*accuracy, loss], where)


def _loss_ratios(record: dict[str, Any], integrator: str, depth: int) -> list[float]:
    by = {
        (r["backward"], r["seed"]): r["train_loss"]
        for r in record["rows"]
        if r["integrator"] == integrator and r["depth"] == depth
    }
    return [by[("invert", s)] / by[("store", s)] for s in record["seeds"]]


def test_noisy_adjoint_sentences_are_the_recorded_run():
    record = load(NOISY_ADJOINT_JSON)
    text = prose(README)
    found = re.search(
        rf"ResNet's adjoint ends with ({_F})–({_F})× backprop's training loss and ({_F}) % "
        rf"against ({_F}) % test accuracy \(median of 3 seeds\), the HeunNet's ({_F})–({_F})× "
        rf"and ({_F}) % against ({_F}) %",
        text,
    )
    assert found, "README: the noisy Fig. 4 sentence moved; update this test"
    assert len(record["seeds"]) == 3

    def accuracy(integrator: str, mode: str) -> float:
        return 100 * statistics.median(
            r["test_accuracy"]
            for r in record["rows"]
            if (r["integrator"], r["backward"], r["depth"]) == (integrator, mode, 2)
        )

    figures = []
    for integrator in ("euler", "heun"):
        ratios = _loss_ratios(record, integrator, 2)
        figures += [min(ratios), max(ratios)]
        figures += [accuracy(integrator, "invert"), accuracy(integrator, "store")]
    assert_agree(list(found.groups()), figures, "README noisy")
    deep = [
        abs(ratio - 1)
        for integrator in ("euler", "heun")
        for depth in record["depths"]
        if depth >= 8
        for ratio in _loss_ratios(record, integrator, depth)
    ]
    assert max(deep) < 0.03, "README: 'from N = 8 up both are within 3 % of backprop's loss'"


def test_noisy_tied_to_untied_sentence_is_the_recorded_run():
    record = load(NOISY_TIED_JSON)
    text = prose(EXAMPLES_README)
    assert record["command"] in text
    found = re.search(
        rf"tied N₀ = 4 ({_F}) %, untied copy ({_F}) %, fine-tuned with the adjoint ({_F}) %, "
        rf"with backprop ({_F}) %, tied trained longer ({_F}) %",
        text,
    )
    assert found, "examples/README: the noisy tied-to-untied sentence moved; update this test"
    keys = ("tied", "converted", "finetuned_adjoint", "finetuned_backprop", "tied_longer")
    medians = [100 * record["summary"][k]["recalibrated"] for k in keys]
    assert_agree(list(found.groups()), medians, "examples noisy tied-to-untied")


MEMORY_JSON = "examples/results/reversible_memory.json"


def test_reversible_memory_table_is_the_recorded_run():
    record = load(MEMORY_JSON)
    by = {(r["network"], r["depth"], r["backward"]): r for r in record["rows"]}
    lines = [
        line
        for line in EXAMPLES_README.read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in record["networks"]
    ]
    assert len(lines) == len(record["networks"]) * len(record["depths"])
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, depth = cells[0], int(value_of(cells[1]))
        store, invert = by[(name, depth, "store")], by[(name, depth, "invert")]
        where = f"examples reversible-memory table, {name} N = {depth}"
        assert_agree(
            numbers(cells[2]) + numbers(cells[3]),
            [store["activation_bytes"] / 2**20, invert["activation_bytes"] / 2**20],
            where + " (MiB)",
        )
        times = [store["seconds_per_step"], invert["seconds_per_step"]]
        assert_agree(numbers(cells[4]) + numbers(cells[5]), times, where + " (s/step)")
        assert_agree(numbers(cells[6])[:1], [times[1] / times[0]], where + " (ratio)")


@pytest.mark.parametrize(
    ("token", "value", "ok"),
    [
        ("1.84", 1.8449, True),
        ("1.84", 1.8451, False),
        ("8.7e-5", 8.6986e-05, True),
        ("8.7e-5", 8.76e-05, False),
        ("−1.03", -1.03407, True),
        ("1,000", 1000.0, True),
        ("430", 430.4, True),
        ("430", 431.0, False),
    ],
)
def test_agrees_reads_the_printed_precision(token, value, ok):
    assert agrees(token, value) is ok


# --------------------------------------------------------------------- benchmarks/README.md
@pytest.mark.parametrize(
    "relative",
    [
        "benchmarks/results/final/modes-cpu2.json",
        "benchmarks/results/amd-epyc/peers-cpu2.json",
        "benchmarks/results/after-memo/modes-cpu2.json",
        "benchmarks/results/after-memo-tied/modes-cpu2.json",
        "benchmarks/results/conv/modes-cpu2.json",
        "benchmarks/results/leapfrog-summed/modes-cpu2.json",
    ],
)
def test_benchmarks_readme_quotes_the_current_tables_verbatim(relative):
    """The newest section of benchmarks/README.md pastes each run's table as it printed it
    (older sections are history: their runs' JSON was overwritten by later ones)."""
    table_text = load(relative)["table"].strip()
    assert table_text in (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8"), relative


def test_overhead_sentences_are_the_recorded_runs():
    """The Time paragraph's fixed-cost and memo figures, read back from the overhead runs."""
    text = prose(README)
    runs = {
        r: load(f"benchmarks/results/{r}/overhead-cpu2.json")
        for r in ("after-probe", "after-probe-2")
    }

    def ratio(run: str, integrator: str, mode: str) -> float:
        fixed = runs[run]["fixed"][integrator]
        return fixed[mode] / fixed["store"]

    first = re.search(
        rf"at width 4, where no arithmetic is left: ({_F})× store for the bare Function, "
        rf"({_F})× for odedsl's Euler invert, `--out benchmarks/results/after-probe`, of which "
        rf"the backward NaN probe of its non-fused steps is ({_F})×; `after-probe-2`: ({_F})× "
        rf"against ({_F})×",
        text,
    )
    assert first, "the fixed-cost sentence moved"
    assert_agree(
        list(first.groups()),
        [
            ratio("after-probe", "euler", "hand-written Function"),
            ratio("after-probe", "euler", "invert"),
            ratio("after-probe", "euler", "invert")
            - ratio("after-probe", "euler", "invert, no backward probe"),
            ratio("after-probe-2", "euler", "hand-written Function"),
            ratio("after-probe-2", "euler", "invert"),
        ],
        "README fixed cost",
    )
    memo = re.search(
        rf"the latest run \(`after-probe`\): ({_F}) / ({_F})× \(30/30\), ({_F}) / ({_F})× "
        rf"\(30/30\), ({_F}) / ({_F})× \(29/30\)",
        text,
    )
    assert memo, "the memo sentence moved"
    features = runs["after-probe"]["features"]
    assert_agree(
        list(memo.groups()),
        [features[i][k] for i in ("euler", "heun", "rk4") for k in ("on", "off")],
        "README memo",
    )
    sketch = [runs[r]["features"]["hamiltonian"] for r in ("after-probe", "after-probe-2")]
    found = re.search(
        rf"({_F}) / ({_F})× and ({_F}) / ({_F})× in the two latest, faster in only (\d+) and "
        rf"(\d+) of 30",
        text,
    )
    assert found, "the sketch sentence moved"
    assert_agree(
        list(found.groups()[:4]), [v for s in sketch for v in (s["on"], s["off"])], "sketch"
    )
    assert [int(g) for g in found.groups()[4:]] == [s["on_faster_rounds"] for s in sketch]
