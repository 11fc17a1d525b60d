import os

import pytest

from aserve.config import ModelConfig, ServingConfig, diff, parse_model_server_config
from aserve.errors import Code, ServingError
from aserve.versions import AllVersions, Latest, Specific


def parse(text: str) -> ServingConfig:
    config = parse_model_server_config(text)
    assert config is not None
    return config


def test_full_model_config() -> None:
    config = parse(
        """
        model_config_list {
          config {
            name: "a" base_path: "/models/a" model_platform: "tensorflow"
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: "stable" value: 1 }
            version_labels { key: "canary" value: 2 }
          }
          config { name: "b" base_path: "rel/b" model_platform: "tensorflow"
                   model_version_policy { all {} } }
          config { name: "c" base_path: "/models/c" model_version_policy { latest { num_versions: 3 } } }
          config { name: "d" base_path: "/models/d" model_platform: "tensorflow" }
        }
        """
    )
    a, b, c, d = config.models.values()
    assert a == ModelConfig(
        "a", "/models/a", Specific(frozenset({1, 2})), {"stable": 1, "canary": 2}
    )
    assert b.base_path == os.path.abspath("rel/b") and b.policy == AllVersions()
    assert c.policy == Latest(3) and c.platform == "tensorflow"
    assert d.policy == Latest(1)


def test_empty_file_means_no_action() -> None:
    assert parse_model_server_config("") is None
    assert parse("model_config_list {}").models == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "improperly formatted file",
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type "
            '"tensorflow.serving.ModelServerConfig" has no field named "improperly".',
        ),
        (
            'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }',
            "Illegal to list model a multiple times in config list",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }',
            "Model a requests unsupported platform pytorch",
        ),
        (
            'model_config_list { config { name: "a" base_path: "ftp://host/a" } }',
            "Model a: base_path ftp://host/a: unsupported store ftp:// (aserve reads local "
            "folders, file:// and s3://, gs://, gcs://, oss://)",
        ),
        ("custom_model_config { }", "ModelServer does not yet support custom model config."),
    ],
)
def test_invalid_configs(text: str, message: str) -> None:
    with pytest.raises(ServingError) as info:
        parse_model_server_config(text)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message == message


def test_diff_applies_only_the_difference() -> None:
    a, b, c = (ModelConfig(n, f"/{n}") for n in "abc")
    b2 = ModelConfig("b", "/b", Latest(2))
    change = diff(ServingConfig.of(a, b), ServingConfig.of(b2, c))
    assert change.added == (c,) and change.removed == (a,) and change.changed == (b2,)
    assert not diff(ServingConfig.of(a, b), ServingConfig.of(a, b))
