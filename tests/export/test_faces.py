"""The runtime API of a generated module (plain and standalone) against ``odedsl.compile``'s:
what a user calls on a stage or the network after ``build()``, and what is refused, with the
same kinds of error and the same messages."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import odedsl
from odedsl.export.context import CLASS_ATTRIBUTES

from .helpers import SPECS, import_file, small_params, write

#: Two user integrators whose coefficients read t: ``to_one``'s inverse meets 1 / (1 - t) at
#: the last layer (t + h = 1), ``half``'s forward 1 / (t - 1/2) at even depths; and a stage of
#: shared weights, which a conversion fills.
COEF = """\
integrator to_one(x) { x += h * f(x, t) / (1 - t) }
integrator half(x) { x += h * f(x, t) / (t - 0.5) }
network coef(depth: int = 3) {
    input vector[3]
    stage a = ode(depth) {
        integrator to_one
        weights tied
        backward store
        residual { linear(3) tanh }
    }
    stage b = ode(depth) {
        integrator half
        weights tied
        backward store
        residual { linear(3) tanh }
    }
    stage c = ode(depth) {
        integrator euler
        weights shared(2)
        residual { linear(3) tanh }
    }
}
"""
VARIANTS = ("plain", "standalone")


@pytest.fixture(scope="module")
def coef(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The COEF spec built both ways, once."""
    tmp = tmp_path_factory.mktemp("faces")
    spec = tmp / "coef.ode"
    spec.write_text(COEF)
    return {
        v: import_file(write(spec, tmp / v, standalone=v == "standalone")["coef.py"])
        for v in VARIANTS
    }


