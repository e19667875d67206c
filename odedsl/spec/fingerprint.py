"""A digest of a validated network, for checkpoints to say which network they trained.

Torch-free, so the training command and the exported training script (``odedsl build``)
compute the same one: a resume that would load weights into another network of the same
parameter shapes (an Euler ResNet's into a momentum net) is refused by both.
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
