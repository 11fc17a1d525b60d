"""What a loaded SavedModel offers: its signatures, as plain frozen records.

Built once per loaded version from the MetaGraphDef's ``signature_def`` map and
read by every request, so lookups are dict accesses and nothing here touches
TensorFlow at request time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

_REF_OFFSET = 100  # DT_FLOAT_REF = DT_FLOAT + 100, etc.


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature."""

    alias: str  # the key clients use ("x")
    name: str  # the graph tensor fed or fetched ("x:0")
    dtype: int  # tensorflow DataType enum value; reference types folded to their base type


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]  # alias -> spec, sorted by alias
    outputs: Mapping[str, TensorSpec]
    defaults: Mapping[str, Any]  # alias -> TensorProto used when the request omits the input
    proto: Any  # the SignatureDef, for error texts and metadata
    aliases: tuple[str, ...] = field(init=False)  # every output's alias, sorted
    fetches: tuple[str, ...] = field(init=False)  # ... and its graph tensor, in that order

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", tuple(self.outputs))
        object.__setattr__(self, "fetches", tuple(s.name for s in self.outputs.values()))


def _specs(infos: Mapping[str, Any]) -> Mapping[str, TensorSpec]:
    specs = {}
    for alias in sorted(infos):
        info = infos[alias]
        dtype = info.dtype - _REF_OFFSET if info.dtype > _REF_OFFSET else info.dtype
        specs[alias] = TensorSpec(alias=alias, name=info.name, dtype=dtype)
    return MappingProxyType(specs)


def signature_from_proto(name: str, signature_def: Any) -> Signature:
    return Signature(
        name=name,
        method_name=signature_def.method_name,
        inputs=_specs(signature_def.inputs),
        outputs=_specs(signature_def.outputs),
        defaults=MappingProxyType(dict(signature_def.defaults)),
        proto=signature_def,
    )


def signatures_from_meta_graph(meta_graph_def: Any) -> Mapping[str, Signature]:
    return MappingProxyType(
        {
            name: signature_from_proto(name, sig)
            for name, sig in meta_graph_def.signature_def.items()
        }
    )
