"""The validator: names, arguments, parameters, overrides, structure, shapes, limits, imports.

Every error class is asserted with its exact line and column.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from odedsl import DslError, Limits, load_spec

BASE = """\
network net(depth: int = 4, width: int = 8) {
    input image[3, 16, 16]
    stem { conv2d(width, kernel=3, padding=1) batchnorm2d relu }
    stage body = ode(depth) {
        integrator euler
        residual { conv2d(width, kernel=3, padding=1) relu }
    }
    head { adaptive_avgpool2d(1) flatten linear(10) }
}
"""


def errors(text: str, **params) -> list[tuple[str, int, int, str]]:
    with pytest.raises(DslError) as err:
        load_spec(text, **params)
    return [
        (d.code, d.span.line if d.span else 0, d.span.column if d.span else 0, d.message)
        for d in err.value.diagnostics
        if d.severity == "error"
    ]


def one_error(text: str, **params) -> tuple[str, int, int, str]:
    found = errors(text, **params)
    assert len(found) == 1, found
    return found[0]


def test_valid_spec_resolves_everything() -> None:
    spec = load_spec(BASE)
    net = spec.network
    assert net.name == "net" and net.input_shape == (3, 16, 16)
    assert net.output_shape == (10,)
    (stage,) = net.stages
    assert stage.depth == 4 and stage.step == pytest.approx(0.25)
    assert stage.weights == "untied" and stage.backward == "store"
    assert stage.shape == (8, 16, 16)
    assert stage.slots == 4
    conv_params = 8 * 8 * 9 + 8
    assert stage.parameters == 4 * conv_params
    stem_params = 3 * 8 * 9 + 8 + 2 * 8
    assert net.parameters == stem_params + 4 * conv_params + 8 * 10 + 10
    assert [layer.name for layer in net.parts[0].body.layers] == ["conv1", "bn1", "relu1"]


def test_overrides_and_arithmetic() -> None:
    spec = load_spec(BASE.replace("width: int = 8", "width: int = 2 * 4 + depth"), depth=8)
    assert spec.network.params == {"depth": 8, "width": 16}
    assert spec.network.stages[0].depth == 8


@pytest.mark.parametrize(
    ("old", "new", "code", "line", "col", "message"),
    [
        (
            "conv2d(width, kernel=3, padding=1) batchnorm2d",
            "conv3d(width) batchnorm2d",
            "E201",
            3,
            12,
            "unknown layer or block 'conv3d'",
        ),
        (
            "kernel=3, padding=1) batchnorm2d",
            "kernal=3, padding=1) batchnorm2d",
            "E202",
            3,
            26,
            "conv2d has no argument 'kernal'",
        ),
        ("linear(10)", "linear(0)", "E202", 8, 49, "argument 'out'"),
        ("linear(10)", "linear(true)", "E202", 8, 49, "argument 'out'"),
        ("linear(10)", "linear(10, init=ones)", "E202", 8, 58, "argument 'init'"),
        ("linear(10)", "linear()", "E203", 8, 42, "missing argument 'out'"),
        ("integrator euler", "integrator eulr", "E200", 5, 20, "unknown integrator 'eulr'"),
        ("ode(depth)", "ode(depth - 4)", "E205", 4, 22, "depth must be at least 1"),
        ("ode(depth)", "ode(dept)", "E200", 4, 22, "unknown name 'dept'"),
        ("ode(depth)", "ode(depth / 0)", "E206", 4, 22, "division by zero"),
        ("input image[3, 16, 16]", "input image[3, 16]", "E220", 2, 5, "image input has 3"),
        ("input image[3, 16, 16]", "input picture[3, 16, 16]", "E200", 2, 5, "input kind"),
        ("relu }\n    stage", "relu }\n    stem { relu }\n    stage", "E210", 4, 5, "stem"),
        ("adaptive_avgpool2d(1) flatten linear(10)", "linear(10)", "E220", 8, 12, "linear needs"),
        (
            "residual { conv2d(width, kernel=3, padding=1) relu }",
            "residual { conv2d(width, kernel=3) relu }",
            "E220",
            6,
            9,
            "residual 'f' maps [8, 16, 16] to [8, 14, 14]",
        ),
        (
            "integrator euler",
            "integrator euler\n        weights shared(9)",
            "E205",
            6,
            24,
            "shared(9) has more groups",
        ),
        (
            "integrator euler",
            "integrator euler\n        weights interpolated(1)",
            "E205",
            6,
            30,
            "interpolated(k) needs k ≥ 2",
        ),
        (
            "integrator euler",
            "integrator euler\n        weights sharded(2)",
            "E230",
            6,
            17,
            "unknown weights rule 'sharded'",
        ),
        (
            "integrator euler",
            "integrator euler\n        backward invrt",
            "E230",
            6,
            18,
            "unknown backward mode 'invrt'",
        ),
        (
            "integrator euler",
            "integrator euler\n        integrator heun",
            "E230",
            6,
            9,
            "states 'integrator' twice",
        ),
        (
            "integrator euler",
            "integrator euler\n        step -1",
            "E205",
            6,
            14,
            "step must be positive",
        ),
        (
            "integrator euler",
            "integrator euler(gamma=0.5)",
            "E230",
            5,
            26,
            "has no parameter 'gamma'",
        ),
    ],
)
def test_error_classes_are_located(
    old: str, new: str, code: str, line: int, col: int, message: str
) -> None:
    text = BASE.replace(old, new)
    assert text != BASE
    found = errors(text)
    assert any(c == code and (ln, cl) == (line, col) and message in m for c, ln, cl, m in found), (
        found
    )


def test_all_errors_of_a_file_at_once() -> None:
    text = BASE.replace("batchnorm2d relu", "batchnrm2d relu").replace("linear(10)", "linar(10)")
    found = errors(text)
    assert [(c, ln) for c, ln, _, _ in found] == [("E201", 3), ("E201", 8)]


def test_an_evaluation_error_in_a_residual_of_two_functions_is_reported_once() -> None:
    """A Hamiltonian stage's one `residual` serves f and g: a block argument that is not an
    int was reported twice, identically (evaluation errors bypassed the collector's dedup)."""
    text = (
        BASE.replace("integrator euler", "integrator hamiltonian").replace(
            "residual { conv2d(width, kernel=3, padding=1) relu }", "residual half(width / 3)"
        )
        + "block half(c: int) { conv2d(c, kernel=3, padding=1) relu }\n"
    )
    found = errors(text)
    assert [c for c, _, _, _ in found] == ["E204"], found
    assert found[0][3].startswith("expected an int, got 2.66")


def test_did_you_mean_hints() -> None:
    with pytest.raises(DslError) as err:
        load_spec(BASE.replace("batchnorm2d relu", "batchnorm2 relu"))
    assert err.value.diagnostics[0].hint == "did you mean 'batchnorm2d'?"


def test_bad_overrides() -> None:
    (code, _, _, message) = one_error(BASE, dpth=3)
    assert code == "E130" and "no parameter 'dpth'" in message
    (code, _, _, message) = one_error(BASE, depth="deep")
    assert code == "E130" and "depth" in message


def test_blocks_with_arguments_and_nested_blocks() -> None:
    text = (
        BASE.replace(
            "residual { conv2d(width, kernel=3, padding=1) relu }", "residual outer(width)"
        )
        + """
block outer(c: int) { inner(c, k=3) inner(c) }
block inner(c: int, k: int = 1) { conv2d(c, kernel=k, padding=k // 2) relu }
"""
    )
    spec = load_spec(text)
    names = [layer.name for layer in spec.network.stages[0].residuals["f"].layers]
    assert names == ["conv1", "relu1", "conv2", "relu2"]
    kernels = [
        layer.args["kernel"]
        for layer in spec.network.stages[0].residuals["f"].layers
        if layer.kind == "conv2d"
    ]
    assert kernels == [3, 1]


def test_recursive_block_is_an_error() -> None:
    text = (
        BASE.replace("residual { conv2d(width, kernel=3, padding=1) relu }", "residual a(width)")
        + "block a(c: int) { b(c) }\nblock b(c: int) { a(c) }\n"
    )
    found = errors(text)
    assert any(c == "E210" and "calls itself" in m for c, _, _, m in found), found


def test_exponential_block_expansion_is_refused() -> None:
    blocks = "".join(f"block b{i}(c: int) {{ b{i + 1}(c) b{i + 1}(c) }}\n" for i in range(20))
    blocks += "block b20(c: int) { relu }\n"
    text = (
        BASE.replace("residual { conv2d(width, kernel=3, padding=1) relu }", "residual b0(width)")
        + blocks
    )
    found = errors(text)
    assert any(c == "E250" and "layers after expanding blocks" in m for c, _, _, m in found)


def test_resource_limits() -> None:
    assert one_error(BASE, depth=10**9)[0] == "E250"
    found = errors(BASE, width=10**9)
    assert [(c, ln) for c, ln, _, _ in found] == [("E250", 3), ("E250", 6)]
    code, _, _, message = errors(BASE, limits=Limits(max_parameters=1000))[0]
    assert code == "E250" and "budget" in message


def test_shapes_through_stages_and_transitions() -> None:
    text = """\
network two(depth: int = 2) {
    input image[3, 16, 16]
    stem { conv2d(8, kernel=3, padding=1) }
    stage a = ode(depth) { integrator euler residual { conv2d(8, kernel=3, padding=1) } }
    transition { avgpool(2) pad_channels(16) }
    stage b = ode(depth) { integrator euler residual { conv2d(16, kernel=3, padding=1) } }
    head { flatten linear(10) }
}
"""
    spec = load_spec(text)
    a, b = spec.network.stages
    assert a.shape == (8, 16, 16) and b.shape == (16, 8, 8)
    assert spec.network.parts[2].name == "transition1"
    bad = text.replace("pad_channels(16)", "pad_channels(12)")
    code, line, col, message = errors(bad)[0]
    assert (code, line, col) == ("E220", 6, 5) or "maps" in message


def test_antisymmetric_and_transpose() -> None:
    text = BASE.replace(
        "residual { conv2d(width, kernel=3, padding=1) relu }",
        "residual { conv2d(4, kernel=3, padding=1) as K relu transpose(K) "
        "conv2d(width, kernel=3, padding=1, constraint=antisymmetric) }",
    )
    spec = load_spec(text)
    layers = spec.network.stages[0].residuals["f"].layers
    assert layers[2].kind == "transpose" and layers[2].ref == "conv1"
    assert layers[2].out_shape == (8, 16, 16)
    bad = text.replace("transpose(K)", "transpose(Q)")
    assert errors(bad)[0][0] == "E200"
    bad = text.replace("constraint=antisymmetric)", "constraint=antisymmetric, stride=2)")
    assert errors(bad)[0][0] == "E220"


def test_no_network_and_missing_parts() -> None:
    assert one_error("block a() { relu }")[0] == "E210"
    assert one_error("network n() { stem { relu } }")[0] == "E210"
    assert "no ODE stage" in errors("network n() { input vector[3] head { relu } }")[0][3]


def test_imports_confined_and_cycles(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.ode").write_text("block unit(c: int) { conv2d(c, kernel=1) }\n")
    main = tmp_path / "main.ode"
    main.write_text(
        'import "lib/blocks.ode"\n'
        + BASE.replace(
            "residual { conv2d(width, kernel=3, padding=1) relu }", "residual unit(width)"
        )
    )
    assert load_spec(main).network.stages[0].residuals["f"].layers[0].kind == "conv2d"

    for path, code in [
        ("/etc/passwd.ode", "E111"),
        ("../outside.ode", "E111"),
        ("lib/missing.ode", "E110"),
        ("C:/x.ode", "E111"),
        ("lib/blocks.txt", "E111"),
    ]:
        main.write_text(f'import "{path}"\n' + BASE)
        with pytest.raises(DslError) as err:
            load_spec(main)
        d = err.value.diagnostics[0]
        assert (d.code, d.span.line, d.span.column) == (code, 1, 1), (path, d)

    (tmp_path / "a.ode").write_text('import "b.ode"\n')
    (tmp_path / "b.ode").write_text('import "a.ode"\n')
    main.write_text('import "a.ode"\n' + BASE)
    with pytest.raises(DslError) as err:
        load_spec(main)
    d = err.value.diagnostics[0]
    assert d.code == "E112" and "a.ode → b.ode → a.ode" in d.message
    assert d.span.file.endswith("b.ode")


def test_hints_of_imports_from_spec_text_name_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec text (stdin, a string) has no folder of its own: its imports start from the
    current folder, and the hints say that rather than name an importing file's folder; an
    import from a file still names the file's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.ode").write_text('import "xyzzyx.ode"\n')
    for path, file_hint in [
        ("qqq.ode", "the path is relative to the importing file's folder"),
        ("/abs.ode", "imports are relative to the importing file, inside the spec's folder"),
    ]:
        with pytest.raises(DslError) as err:
            load_spec(f'import "{path}"\n' + BASE)
        hint = err.value.diagnostics[0].hint
        assert "the current folder (the spec is text, not a file)" in hint, hint
        (tmp_path / "main.ode").write_text(f'import "{path}"\n' + BASE)
        with pytest.raises(DslError) as err:
            load_spec(tmp_path / "main.ode")
        assert err.value.diagnostics[0].hint == file_hint
    with pytest.raises(DslError) as err:  # a file imported by text: its own folder
        load_spec('import "lib/a.ode"\n' + BASE)
    assert err.value.diagnostics[0].hint == "the path is relative to the importing file's folder"


def test_imports_that_cannot_be_opened(tmp_path: Path) -> None:
    """A symlink loop and a file name longer than the system allows: located, no traceback."""
    (tmp_path / "loop.ode").symlink_to("loop.ode")
    main = tmp_path / "main.ode"
    for path, fragment in [("loop.ode", "loop"), ("a" * 300 + ".ode", "too long")]:
        main.write_text(f'import "{path}"\n' + BASE)
        with pytest.raises(DslError) as err:
            load_spec(main)
        d = err.value.diagnostics[0]
        assert (d.code, d.span.line, d.span.column) == ("E110", 1, 1), (path, d)
        assert "cannot be opened" in d.message and fragment in d.message.lower()


def test_deep_import_chain(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}.ode").write_text(f'import "f{i + 1}.ode"\n')
    (tmp_path / "f20.ode").write_text("")
    main = tmp_path / "main.ode"
    main.write_text('import "f0.ode"\n' + BASE)
    with pytest.raises(DslError) as err:
        load_spec(main)
    assert err.value.diagnostics[0].code == "E113"


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DslError) as err:
        load_spec(tmp_path / "nope.ode")
    assert err.value.diagnostics[0].code == "E110"
    latin = tmp_path / "latin.ode"
    latin.write_bytes(b"network n() {\n    input vector[4] \xaa\n}\n")
    with pytest.raises(DslError) as err:
        load_spec(latin)
    d = err.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.column) == ("E110", 2, 21)
    assert "byte 34: 0xaa" in d.message and "^" in err.value.render()
    bom = tmp_path / "bom.ode"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.encode())  # as some editors save UTF-8
    assert load_spec(bom).network.stages
    binary = tmp_path / "bin.ode"
    binary.write_bytes(b"\xff\xfe\x00network")
    with pytest.raises(DslError) as err:
        load_spec(binary)
    assert err.value.diagnostics[0].code == "E110"


def test_duplicate_definitions() -> None:
    text = BASE + "block a() { relu }\nblock a() { tanh }\n"
    code, line, col, _ = one_error(text)
    assert (code, line, col) == ("E120", 11, 1)
    code, _, _, message = one_error(BASE + "integrator euler(x) { x += h * f(x, t) }\n")
    assert code == "E120" and "standard library" in message


SPECS = sorted(
    p for p in Path(__file__).parents[2].joinpath("specs").glob("*.ode") if p.name != "blocks.ode"
)  # blocks.ode is a library: no network


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_specs_validate(spec: Path) -> None:
    net = load_spec(spec).network
    assert net.stages and net.parameters > 0
