"""Hypothesis strategies for VALID odedsl specs, built from the grammar's constructs.

The generator tracks every shape itself (it is the independent reference the tests compare the
validator and the compiled model against): ``GeneratedSpec.output_shape`` is what the network
must produce, computed here without odedsl. Sizes stay tiny (channels ≤ 8, spatial ≤ 8,
depth ≤ 4) so that a generated network compiles and runs in milliseconds.

Covered: network parameters (typed and untyped) and integer arithmetic over them (+ - * // %
^ min max abs int round floor ceil), stems / transitions / heads of random registry layers
with sane arguments, stages with every standard integrator and random step / weights /
backward clauses, one or two residual functions (named or shared), `as K` + `transpose(K)`,
blocks with arguments calling earlier blocks, and user-written integrators (explicit
Runge–Kutta-like, additive split, affine momentum-like, two-step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

Draw = Callable[[st.SearchStrategy[Any]], Any]
Shape = tuple[int, ...]

ONE_RESIDUAL = ("euler", "heun", "rk4", "midpoint", "leapfrog", "momentum", "reversible_heun")
SPLIT = ("hamiltonian", "additive_coupling")
STANDARD = ONE_RESIDUAL + SPLIT
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu")


@dataclass(frozen=True)
class UserIntegrator:
    """A generated integrator declaration and what a stage needs to use it."""

    name: str
    text: str
    residuals: tuple[str, ...]
    split: bool
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """A generated block: shape-preserving on ``kind`` states with ``c`` channels/features."""

    name: str
    kind: str  # "image" | "vector"
    extra: tuple[str, ...]  # optional parameters after c (float, with defaults)
    text: str


@dataclass
class GeneratedSpec:
    """The text of a valid spec and the facts the generator knows independently."""

    text: str  # the main file
    input_shape: Shape
    output_shape: Shape
    stages: list[dict[str, Any]]
    overrides: dict[str, int] = field(default_factory=dict)
    library: str | None = None  # definitions the main file imports as "lib/defs.ode"

    @property
    def files(self) -> dict[str, str]:
        """File name (relative to the spec's folder) → text; the main file is ``main.ode``."""
        out = {"main.ode": self.text}
        if self.library is not None:
            out["lib/defs.ode"] = self.library
        return out


@dataclass
class _Ctx:
    draw: Draw
    env: dict[str, int]  # integer size parameters visible here (name -> value)
    depths: dict[str, int] = field(default_factory=dict)  # depth parameters (overridable)
    blocks: list[Block] = field(default_factory=list)
    integrators: list[UserIntegrator] = field(default_factory=list)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


# ---------------------------------------------------------------------------- expressions
def int_expr(ctx: _Ctx, value: int, depth: int = 2) -> str:
    """Text of an expression that odedsl evaluates to the int ``value`` in ``ctx.env``.

    Only int-preserving operations: layer arguments are strict ints (pydantic strict mode).
    """
    draw = ctx.draw
    same = [n for n, v in ctx.env.items() if v == value]
    choices = ["lit"] * 3
    if same:
        choices += ["param"] * 3
    if depth > 0:
        choices += ["add", "sub", "mul", "floordiv", "mod", "minmax", "func", "paren", "neg"]
        if ctx.env:
            choices += ["via_param"] * 2
        if value > 0 and (value & (value - 1)) == 0:
            choices.append("pow")
    how = draw(st.sampled_from(choices))
    sub = lambda v: int_expr(ctx, v, depth - 1)  # noqa: E731
    if how == "lit":
        return str(value) if value >= 0 else f"({value})"
    if how == "param":
        return draw(st.sampled_from(same))
    if how == "via_param":
        name = draw(st.sampled_from(sorted(ctx.env)))
        return f"({name} + {sub(value - ctx.env[name])})"
    if how == "add":
        a = draw(st.integers(-3, 3))
        return f"({sub(a)} + {sub(value - a)})"
    if how == "sub":
        a = draw(st.integers(0, 3))
        return f"({sub(value + a)} - {sub(a)})"
    if how == "mul":
        k = draw(st.sampled_from([d for d in (1, 2, 3) if value % d == 0]))
        return (
            f"{sub(k)} * {sub(value // k)}" if draw(st.booleans()) else f"({sub(value // k)} * {k})"
        )
    if how == "floordiv":
        k = draw(st.integers(1, 3))
        r = draw(st.integers(0, k - 1))
        return f"({sub(value * k + r)} // {k})"
    if how == "mod":
        k = draw(st.integers(value + 1, value + 4)) if value >= 0 else None
        if k is None:
            return str(value) if value >= 0 else f"({value})"
        return f"({sub(value + k)} % {k})"
    if how == "minmax":
        j = draw(st.integers(0, 2))
        if draw(st.booleans()):
            return f"min({sub(value)}, {sub(value + j)})"
        return f"max({sub(value - j)}, {sub(value)})"
    if how == "func":
        f = draw(st.sampled_from(["abs", "int", "round", "floor", "ceil"]))
        if f == "abs":
            inner = f"abs({sub(-abs(value))})" if draw(st.booleans()) else f"abs({sub(abs(value))})"
            return inner if value >= 0 else f"(-{inner})"
        return f"{f}({sub(value)})"
    if how == "paren":
        return f"({sub(value)})"
    if how == "neg":
        return f"-{sub(-value)}" if value != 0 else "-0"
    assert how == "pow"
    k = value.bit_length() - 1
    return f"2 ^ {k}" if k else "2 ^ 0"


def float_expr(ctx: _Ctx, value: float) -> str:
    """A float-valued expression (for rates and constants; never a layer size)."""
    how = ctx.draw(st.sampled_from(["lit", "half", "sum"]))
    if how == "lit":
        return repr(value)
    if how == "half":
        return f"{value * 2!r} / 2"
    return f"({value / 4!r} + {value * 3 / 4!r})"


# ---------------------------------------------------------------------------- layers
def _sep(ctx: _Ctx) -> str:
    return ctx.draw(st.sampled_from([" ", "; ", "\n        ", " # note\n        "]))


def preserving_layer(ctx: _Ctx, shape: Shape, in_block: bool = False) -> list[str]:
    """Statements of one shape-preserving step on ``shape`` (a residual or block body)."""
    draw = ctx.draw
    c = shape[0]
    cexpr = int_expr(ctx, c)
    image = len(shape) == 3
    options = ["act", "act", "identity", "scale", "dropout", "norm", "layernorm", "groupnorm"]
    options += ["leaky", "lin", "lin", "transpose", "anti"]
    if image:
        options += ["pool", "dropout2d", "convt"]
    pick = draw(st.sampled_from(options))
    if pick == "act":
        return [draw(st.sampled_from(ACTIVATIONS))]
    if pick == "identity":
        return ["identity"]
    if pick == "scale":
        return [f"scale({float_expr(ctx, draw(st.sampled_from([0.5, 1.0, 0.25, -0.5])))})"]
    if pick == "leaky":
        return [f"leaky_relu(slope={draw(st.sampled_from(['0.1', '0.01', '0.2']))})"]
    if pick == "dropout":
        return [f"dropout({draw(st.sampled_from(['0.1', '0.0', '0.25']))})"]
    if pick == "dropout2d":
        return [f"dropout2d(p={draw(st.sampled_from(['0.1', '0.2']))})"]
    if pick == "norm":
        name = "batchnorm2d" if image else "batchnorm1d"
        arg = draw(st.sampled_from(["", "(init=zeros)", "(eps=1e-3)", "(momentum=0.2)"]))
        return [name + arg]
    if pick == "layernorm":
        return [draw(st.sampled_from(["layernorm", "layernorm(affine=false)"]))]
    if pick == "groupnorm":
        g = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
        return [f"groupnorm({int_expr(ctx, g)})"]
    if pick == "pool":
        kind = draw(st.sampled_from(["avgpool", "maxpool"]))
        return [f"{kind}(3, stride=1, padding=1)"]
    if pick == "convt":
        return [f"conv_transpose2d({cexpr}, kernel=3, padding=1)"]
    if pick == "anti":
        if image:
            return [f"conv2d({cexpr}, kernel=3, padding=1, constraint=antisymmetric)"]
        return [f"linear({cexpr}, constraint=antisymmetric)"]
    if pick == "transpose":
        k = ctx.fresh(draw(st.sampled_from(["K", "W", "Kz"])))
        mid = draw(st.integers(1, 6))
        act = draw(st.sampled_from(ACTIVATIONS))
        bias = draw(st.sampled_from(["", ", bias=true"]))
        if image:
            pad = draw(st.sampled_from([0, 1]))
            first = f"conv2d({int_expr(ctx, mid)}, kernel={2 * pad + 1}, padding={pad}) as {k}"
        else:
            first = f"linear({int_expr(ctx, mid)}) as {k}"
        return [first, act, f"transpose({k}{bias})"]
    # "lin": a channel-preserving conv / linear, optionally bias-free. Not zero-initialised: an
    # exactly constant activation fed through stacked normalisations overflows in plain
    # autograd too (found at 1 in 3,000), a property of the network, not of odedsl.
    extra = draw(st.sampled_from(["", ", bias=false"]))
    if image:
        k = draw(st.sampled_from([1, 3]))
        kw = draw(st.booleans())
        kernel = f"kernel={k}" if kw else str(k)
        groups = ""
        if c % 2 == 0 and draw(st.booleans()):
            groups = ", groups=2"
        return [f"conv2d({cexpr}, {kernel}, padding={k // 2}{groups}{extra})"]
    return [f"linear({cexpr}{extra})"]


def preserving_seq(ctx: _Ctx, shape: Shape, kind: str, max_layers: int = 4) -> list[str]:
    """A shape-preserving sequence: layers and calls of earlier blocks of the same kind."""
    draw = ctx.draw
    out: list[str] = []
    for _ in range(draw(st.integers(1, max_layers))):
        usable = [b for b in ctx.blocks if b.kind == kind]
        if usable and draw(st.integers(0, 3)) == 0:
            out.append(block_call(ctx, draw(st.sampled_from(usable)), shape[0]))
        else:
            out.extend(preserving_layer(ctx, shape))
    return out


def block_call(ctx: _Ctx, block: Block, c: int) -> str:
    draw = ctx.draw
    args = [int_expr(ctx, c)] if draw(st.booleans()) else [f"c={int_expr(ctx, c)}"]
    for name in block.extra:
        if draw(st.booleans()):
            args.append(f"{name}={draw(st.sampled_from(['0.5', '0.25', '1.0']))}")
    return f"{block.name}({', '.join(args)})"


def make_block(ctx: _Ctx, kind: str) -> Block:
    """A block ``name(c: int, ...)`` preserving a ``kind`` state of ``c`` channels.

    Its body can only see its own parameters, so it is generated for a representative ``c``
    and expressed in ``c``: channel arguments are ``c`` itself (any c), groups 1 or c.
    """
    draw = ctx.draw
    name = ctx.fresh("blk")
    extra = ("s",) if draw(st.booleans()) else ()
    outer_env = ctx.env
    ctx.env = {}  # a block body sees only its parameters, whose value is unknown here
    body: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        usable = [b for b in ctx.blocks if b.kind == kind]
        r = draw(st.integers(0, 5))
        if usable and r == 0:
            callee = draw(st.sampled_from(usable))
            body.append(f"{callee.name}(c)" if draw(st.booleans()) else f"{callee.name}(c=c)")
        elif r == 1 and extra:
            body.append("scale(s)")
        elif r == 2:
            conv = "conv2d(c, kernel=3, padding=1" if kind == "image" else "linear(c"
            k = ctx.fresh("K")
            body.extend([f"{conv}) as {k}", draw(st.sampled_from(ACTIVATIONS)), f"transpose({k})"])
        elif r == 3:
            body.append("conv2d(c, kernel=3, padding=1)" if kind == "image" else "linear(c)")
        elif r == 4:
            body.append(draw(st.sampled_from(["groupnorm(1)", "groupnorm(c)", "layernorm"])))
        else:
            body.append(draw(st.sampled_from(ACTIVATIONS)))
    ctx.env = outer_env
    params = "c: int" + (", s: float = 0.5" if extra else "")
    sep = _sep(ctx)
    text = f"block {name}({params}) {{\n        {sep.join(body)}\n}}\n"
    block = Block(name, kind, extra, text)
    ctx.blocks.append(block)
    return block


# ---------------------------------------------------------------------------- integrators
def make_integrator(ctx: _Ctx) -> UserIntegrator:
    """A user-written integrator of one of four families, with random constants."""
    draw = ctx.draw
    name = ctx.fresh("my_int")
    family = draw(st.sampled_from(["rk", "split", "affine", "two_step"]))
    if family == "rk":
        c = draw(st.sampled_from(["0.5", "1", "1 / 3", "0"]))
        b2 = draw(st.sampled_from(["0.5", "0.25", "0"]))
        scale = draw(st.sampled_from(["h", "h * sqrt(4) / 2", "h * 1", "(h + 0)"]))
        text = (
            f"integrator {name}(x) {{\n"
            f"    k1 = f(x, t)\n"
            f"    k2 = f(x + {c} * h * k1, t + {c} * h)\n"
            f"    x += {scale} * ((1 - {b2}) * k1 + {b2} * k2)\n}}\n"
        )
        return UserIntegrator(name, text, ("f",), False)
    if family == "split":
        c = draw(st.sampled_from(["0", "1", "0.5"]))
        op = draw(st.sampled_from(["+=", "-="]))
        text = (
            f"integrator {name}(y, z) split channels {{\n"
            f"    y += h * f(z, t)\n    z {op} h * g(y, t + {c} * h)\n}}\n"
        )
        return UserIntegrator(name, text, ("f", "g"), True)
    if family == "affine":
        g = draw(st.sampled_from(["0.9", "0.5", "1.0"]))
        # a first layer of its own (a start block) half the time: a half kick from rest
        start = draw(st.booleans())
        first = "    start {\n        v += h / 2 * f(x, t)\n        x += h * v\n    }\n"
        text = (
            f"integrator {name}(x, v = 0; beta: float = {g}) {{\n"
            + (first if start else "")
            + "    v = beta * v + (1 - beta) * f(x, t)\n    x += h * v\n}\n"
        )
        return UserIntegrator(name, text, ("f",), False, ("beta",))
    c = draw(st.sampled_from(["1", "-1"]))
    body = "prev + 2 * h * f(x, t)" if c == "1" else "2 * x - prev - h^2 * f(x, t)"
    text = (
        f"integrator {name}(x) two_step {{\n"
        f"    start {{ next = x + h * f(x, t) }}\n    next = {body}\n}}\n"
    )
    return UserIntegrator(name, text, ("f",), False)


# ---------------------------------------------------------------------------- stages
def stage_text(ctx: _Ctx, name: str, shape: Shape, info: dict[str, Any]) -> str:
    """One ``stage`` declaration on ``shape``; facts about it are written into ``info``."""
    draw = ctx.draw
    kind = "image" if len(shape) == 3 else "vector"
    split_ok = shape[0] % 2 == 0
    users = [u for u in ctx.integrators if split_ok or not u.split]
    names = list(ONE_RESIDUAL) + (list(SPLIT) if split_ok else [])
    use_user = bool(users) and draw(st.integers(0, 2)) == 0
    if use_user:
        user = draw(st.sampled_from(users))
        integrator, residuals, split = user.name, user.residuals, user.split
        args = f"(beta={draw(st.sampled_from(['0.8', '0.95']))})" if user.params else ""
    else:
        integrator = draw(st.sampled_from(names))
        split = integrator in SPLIT
        residuals = ("f", "g") if split else ("f",)
        args = ""
        if integrator == "momentum" and draw(st.booleans()):
            args = f"(gamma={float_expr(ctx, draw(st.sampled_from([0.5, 0.9, 1.0])))})"
    depth_param = draw(st.sampled_from(sorted(ctx.depths)))
    if draw(st.booleans()):
        depth_text = depth_param  # follows an override of the parameter
    else:
        depth_param, depth_text = "", int_expr(ctx, draw(st.integers(1, 4)))
    info.update(integrator=integrator, depth_param=depth_param, depth_text=depth_text)
    lines = [f"    stage {name} = ode({depth_text}) {{"]
    clauses = [f"integrator {integrator}{args}"]
    if not use_user and integrator == "euler" and draw(st.booleans()):
        clauses = [] if draw(st.booleans()) else clauses  # euler is the default integrator
    if draw(st.integers(0, 3)) == 0:
        clauses.append(f"step {draw(st.sampled_from(['1 / (' + depth_text + ')', '0.5', '0.25']))}")
    weights = draw(st.sampled_from(["", "tied", "untied", "shared", "interpolated"]))
    if weights == "shared":
        # depth may be overridden later; shared(k) needs k <= depth, so k = 1
        weights = "shared(1)"
    elif weights == "interpolated":
        weights = f"interpolated({draw(st.integers(2, 4))})"
    if weights:
        clauses.append(f"weights {weights}")
    backward = draw(st.sampled_from(["", "store", "invert", "checkpoint", "checkpoint(2)"]))
    if backward:
        clauses.append(f"backward {backward}")
    info["backward"] = backward or "store"
    state = (shape[0] // 2, *shape[1:]) if split else shape
    bodies: list[tuple[str | None, list[str]]] = []
    if len(residuals) == 1 or draw(st.booleans()):
        bodies = [(None if draw(st.booleans()) else residuals[0], [])]
        if len(residuals) == 2:
            bodies = [(None, [])]
    else:
        bodies = [(r, []) for r in residuals]
        if draw(st.booleans()):
            bodies.reverse()
    for i, (rname, _) in enumerate(bodies):
        usable = [b for b in ctx.blocks if b.kind == kind]
        head = "residual " + (f"{rname} = " if rname else "")
        single = preserving_layer(ctx, state)
        if usable and draw(st.integers(0, 3)) == 0:
            bodies[i] = (rname, [head + block_call(ctx, draw(st.sampled_from(usable)), state[0])])
        elif len(single) == 1 and draw(st.integers(0, 3)) == 0:
            bodies[i] = (rname, [head + single[0]])  # the `residual layer_call` form
        else:
            seq = preserving_seq(ctx, state, kind)
            bodies[i] = (rname, [head + "{ " + _sep(ctx).join(seq) + " }"])
    clauses += [text for _, body in bodies for text in body]
    clauses = draw(st.permutations(clauses))  # clause order is free in a stage
    lines += [f"        {c}" for c in clauses]
    lines.append("    }")
    return "\n".join(lines)


def transition(ctx: _Ctx, shape: Shape, even: bool) -> tuple[list[str], Shape]:
    """Shape-changing layers; the result has an even channel count when ``even``."""
    draw = ctx.draw
    layers: list[str] = []
    c = shape[0]
    target = draw(st.integers(2, 8))
    if even and target % 2:
        target += 1
    if len(shape) == 3:
        s = shape[1]
        if s >= 4 and draw(st.booleans()):
            layers.append(f"{draw(st.sampled_from(['avgpool', 'maxpool']))}(2)")
            s //= 2
        how = draw(st.sampled_from(["pad", "conv", "conv", "convt"]))
        if how == "pad" and target >= c:
            layers.append(f"pad_channels({int_expr(ctx, target)})")
        elif how == "convt":  # kernel 3, padding 1, stride 1: the size is kept
            layers.append(f"conv_transpose2d({int_expr(ctx, target)}, 3, padding=1)")
        else:
            stride = draw(st.sampled_from([1, 1, 2])) if s >= 4 else 1
            layers.append(f"conv2d({int_expr(ctx, target)}, kernel=3, padding=1, stride={stride})")
            s = (s - 1) // stride + 1
        out: Shape = (target, s, s)
    else:
        if target >= c and draw(st.booleans()):
            layers.append(f"pad_channels({int_expr(ctx, target)})")
        else:
            layers.append(f"linear({int_expr(ctx, target)})")
        out = (target,)
    for _ in range(draw(st.integers(0, 2))):  # any registry layer that keeps the shape
        layers.extend(preserving_layer(ctx, out))
    return layers, out


@st.composite
def valid_specs(draw: Draw, max_stages: int = 3, user_integrators: bool = True) -> GeneratedSpec:
    """A random valid spec (text) with its independently computed input/output shapes."""
    ctx = _Ctx(draw, {})
    # network parameters: depth parameters (overridable) and a few integer sizes
    params: list[str] = []
    n_depth = draw(st.integers(1, 2))
    for i in range(n_depth):
        name = f"depth{i}" if i else "depth"
        value = draw(st.integers(1, 4))
        typed = draw(st.booleans())
        params.append(f"{name}{': int' if typed else ''} = {int_expr(ctx, value)}")
        ctx.depths[name] = value
    for _ in range(draw(st.integers(0, 3))):
        name = ctx.fresh("w")
        value = draw(st.integers(1, 8))
        params.append(f"{name}: int = {int_expr(ctx, value)}")
        ctx.env[name] = value
    if draw(st.booleans()):
        params.append("rate: float = 0.5")
    if draw(st.booleans()):
        params.append('label: str = "x"')

    image = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        make_block(ctx, draw(st.sampled_from(["image", "vector"])))
    if user_integrators:
        for _ in range(draw(st.integers(0, 2))):
            ctx.integrators.append(make_integrator(ctx))

    items: list[str] = []
    if image:
        shape: Shape = (draw(st.integers(1, 3)), *(2 * [draw(st.integers(3, 8))]))
        dims = ", ".join(int_expr(ctx, d) for d in shape)
        items.append(f"    input image[{dims}]")
    else:
        shape = (draw(st.integers(1, 6)),)
        items.append(f"    input vector[{int_expr(ctx, shape[0])}]")
    input_shape = shape

    if image or draw(st.booleans()):
        layers, shape = transition(ctx, shape, even=draw(st.booleans()))
        if image and draw(st.booleans()):
            layers += ["batchnorm2d", draw(st.sampled_from(ACTIVATIONS))]
        items.append("    stem { " + _sep(ctx).join(layers) + " }")

    stages: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, max_stages))):
        if i and draw(st.booleans()):
            layers, shape = transition(ctx, shape, even=draw(st.booleans()))
            items.append("    transition { " + _sep(ctx).join(layers) + " }")
        info: dict[str, Any] = {"name": f"s{i}"}
        items.append(stage_text(ctx, f"s{i}", shape, info))
        info["shape"] = shape
        stages.append(info)

    if draw(st.booleans()):
        head: list[str] = []
        if draw(st.booleans()):
            head.extend(preserving_layer(ctx, shape))
        if len(shape) == 3:
            if draw(st.booleans()):
                head.append("adaptive_avgpool2d(1)")
                shape = (shape[0], 1, 1)
            head.append("flatten")
            shape = (shape[0] * shape[1] * shape[2],)
        classes = draw(st.integers(1, 5))
        head.append(f"linear({int_expr(ctx, classes)})")
        shape = (classes,)
        items.append("    head { " + _sep(ctx).join(head) + " }")

    overrides: dict[str, int] = {}
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(ctx.depths)))
        overrides[name] = draw(st.integers(1, 4))
    for info in stages:
        param = info["depth_param"]
        info["depth"] = overrides.get(param, ctx.depths[param]) if param else None

    decls = [b.text for b in ctx.blocks] + [u.text for u in ctx.integrators]
    net = f"network net({', '.join(params)}) {{\n" + "\n".join(items) + "\n}\n"
    library = None
    if decls and draw(st.integers(0, 2)) == 0:
        library = "# imported definitions\n" + "\n".join(draw(st.permutations(decls)))
        decls = ['import "lib/defs.ode"\n']
    # definitions may come before or after the network that uses them
    order = draw(st.permutations([net, *decls]))
    text = "# generated\n" + "\n".join(order)
    return GeneratedSpec(text, input_shape, shape, stages, overrides, library)