def _refusal(action: Callable[[Any], object], model: Any) -> tuple[type, str] | None:
    """The kind and message of what ``action(model)`` raises (``None``: nothing)."""
    try:
        action(model)
    except Exception as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_depth_or_mode_that_meets_a_singularity_is_refused_as_compiled(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """Exported code had no coefficient check: set_depth(4) put a layer of ``half`` on
    t = 1/2 and switching ``to_one`` to invert ran its inverse into 1 - 1, both a silent inf
    output where the compiled model refuses them."""
    compiled, gen = odedsl.compile(COEF), coef[variant].build()
    for model in (compiled, gen):
        assert _refusal(lambda m: m.b.set_depth(5), model) is None  # t = 0.4, 0.6: no fault
    for action in (
        lambda m: m.b.set_depth(4),
        lambda m: setattr(m.a, "backward_mode", "invert"),
    ):
        want, got = _refusal(action, compiled), _refusal(action, gen)
        assert want is not None and want[0] is ValueError and "coefficients" in want[1]
        assert got == want
    assert (gen.b.depth, str(gen.a.backward_mode)) == (5, "store")  # unchanged
    with pytest.raises(ValueError, match="the inverse of integrator 'to_one' fails"):
        coef[variant].build(backward="invert")
    y = gen(torch.randn(2, 3))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_odedsl_functions_find_the_stages_of_either_build(
    coef: dict[str, ModuleType], variant: str, tmp_path: Path
) -> None:
    """A standalone file carries its own OdeStage class, which odedsl's functions did not
    recognise: compile_steps set nothing, silently; save_checkpoint wrote no stage layouts, so
    the compiled model refused the file ("no ODE stage 'a'"), and load_checkpoint refused the
    compiled model's file ("the network's ODE stages are none")."""
    from odedsl.runtime import compile_steps

    gen = coef[variant].build()
    stages = [gen.a, gen.b, gen.c]
    compile_steps(gen, backend="aot_eager")
    assert all(s.step_compiler.options["backend"] == "aot_eager" for s in stages)
    compile_steps(gen, enabled=False)
    assert all(s.step_compiler is None for s in stages)

    compiled = odedsl.compile(COEF)
    odedsl.save_checkpoint(gen, tmp_path / "gen.pt")
    odedsl.load_checkpoint(compiled, tmp_path / "gen.pt")
    odedsl.save_checkpoint(compiled, tmp_path / "compiled.pt")
    gen.load_state_dict({k: torch.zeros_like(v) for k, v in gen.state_dict().items()})
    odedsl.load_checkpoint(gen, tmp_path / "compiled.pt")
    for key, value in compiled.state_dict().items():
        assert torch.equal(gen.state_dict()[key], value), key

    tied = odedsl.compile(COEF.replace("shared(2)", "tied"))
    gen.load_state_dict(odedsl.convert_state_dict(tied, tied.state_dict(), gen))
    x = torch.randn(2, 3)
    torch.testing.assert_close(gen(x), tied(x))


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_refuses_a_bad_dtype_or_parameter_as_compile_does(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """build(dtype="float64") was torch's "Invalid device string: 'float64'" from inside
    Module.to, and an integer dtype torch's own error; a parameter given as a string (an
    argparse value) was told to rebuild with the value the file already has."""
    build = coef[variant].build
    for dtype in ("float64", torch.int32):
        want = _refusal(lambda d: odedsl.compile(COEF, dtype=d), dtype)
        assert want is not None and _refusal(lambda d: build(dtype=d), dtype) == want
    with pytest.raises(TypeError, match=r"^depth='3': parameter 'depth' is int$"):
        build(depth="3")
    assert build(depth=3, dtype=torch.float64).a.f[0].linear1.weight.dtype == torch.float64


@pytest.mark.parametrize("name", ["resnet", "linear_resnet", "hamiltonian"])
def test_the_compiled_model_has_the_attributes_of_the_exported_class(
    name: str, tmp_path: Path
) -> None:
    """The exported class had an ``output_shape`` the compiled model lacked (a deepcopy too)."""
    from odedsl.compiler.graph import MODEL_ATTRIBUTES

    assert sorted(MODEL_ATTRIBUTES) == sorted(CLASS_ATTRIBUTES)  # and stages may not take them
    path = SPECS / f"{name}.ode"
    params = small_params(path)
    files = write(path, tmp_path, **params)
    gen = import_file(next(iter(files.values()))).build()
    compiled = odedsl.compile(path, **params)
    for model in (compiled, copy.deepcopy(compiled)):
        for attr in CLASS_ATTRIBUTES:
            assert getattr(model, attr) == getattr(gen, attr), attr
    assert compiled(torch.randn(2, *compiled.input_shape)).shape[1:] == compiled.output_shape
    assert list(compiled.state_dict()) == list(gen.state_dict())


#: Backward overrides: forms one face took and the other refused, bad values that each face
#: worded its own way, and ``invert``, whose inverse of ``to_one`` fails at the last layer.
BACKWARDS = (
    "checkpoint",
    ("checkpoint", 2),
    " checkpoint( 3 ) ",
    "store",
    "invert",
    "",
    "chekpoint",
    "checkpoint(0)",
    "checkpoint(-1)",
    "checkpoint(1.5)",
    ("checkpoint", 0),
    ("checkpoint", True),
    3,
)


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_takes_and_refuses_the_backward_modes_compile_does(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """build(backward=("checkpoint", 2)) was taken where compile wanted a string, and compile's
    bare "checkpoint" (k = 1, as in a spec) refused by build; a bad mode was a DslError from
    compile, which no ``except ValueError`` caught, and build's ValueError said it otherwise
    (checkpoint(-1) an unknown mode, not a k out of range); build(backward="") was store."""
    build = coef[variant].build
    for backward in BACKWARDS:
        want = _outcome(lambda b: odedsl.compile(COEF, backward=b), backward)
        assert _outcome(lambda b: build(backward=b), backward) == want, backward


def _outcome(make: Callable[[Any], Any], backward: object) -> tuple[object, ...]:
    """Each stage's mode, or the error's kind and message (a DslError's diagnostics' own)."""
    try:
        model = make(backward)
    except odedsl.DslError as exc:
        assert isinstance(exc, ValueError), exc  # as the runtime's refusal
        (d,) = exc.diagnostics
        return ValueError, d.message
    except (TypeError, ValueError) as exc:
        return TypeError if isinstance(exc, TypeError) else ValueError, str(exc)
    return tuple(str(s.backward_mode) for s in (model.a, model.b, model.c))


CALLER = """\
import torch


def call(model):
    return model(torch.randn(2, 3))
"""


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_approximate_gradient_warning_points_at_the_callers_line(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """As for the compiled model, the line that called the network: the plain build's warning
    pointed into its generated forward, and a standalone one past every frame of a script in
    the folder above the generated file (the runtime took that folder for odedsl's)."""
    above = Path(coef[variant].__file__).parent.parent  # where a user's script would be
    caller = above / f"caller_{variant}.py"
    caller.write_text(CALLER)
    gen = coef[variant].build()
    gen.c.backward_mode = "invert"  # euler: approximate
    with pytest.warns(Warning) as caught:
        import_file(caller).call(gen)
    # (a standalone file's warning class is its own copy)
    (warning,) = [w for w in caught if w.category.__name__ == "ApproximateGradientWarning"]
    assert (warning.filename, warning.lineno) == (str(caller), 5)
    if variant == "standalone":  # its reader may not have odedsl, nor odedsl.runtime's class
        text = str(warning.message)
        assert "`odedsl gradcheck SPEC` (with odedsl installed)" in text
        assert "this warning is an ApproximateGradientWarning (defined in coef.py)" in text


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_standalone_file_names_no_odedsl_function_as_if_it_were_there(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """A standalone file's refusals named what its user may not have: set_depth of untied
    weights odedsl.runtime.expand_state_dict (the file has its own copy), build() a rebuild
    with `odedsl build` that left out --standalone; and every `odedsl ...` command in its
    messages now says it needs odedsl installed."""
    gen = coef[variant]
    a = gen.build().a
    untied = gen.OdeStage(
        "u",
        a.program,
        {"f": lambda: torch.nn.Linear(3, 3)},
        2,
        schedule=gen.WeightSchedule("untied"),
    )
    refusals = [
        _refusal(lambda s: s.set_depth(3), untied),
        _refusal(lambda b: b(depth=4), gen.build),
    ]
    if variant == "plain":
        assert "use odedsl.runtime.expand_state_dict to build" in refusals[0][1]
        assert refusals[1][1].endswith("run `odedsl build coef.ode --set depth=4`")
        return
    assert "use expand_state_dict (defined in coef.py) to build" in refusals[0][1]
    assert refusals[1][1].endswith(
        "regenerate it with odedsl installed: `odedsl build coef.ode --standalone --set depth=4`"
    )
    tree = ast.parse(Path(gen.__file__).read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr | ast.Constant) and id(node) not in docs:
            parts = node.values if isinstance(node, ast.JoinedStr) else [node]
            text = "".join(str(v.value) for v in parts if isinstance(v, ast.Constant))
            assert "`odedsl " not in text or "odedsl installed" in text, text


@pytest.mark.parametrize("variant", VARIANTS)
def test_help_on_the_generated_classes_says_what_they_do(
    coef: dict[str, ModuleType], variant: str
) -> None:
    """help() showed torch's docstrings for the generated forward and stage __init__ ("Should
    be overridden by all subclasses"), and section comments of OdeStage as method docs."""
    import pydoc

    for cls in (coef[variant].Coef, coef[variant].AStage):
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        assert "Should be overridden" not in text and "Initialize internal Module" not in text
        assert "# ---" not in text


TYPED = """\
network typed(depth: int = 2, gamma: float = 1, on: bool = true) {
    input vector[4]
    stage body = ode(depth) { integrator euler residual linear(4) }
}
"""


def test_build_checks_parameter_types_as_compile_does(tmp_path: Path) -> None:
    """build(on=1) was accepted (1 == True), and build(depth=3.5) or build(gamma=True) told
    to regenerate with a value that compile then refuses; a whole float for an int and an int
    for a float pass, as in compile."""
    spec = tmp_path / "typed.ode"
    spec.write_text(TYPED)
    build = import_file(write(spec, tmp_path / "out")["typed.py"]).build
    for name, value in [("on", 1), ("depth", 3.5), ("depth", True), ("gamma", True)]:
        with pytest.raises(odedsl.DslError) as err:
            odedsl.compile(spec, **{name: value})
        message = err.value.diagnostics[0].message
        with pytest.raises(TypeError) as got:
            build(**{name: value})
        assert str(got.value) == message
    for name, value in [("depth", 2.0), ("gamma", 1), ("on", True)]:
        odedsl.compile(spec, **{name: value})
        build(**{name: value})
    with pytest.raises(ValueError, match=r"--set on=false`$"):  # as --set reads it, not False
        build(on=False)
