"""Model configuration: TF Serving's text protos in, frozen specs out, and their diff.

Files are parsed with ``google.protobuf.text_format`` into the official
``tensorflow.serving.ModelServerConfig``, then converted at this edge into
:class:`ModelConfig` records that the rest of the server reads. A reload runs
validate -> :func:`diff` -> apply (in :mod:`aserve.core`).

Deliberate leniencies over TF Serving (see the README): a relative
``base_path`` is resolved against the working directory (a URL names a model in object
storage: :mod:`aserve.storage`), an empty
``model_platform`` means ``tensorflow``, and ``logging_config`` is ignored with
a warning instead of failing the load.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf import message, text_format

from aserve.errors import Code, ServingError, invalid_argument
from aserve.storage import resolve_base_path
from aserve.versions import AllVersions, Latest, Specific, VersionPolicy

log = logging.getLogger("aserve.config")

PLATFORM = "tensorflow"

M = TypeVar("M", bound=message.Message)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    base_path: str  # an absolute folder, or a URL (object storage)
    policy: VersionPolicy = Latest()
    labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    platform: str = PLATFORM


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """The set of models to serve, in config-file order."""

    models: Mapping[str, ModelConfig]

    @classmethod
    def of(cls, *models: ModelConfig) -> ServingConfig:
        return cls(MappingProxyType({m.name: m for m in models}))


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    added: tuple[ModelConfig, ...]
    removed: tuple[ModelConfig, ...]
    changed: tuple[ModelConfig, ...]  # the new config of models whose path/policy/labels changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def parse_text_proto(text: str, message_type: type[M]) -> M:
    """Parse a text proto; errors read like the C++ parser's (``<line>:<col>: ...``)."""
    message: M = message_type()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        detail = re.sub(r"^\d+:\d+ : ", "", str(e))
        full_name = message_type.DESCRIPTOR.full_name
        raise invalid_argument(
            f"Error parsing text-format {full_name}: {e.GetLine()}:{e.GetColumn()}: {detail}"
        ) from None
    return message


def parse_model_server_config(text: str) -> ServingConfig | None:
    """``model_config.pbtxt`` text -> specs; None for an empty file (TF: take no action)."""
    from tensorflow_serving.config import model_server_config_pb2

    proto = parse_text_proto(text, model_server_config_pb2.ModelServerConfig)
    return from_proto(proto)


def model_config_from_text(name: str, text: str) -> ModelConfig:
    """Model ``name`` from its ``tensorflow.serving.ModelConfig`` text proto (``base_path``,
    ``model_platform``, ``model_version_policy``, ``version_labels``); ``name`` may be left
    out of the text, and must be ``name`` when it is given."""
    from tensorflow_serving.config import model_server_config_pb2

    proto = parse_text_proto(text, model_server_config_pb2.ModelConfig)
    if proto.name and proto.name != name:
        raise invalid_argument(f"The config names model {proto.name}, not {name}")
    proto.name = name
    return _model_config(proto)


def from_proto(proto: Any) -> ServingConfig | None:
    kind = proto.WhichOneof("config")
    if kind is None:
        return None
    if kind != "model_config_list":
        raise invalid_argument("ModelServer does not yet support custom model config.")
    models: dict[str, ModelConfig] = {}
    for model in proto.model_config_list.config:
        if model.name in models:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        models[model.name] = _model_config(model)
    return ServingConfig(MappingProxyType(models))


def single_model(name: str, base_path: str) -> ServingConfig:
    """``--model_name`` / ``--model_base_path``: one model, latest version."""
    return ServingConfig.of(ModelConfig(name=name, base_path=_base_path(name, base_path)))


def diff(old: ServingConfig, new: ServingConfig) -> ConfigDiff:
    return ConfigDiff(
        added=tuple(m for name, m in new.models.items() if name not in old.models),
        removed=tuple(m for name, m in old.models.items() if name not in new.models),
        changed=tuple(
            m for name, m in new.models.items() if name in old.models and old.models[name] != m
        ),
    )


def _model_config(model: Any) -> ModelConfig:
    if not model.name:
        raise invalid_argument("ModelConfig has no name specified.")
    if not model.base_path:
        raise invalid_argument(f"Model {model.name} has no base_path")
    if model.HasField("logging_config"):
        log.warning("model %s: logging_config is not supported and is ignored", model.name)
    return ModelConfig(
        name=model.name,
        base_path=_base_path(model.name, model.base_path),
        policy=_policy(model),
        labels=MappingProxyType(dict(model.version_labels)),
        platform=_platform(model),
    )


def _base_path(name: str, base_path: str) -> str:
    try:
        return resolve_base_path(base_path)
    except ServingError as e:
        raise invalid_argument(f"Model {name}: {e.message}") from None


def _platform(model: Any) -> str:
    if model.model_type and model.model_platform:
        raise invalid_argument(
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform."
        )
    platform = model.model_platform or (PLATFORM if model.model_type in (0, 1) else "other")
    if platform != PLATFORM:
        raise ServingError(
            Code.INVALID_ARGUMENT, f"Model {model.name} requests unsupported platform {platform}"
        )
    return platform


def _policy(model: Any) -> VersionPolicy:
    policy = model.model_version_policy
    match policy.WhichOneof("policy_choice"):
        case "all":
            return AllVersions()
        case "specific":
            if not policy.specific.versions:
                log.warning("model %s: 'specific' version policy lists no versions", model.name)
            return Specific(frozenset(policy.specific.versions))
        case "latest":
            return Latest(max(policy.latest.num_versions, 1))
        case _:
            return Latest()
