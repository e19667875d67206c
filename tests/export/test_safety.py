"""Issue 9.3: spec text never reaches generated code except as vetted identifiers and numeric
or boolean literals; comments quote only a sanitised base name, line and column."""

from __future__ import annotations

import importlib
import io
import py_compile
import re
import tokenize
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.cli.main import main
from odedsl.export import build
from odedsl.export.render import environment
from odedsl.export.safety import BUG, Code, comment, ident, literal, where

from .helpers import SPECS, import_file, perturbed_state, run_python

PAYLOAD = "__import__('os').system('touch PWNED')"
NEWLINE_PAYLOAD = f'x"""\n{PAYLOAD}\n"""'
PAYLOADS = (PAYLOAD, NEWLINE_PAYLOAD, "system(", "__import__(", "chr(")
#: Names the payloads would need as code; they may survive only inside comments and strings,
#: as parts of a file name reduced to [A-Za-z0-9_.-].
PAYLOAD_NAMES = {"system", "__import__", "touch", "PWNED", "chr"}
EVIL_FILE = 'evil"; __import__("os").system("touch PWNED") #\n.ode'
EVIL_IMPORT = "blocks'); __import__(chr(111)).system(chr(116)) #.ode"  # no " or \\ (grammar)

SPEC = f'''\
# {PAYLOAD}
# """; {PAYLOAD}; """ \u2028 {PAYLOAD}
import "{EVIL_IMPORT}"   # {PAYLOAD}

network net(depth: int = 2, tag: str = "'); {PAYLOAD.replace('"', "")} #", width: int = 4) {{
    input vector[width]   # {PAYLOAD}
    stage body = ode(depth) {{  # {NEWLINE_PAYLOAD!r}
        integrator euler
        residual evil_block(width)   # {PAYLOAD}
    }}
    head {{ linear(2) }}  # {PAYLOAD}
}}
'''
BLOCKS = f"# {PAYLOAD}\nblock evil_block(c: int) {{ linear(c) tanh }}  # {PAYLOAD}\n"


def _sources(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.py")}


def test_payloads_in_comments_strings_and_file_names_never_reach_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / EVIL_FILE
    spec.write_text(SPEC, encoding="utf-8")
    (tmp_path / EVIL_IMPORT).write_text(BLOCKS, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["build", str(spec), "-o", str(out), "--set", f"tag={NEWLINE_PAYLOAD}"]
    assert main(argv) == 0, capsys.readouterr().err
    sources = _sources(out)
    assert set(sources) == {"net.py", "train_net.py"}
    for name, text in sources.items():
        for payload in PAYLOADS:
            assert payload not in text, (name, payload)
        assert not _names(text) & PAYLOAD_NAMES, name
        py_compile.compile(str(out / name), doraise=True)
    assert "# (string parameter tag is not written" in sources["net.py"]
    # importing and running the module executes nothing from the spec
    proc = run_python(
        ["-c", "import net; m = net.build(); print(m(__import__('torch').randn(2, 4)).shape)"],
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("PWNED"))


NAMES = """\
integrator exec(next, torch; globals: float = 0.5) split channels {
    math = __import__(torch, t)
    next += h * globals * math
    eval = print(next, t)
    torch -= h * eval
}
network print(depth: int = 2, __class__: int = 4, build: int = 1) {
    input vector[8]
    stage compute = ode(depth) {
        integrator exec
        backward invert
        residual __import__ = { linear(__class__) tanh }
        residual print = { linear(4) }
    }
    head { linear(2) }
}
"""
STAGE = "stage s = ode(2) { integrator euler residual { linear(4) } }"
DANGEROUS = {"exec", "eval", "__import__", "compile", "globals", "print", "open", "getattr"}


def _names(source: str) -> set[str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.string for t in tokens if t.type == tokenize.NAME}


def test_builtin_and_module_names_are_only_strings_or_renamed(tmp_path: Path) -> None:
    spec = tmp_path / "names.ode"
    spec.write_text(NAMES)
    out = tmp_path / "out"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    source = (out / "print.py").read_text()
    assert not _names(source) & DANGEROUS
    assert 'call("__import__", ' in source and "next_1, torch_1 = state" in source
    module = import_file(out / "print.py")
    ref = odedsl.compile(spec, dtype=torch.float64)
    gen = module.build(dtype=torch.float64)
    gen.load_state_dict(perturbed_state(ref))
    ref.load_state_dict(gen.state_dict())
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.equal(ref(x), gen(x))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("stage class = ode(2) { integrator euler residual { linear(4) } }", "Python keyword"),
        ("stage " + "s" * 70 + " = ode(2) { integrator euler residual { linear(4) } }", "64"),
        ("stage input_shape = ode(2) { integrator euler residual { linear(4) } }", "reserved"),
        ("stage compile = ode(2) { integrator euler residual { linear(4) } }", "torch.nn.Module"),
    ],
)
def test_unexportable_names_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    spec = tmp_path / "bad.ode"
    spec.write_text(f"network bad(p: int = 1) {{ input vector[4] {source} }}")
    assert main(["build", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "E260" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("network", ["os", "torch", "typing", "odedsl"])
def test_module_names_that_would_shadow_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], network: str
) -> None:
    spec = tmp_path / "shadow.ode"
    spec.write_text(f"network {network}(p: int = 1) {{ input vector[4] {STAGE} }}")
    assert main(["build", str(spec), "-o", str(tmp_path)]) == 2
    assert "would shadow" in capsys.readouterr().err


