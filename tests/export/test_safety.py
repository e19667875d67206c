"""Issue 9.3: spec text never reaches generated code except as vetted identifiers and numeric
or boolean literals; comments quote only a sanitised base name, line and column."""

from __future__ import annotations

import io
import py_compile
import tokenize
from pathlib import Path

import pytest
import torch

import odedsl
from odedsl.cli.main import main
from odedsl.export.render import environment
from odedsl.export.safety import Code, comment, ident, literal, where

from .helpers import import_file, perturbed_state, run_python

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
