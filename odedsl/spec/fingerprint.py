"""Digests of a validated network, for checkpoints to say which network they trained.

Torch-free, so the training command and the exported training script (``odedsl build``)
compute the same one: a resume that would load weights into another network of the same
parameter shapes (an Euler ResNet's into a momentum net) is refused by both. A weights file
(``odedsl.checkpoints.save_checkpoint``, ``odedsl train``'s ``model.pt``) carries the looser
:func:`weights_fingerprint`, which leaves out what the same weights run under (depth, backward).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(value: Any) -> str:
    """16 hex digits of the SHA-256 of ``value``'s sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def network_fingerprint(network: Any) -> str:
    """What a run trains, as ``<schema digest>:<network digest>``: the validated network
    (layers, shapes, integrators and their parameters, depths, weight rules, parameters)
    without its ``origin`` positions, so a comment edited in the spec still resumes while
    another spec or network does not. The schema digest (of the spec model's JSON schema)
    says which description the network digest is of: an odedsl whose model gained or
    renamed a field describes the same network differently."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "origin"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    schema = digest(type(network).model_json_schema())
    return f"{schema}:{digest(strip(network.model_dump(mode='json')))}"


#: The description :func:`weights_fingerprint` digests; another description, another version.
WEIGHTS_VERSION = "w2"  # w2: layer arguments count (w1 had kinds and shapes only)
#: Layer arguments that do not change what trained weights compute: how they start
#: (``init``), how BatchNorm's statistics move (``momentum``), dropout's rate (``p``).
_TRAINING_ONLY = frozenset({"init", "momentum", "p"})


def weights_fingerprint(network: Any) -> str:
    """What a network's weights mean, as ``w2:<digest>``: for a weights file to say which
    network it was written for (a plain state dict of another spec with the same shapes, an
    Euler ResNet's in a momentum net or tanh residuals' in relu ones, loaded silently).

    Its input and output shapes, and per part, in order: the layers' kinds, module names,
    shapes and arguments; a stage's integrator, its parameters and forward equations, and
    weights rule. Left out: what weights run unchanged under, so a file still loads there:
    depths (and the step,
    slot and parameter counts that follow; the stage layouts check depth where it matters),
    backward modes, positions, layer options that leave trained weights' function alone
    (:data:`_TRAINING_ONLY`) and the network's name."""
    data = network.model_dump(mode="json")

    def layers(sequence: dict[str, Any]) -> list[Any]:
        return [
            [
                x["kind"],
                x["name"],
                x["in_shape"],
                x["out_shape"],
                {k: v for k, v in x["args"].items() if k not in _TRAINING_ONLY},
            ]
            for x in sequence["layers"]
        ]

    parts: list[Any] = []
    for part in data["parts"]:
        if part["part"] == "stage":
            parts.append(
                {
                    "stage": part["name"],
                    "integrator": part["integrator"],
                    "params": part["integrator_params"],
                    "equations": part["forward_equations"],
                    "weights": [part["weights"], part["weights_k"]],
                    "residuals": {r: layers(s) for r, s in part["residuals"].items()},
                }
            )
        else:
            parts.append({part["part"]: part["name"], "layers": layers(part["body"])})
    described = {"input": data["input_shape"], "output": data["output_shape"], "parts": parts}
    return f"{WEIGHTS_VERSION}:{digest(described)}"