@pytest.mark.parametrize("standalone", [False, True])
@pytest.mark.parametrize("network", ["sequence", "step_", "ode_stage", "invert"])
def test_network_names_that_clash_with_runtime_imports_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], network: str, standalone: bool
) -> None:
    """Without --standalone the runtime's names are imported, not defined: a network called
    ``sequence`` (class ``Sequence``) built a file whose ``build()`` recursed until
    RecursionError, ``step_`` (``Step``) one that raised TypeError (red-team, 2026-12-02)."""
    spec = tmp_path / "clash.ode"
    spec.write_text(f"network {network}(p: int = 1) {{ input vector[4] {STAGE} }}")
    argv = ["build", str(spec), "-o", str(tmp_path / "out")]
    assert main(argv + (["--standalone"] if standalone else [])) == 2
    err = capsys.readouterr().err
    assert "E260" in err and f"rename the network '{network}'" in err and "Traceback" not in err


def test_parameter_constant_clash_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "clash.ode"
    spec.write_text(f"network clash(params: int = 1) {{ input vector[4] {STAGE} }}")
    assert main(["build", str(spec), "-o", str(tmp_path)]) == 2
    assert "PARAMS" in capsys.readouterr().err


def test_templates_print_only_vetted_code() -> None:
    env = environment()
    with pytest.raises(TypeError, match="unvetted"):
        env.from_string("x = {{ v }}").render(v="os.system('x')")
    with pytest.raises(TypeError, match="unvetted"):
        env.from_string("x = {{ v }}").render(v=1.5)
    assert env.from_string("x = {{ v }}").render(v=Code("1.5")) == "x = 1.5"


def test_vetting_helpers() -> None:
    assert literal(0.1) == "0.1" and float(literal(1 / 3)) == 1 / 3
    assert literal(True) == "True" and literal((1, 2)) == "(1, 2)" and literal((3,)) == "(3,)"
    assert literal(float("inf")) == 'float("inf")'
    for bad in ("x", b"x", object(), [object()]):
        with pytest.raises(odedsl.DslError):
            literal(bad)
    for bad in ("a-b", "1a", "", "é", "a" * 65, "class", "a\nb"):
        with pytest.raises(odedsl.DslError):
            ident(bad, "name")
    text = comment('a\nb\r"c"\\d\u2028e\x85f\x00g' + "x" * 500)
    assert not set(text) & set('\n\r"\\\u2028\x85\x00') and len(text) <= 160
    assert where('/x/"evil\n"; os.ode:3:7') == "_evil____os.ode:3:7"
    assert where("spec.ode:12:5") == "spec.ode:12:5"


# -- every refusal says what to do: the hints of the refusals a spec or `odedsl build` reaches

LONG = "s" * 65
MINE = "integrator mine({state}{params}) {{ {state} += {k}h * {res}({state}, t) }}\n"


def _net(
    stages: str = STAGE,
    *,
    net: str = "n",
    params: str = "p: int = 1",
    integrator: str = "",
) -> str:
    """A one-network spec; ``integrator``: the declaration of ``mine`` (stages then use it)."""
    if integrator:
        stages = stages.replace("integrator euler", "integrator mine")
    return f"{integrator}network {net}({params}) {{ input vector[4] {stages} }}\n"


def _mine(state: str = "x", params: str = "", k: str = "", res: str = "f") -> str:
    return MINE.format(state=state, params=params, k=k, res=res)


def _stage(name: str, residual: str = "") -> str:
    return STAGE.replace("stage s", f"stage {name}").replace("residual {", f"residual {residual}{{")


# (id, spec text, fragments of the hint, suggested rename: "old => new" or None)
HINTED = [
    (
        "long-stage",
        _net(_stage(LONG)),
        ["at most 64 characters", "letters, digits and _", "rename the stage name in the spec"],
        None,
    ),
    (
        "long-stage-class",
        _net(_stage("s" * 60)),
        [f"rename the stage '{'s' * 60}' (the stage class is derived from it)", "64"],
        None,
    ),
    (
        "long-step-class",
        _net(integrator=_mine().replace("mine", "i" * 62)).replace("mine", "i" * 62),
        [f"rename the integrator '{'i' * 62}' (the step class is derived from it)"],
        None,
    ),
    (
        "long-state",
        _net(integrator=_mine(state="x" * 70)),
        ["at most 64 characters", "rename the state variable in the spec"],
        None,
    ),
    (
        "long-residual",
        _net(_stage("s", f"{'f' * 70} = "), integrator=_mine(res="f" * 70)),
        ["at most 64 characters", "rename the residual function", "`residual NAME = { ... }`"],
        None,
    ),
    ("keyword-stage", _net(_stage("class")), ["e.g. to 'class_'"], "class => class_"),
    (
        "keyword-parameter",
        _net(integrator=_mine(params="; lambda: float = 1", k="lambda * ")),
        ["rename the integrator parameter in the spec, e.g. to 'lambda_'"],
        "lambda => lambda_",
    ),
    (
        "keyword-class",
        _net(net="none"),
        ["rename the network 'none' (the network class is derived from it)"],
        None,
    ),
    (
        "builtin-class",
        _net(net="exception"),
        ["rename the network 'exception'", "must not shadow a Python builtin"],
        None,
    ),
    (
        "module",
        _net(net="os"),
        ["rename the network in the spec, e.g. to 'my_os'", "standard-library module"],
        "os => my_os",
    ),
    (
        "train-module",
        _net(net="this"),  # train_this.py is fine, this.py shadows the stdlib's `this`
        ["e.g. to 'my_this'", "<network>.py and train_<network>.py"],
        "this => my_this",
    ),
    (
        "reserved-stage",
        _net(_stage("compile")),
        ["rename the stage in the spec, e.g. to 'compile_stage'", "torch.nn.Module"],
        "compile => compile_stage",
    ),
    (
        "reserved-stage-attribute",
        _net(_stage("input_shape")),
        ["e.g. to 'input_shape_stage'", "input_shape, output_shape, network_name"],
        "input_shape => input_shape_stage",
    ),
    (
        "residual-attribute",
        _net(_stage("s", "forward = "), integrator=_mine(res="forward")),
        ["e.g. to 'forward_fn'", "where the integrator calls it", "attributes of OdeStage"],
        "forward => forward_fn",
    ),
    (
        "constant-clash",
        _net(params="params: int = 1"),
        ["rename the network parameter 'params' (the parameter constant is derived from it)"],
        None,
    ),
    (
        "class-clash",
        _net(_stage("x"), net="x_stage"),
        ["rename the stage 'x' (the stage class", "or the network 'x_stage' (the network class"],
        None,
    ),
]


def _refusal(text: str, out: Path) -> odedsl.Diagnostic:
    with pytest.raises(odedsl.DslError) as err:
        build(text, out)
    (d,) = err.value.diagnostics
    return d


@pytest.mark.parametrize(
    ("text", "fragments", "rename"), [pytest.param(*c[1:], id=c[0]) for c in HINTED]
)
def test_name_refusals_say_what_to_rename(
    tmp_path: Path, text: str, fragments: list[str], rename: str | None
) -> None:
    d = _refusal(text, tmp_path / "out")
    assert d.code == "E260" and d.hint, d.render()
    for fragment in fragments:
        assert fragment in d.hint, d.render()
    assert not (tmp_path / "out").exists()
    if rename:  # the suggested name is accepted
        old, new = rename.split(" => ")
        assert build(re.sub(rf"\b{old}\b", new, text), tmp_path / "out")


def test_name_refusal_hint_is_printed_by_odedsl_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.ode"
    spec.write_text(_net(_stage("class")))
    assert main(["build", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "E260" in err and "hint: rename the stage name in the spec, e.g. to 'class_'" in err


REVNET = str(SPECS / "revnet.ode")
SMALL_REVNET = ["--set", "depth=2", "--set", "width=4", "--set", "size=8"]


def _build_revnet(out: Path, *extra: str) -> int:
    return main(["build", REVNET, "-o", str(out), *SMALL_REVNET, *extra])


@pytest.mark.parametrize("where_to", ["outside", "inside", "loop", "folder"])
def test_output_path_refusals_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where_to: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "revnet.py"
    if where_to == "outside":
        (tmp_path / "elsewhere.py").write_text("precious\n")
        target.symlink_to(tmp_path / "elsewhere.py")
        expected = ["never writes through links", f"remove {target}", "-o DIR"]
    elif where_to == "inside":
        (out / "mine.py").write_text("precious\n")
        target.symlink_to(out / "mine.py")
        expected = ["never links, folders", "even with --force", f"move {target} away", "-o DIR"]
    elif where_to == "loop":
        target.symlink_to(target)
        expected = ["never links, folders", "even with --force", f"move {target} away"]
    else:
        target.mkdir()
        expected = ["never links, folders", "even with --force", "-o DIR"]
    assert _build_revnet(out, "--force") == 2
    err = capsys.readouterr().err
    assert "E261" in err and "Traceback" not in err
    hint = err.split("hint: ", 1)[1]
    for fragment in expected:
        assert fragment in hint, err
    left = {"mine.py", "revnet.py"} if where_to == "inside" else {"revnet.py"}
    assert {p.name for p in out.iterdir()} == left  # nothing written, nothing removed


def test_output_folder_that_is_a_file_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    assert _build_revnet(tmp_path / "file") == 2
    err = capsys.readouterr().err
    assert "E261" in err
    hint = f"hint: choose a folder with -o DIR (it is created if missing), or move {tmp_path}"
    assert f"{hint}/file away" in err
    assert _build_revnet(tmp_path / "folder") == 0  # as the hint says: a folder, created


def test_overwrite_refusal_names_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "revnet.py").write_text("print('mine')\n")
    assert _build_revnet(tmp_path) == 2
    err = capsys.readouterr().err
    assert "hint: move it away, choose another output folder with -o DIR, or pass --force" in err


def test_internal_refusals_say_it_is_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals no spec can reach: the hint says so (and for the runtime copy, the way around)."""
    steps = importlib.import_module("odedsl.export.steps")
    vendor = importlib.import_module("odedsl.export.vendor")  # not the function of that name
    with pytest.raises(odedsl.DslError) as err:
        literal(object())
    assert err.value.diagnostics[0].hint.startswith(BUG)
    with pytest.raises(odedsl.DslError) as err:
        steps._kind("sideways")
    assert err.value.diagnostics[0].hint.startswith(BUG)
    (tmp_path / "a.py").write_text("def clash(): pass\n")
    (tmp_path / "b.py").write_text("from odedsl.runtime.a import clash\nclash = 1\n")
    monkeypatch.setattr(vendor, "RUNTIME_DIR", tmp_path)
    with pytest.raises(odedsl.DslError) as err:
        vendor.vendor(("b",))
    (d,) = err.value.diagnostics
    assert "both define clash" in d.message
    assert d.hint.startswith(BUG) and "without --standalone" in (d.hint or "")
