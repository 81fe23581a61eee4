"""Configs: YAML files into dataclasses, refusing unknown keys and wrong types; overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atari_dt.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from atari_dt.datasets.config import DataConfig
from atari_dt.envs.config import CollectFileConfig
from atari_dt.errors import UserError
from atari_dt.training.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
DATA_KEYS = (
    "path, reward_units, context_len, stack_size, sampling, max_return_quantile, "
    "include_incomplete, frames_in_memory"
)


def write_yaml(tmp_path: Path, text: str) -> Path:
    """A YAML file with ``text`` in ``tmp_path``."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def data_config(**values: Any) -> DataConfig:
    """Validate ``{'data': values}`` into an ExperimentConfig and return its data section."""
    return config_from_dict(ExperimentConfig, {"data": values}).data


def test_the_repository_has_configs() -> None:
    """There are YAML configs to load."""
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    """Every YAML under configs/ validates: collections into a CollectFileConfig, the rest
    (data, model, train, eval sections) into an ExperimentConfig."""
    import yaml

    from atari_dt.envs.games import canonical_game

    sections = set(yaml.safe_load(path.read_text()))
    if path.parent.name == "collect":
        assert sections == {"collect"}
        collect = load_config(CollectFileConfig, path).collect
        assert canonical_game(collect.game) == collect.game
        assert len(collect.policy) >= 2  # shipped collections are mixtures
        return
    config = load_config(ExperimentConfig, path)
    assert isinstance(config.data, DataConfig)
    assert sections and sections <= {"data", "model", "train", "eval"}
    if "data" in sections:
        assert config.data.path and config.data.path.endswith(".h5")


def test_config_error_is_a_user_error() -> None:
    """ConfigError is the CLI's one-line user error (and still a ValueError)."""
    assert issubclass(ConfigError, UserError) and issubclass(UserError, ValueError)


def test_defaults_without_a_file() -> None:
    """No path gives the dataclass defaults."""
    assert load_config(ExperimentConfig) == ExperimentConfig()
    assert load_config(ExperimentConfig, None, ["data.context_len=7"]).data.context_len == 7


@pytest.mark.parametrize(
    ("values", "bad_key", "suggestion"),
    [
        ({"data": {"context_length": 5}}, "data.context_length", "context_len"),
        ({"data": {"stacksize": 5}}, "data.stacksize", "stack_size"),
        ({"dta": {}}, "dta", "data"),
    ],
)
def test_unknown_key_lists_valid_keys_and_suggests(
    values: dict, bad_key: str, suggestion: str
) -> None:
    """An unknown key names the dotted key, suggests the close valid one and lists them all."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(ExperimentConfig, values)
    message = str(info.value)
    assert f"unknown config key {bad_key!r}" in message
    assert f"(did you mean {suggestion!r}?)" in message
    assert "valid keys: " in message


def test_unknown_key_lists_every_data_key() -> None:
    """The valid keys listed are exactly the DataConfig fields."""
    with pytest.raises(ConfigError, match=f"valid keys: {DATA_KEYS}$"):
        data_config(zzzz=1)


def test_unknown_key_without_close_match() -> None:
    """A key like no valid one gets no suggestion."""
    with pytest.raises(ConfigError) as info:
        data_config(qqqqqqqq=1)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"context_len": "30"}, "data.context_len: expected int, got '30'"),
        ({"context_len": 3.0}, "data.context_len: expected int, got 3.0"),
        ({"context_len": True}, "data.context_len: expected an integer, got True"),
        ({"stack_size": None}, "data.stack_size: expected int, got None"),
        (
            {"sampling": "uniform"},
            r"data.sampling: 'uniform' is not one of \['transitions', "
            r"'episodes'\]",
        ),
        ({"reward_units": "score"}, "data.reward_units: 'score' is not one of"),
        ({"frames_in_memory": True}, "data.frames_in_memory: True is not one of"),
        ({"include_incomplete": "yes"}, "data.include_incomplete: expected bool, got 'yes'"),
        ({"include_incomplete": 1}, "data.include_incomplete: expected bool, got 1"),
        ({"max_return_quantile": "0.5"}, "data.max_return_quantile: expected float, got '0.5'"),
        ({"max_return_quantile": True}, "data.max_return_quantile: expected float, got True"),
        ({"path": 5}, "data.path: expected str, got 5"),
    ],
)
def test_wrong_types_are_refused(values: dict, message: str) -> None:
    """Values of the wrong type raise ConfigError naming the dotted key and the value."""
    with pytest.raises(ConfigError, match=message):
        data_config(**values)


@pytest.mark.parametrize("quantile", [0, 0.0, -0.1, 1.5, 2])
def test_return_quantile_outside_unit_interval(quantile: float) -> None:
    """max_return_quantile outside (0, 1] raises ConfigError naming the section."""
    with pytest.raises(ConfigError, match=r"data: max_return_quantile must be in \(0, 1\]"):
        data_config(max_return_quantile=quantile)


@pytest.mark.parametrize("quantile", [1, 1.0, 0.5, 1e-9, None])
def test_return_quantile_inside_unit_interval(quantile: float | None) -> None:
    """max_return_quantile in (0, 1] or null is accepted (an int 1 becomes float 1.0)."""
    value = data_config(max_return_quantile=quantile).max_return_quantile
    assert value == quantile and (value is None or isinstance(value, float))


@pytest.mark.parametrize(("key", "value"), [("context_len", 0), ("stack_size", -1)])
def test_sizes_below_one_are_refused(key: str, value: int) -> None:
    """context_len and stack_size below 1 raise ConfigError."""
    with pytest.raises(ConfigError, match=f"{key} must be >= 1, got {value}"):
        data_config(**{key: value})


def test_section_must_be_a_mapping() -> None:
    """A section given as a scalar (or an empty ``data:``) is refused."""
    with pytest.raises(ConfigError, match="data: expected a mapping, got int"):
        config_from_dict(ExperimentConfig, {"data": 3})
    with pytest.raises(ConfigError, match="data: expected a mapping, got NoneType"):
        config_from_dict(ExperimentConfig, {"data": None})


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    """Errors from a YAML file name the file and the key."""
    path = write_yaml(tmp_path, "data:\n  context_length: 5\n")
    with pytest.raises(
        ConfigError,
        match=r"config.yaml: unknown config key 'data.context_length' "
        r"\(did you mean 'context_len'\?\)",
    ):
        load_config(ExperimentConfig, path)


def test_load_config_invalid_yaml(tmp_path: Path) -> None:
    """Unparseable YAML raises ConfigError naming the file."""
    path = write_yaml(tmp_path, "data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML"):
        load_config(ExperimentConfig, path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    """A missing config file raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        load_config(ExperimentConfig, tmp_path / "absent.yaml")


def test_load_config_empty_file(tmp_path: Path) -> None:
    """An empty YAML file (or one of comments only) is refused: it was meant to say something.
    An explicit empty mapping asks for the defaults."""
    for text in ("", "# collect: {game: Pong}\n"):
        with pytest.raises(ConfigError, match=r"is empty; give the sections to set"):
            load_config(ExperimentConfig, write_yaml(tmp_path, text))
    assert load_config(ExperimentConfig, write_yaml(tmp_path, "{}\n")) == ExperimentConfig()


def test_overrides_on_top_of_a_file(tmp_path: Path) -> None:
    """Overrides replace file values, parsed as YAML (ints, floats, null, strings)."""
    path = write_yaml(tmp_path, "data:\n  context_len: 30\n  max_return_quantile: 0.9\n")
    config = load_config(
        ExperimentConfig,
        path,
        [
            "data.context_len=8",
            "data.max_return_quantile=null",
            "data.sampling=episodes",
            "data.path=x.h5",
        ],
    )
    assert config.data == DataConfig(
        context_len=8, max_return_quantile=None, sampling="episodes", path="x.h5"
    )


def test_apply_overrides_nested_and_copying() -> None:
    """Dotted keys create nested sections; values are YAML-parsed; the input is not modified."""
    original = {"a": {"b": 1}}
    result = apply_overrides(original, ["a.b=2", "a.c.d=[1, 2]", "e=0.5", "f=x=y", "g= true "])
    assert result == {"a": {"b": 2, "c": {"d": [1, 2]}}, "e": 0.5, "f": "x=y", "g": True}
    assert original == {"a": {"b": 1}}


def test_apply_overrides_errors() -> None:
    """An override without '=' or through a non-section raises ConfigError."""
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        apply_overrides({}, ["data.context_len"])
    with pytest.raises(ConfigError, match="'data' is not a section"):
        apply_overrides({"data": 3}, ["data.context_len=4"])


def test_override_with_wrong_type_is_refused() -> None:
    """An override's value goes through the same type checks as the file's."""
    with pytest.raises(ConfigError, match=r"data\.context_len: expected int, got 'ten'"):
        load_config(ExperimentConfig, None, ["data.context_len=ten"])


@pytest.mark.parametrize(("text", "expected"), [("1e-3", 1e-3), ("6E-4", 6e-4), ("2.5e0", 2.5)])
def test_exponent_without_a_dot_is_a_float(text: str, expected: float) -> None:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; a float setting takes it as the number."""
    config = load_config(ExperimentConfig, None, [f"train.lr={text}"])
    assert config.train.lr == expected
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got '1e-'"):
        load_config(ExperimentConfig, None, ["train.lr=1e-"])


data_configs = st.builds(
    DataConfig,
    path=st.none() | st.text(max_size=20),
    reward_units=st.sampled_from(["clipped", "raw"]),
    context_len=st.integers(1, 1000),
    stack_size=st.integers(1, 8),
    sampling=st.sampled_from(["transitions", "episodes"]),
    max_return_quantile=st.none() | st.floats(0.0, 1.0, exclude_min=True),
    include_incomplete=st.booleans(),
    frames_in_memory=st.sampled_from(["auto", "always", "never"]),
)


@settings(max_examples=50, deadline=None)
@given(data_configs)
def test_config_dict_round_trip(data: DataConfig) -> None:
    """config_to_dict then config_from_dict gives back an equal config, via YAML too."""
    import yaml

    config = ExperimentConfig(data=data)
    plain = config_to_dict(config)
    assert plain["data"]["context_len"] == data.context_len
    assert config_from_dict(ExperimentConfig, plain) == config
    assert config_from_dict(ExperimentConfig, yaml.safe_load(yaml.safe_dump(plain))) == config


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"], ids=["list", "scalar"])
def test_non_mapping_yaml_with_overrides(tmp_path: Path, text: str) -> None:
    """A YAML file that is not a mapping is a ConfigError with or without overrides."""
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ExperimentConfig, path)
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_config(ExperimentConfig, path, ["data.context_len=3"])


def test_model_section(tmp_path: Path) -> None:
    """The model section validates into ModelConfig, with its own checks and overrides."""
    path = write_yaml(tmp_path, "model:\n  d_model: 64\n  n_heads: 4\n  encoder: impala\n")
    config = load_config(ExperimentConfig, path, ["model.n_layers=2", "model.rtg_embedding=linear"])
    model = config.model
    assert (model.d_model, model.n_heads, model.n_layers, model.d_head) == (64, 4, 2, 16)
    assert (model.encoder, model.rtg_embedding) == ("impala", "linear")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.n_head' \(did you mean"):
        load_config(ExperimentConfig, path, ["model.n_head=2"])
    with pytest.raises(ConfigError, match=r"model.encoder: 'vit' is not one of \['nature', "):
        load_config(ExperimentConfig, path, ["model.encoder=vit"])
    with pytest.raises(ConfigError, match=r"n_heads \(3\) must divide d_model \(64\)"):
        load_config(ExperimentConfig, path, ["model.n_heads=3"])
    assert config_to_dict(model)["d_model"] == 64 and "d_head" not in config_to_dict(model)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", r"n_actions must be 'auto' or an integer >= 1, got 0"),
        ("four", r"model.n_actions: expected int, got 'four'"),
        ("true", r"model.n_actions: expected an integer, got True"),
    ],
)
def test_model_n_actions_is_auto_or_a_number(value: str, message: str) -> None:
    """model.n_actions defaults to 'auto' (the store's count); a number must be >= 1."""
    assert load_config(ExperimentConfig).model.n_actions == "auto"
    assert load_config(ExperimentConfig, None, ["model.n_actions=4"]).model.n_actions == 4
    with pytest.raises(ConfigError, match=message):
        load_config(ExperimentConfig, None, [f"model.n_actions={value}"])


def test_unresolved_n_actions_cannot_build_a_model() -> None:
    """check_resolved refuses 'auto' with how to resolve it; a number passes."""
    from atari_dt.model.config import ModelConfig

    ModelConfig(n_actions=4).check_resolved()
    with pytest.raises(ConfigError, match=r"model.n_actions is 'auto': resolve it from the"):
        ModelConfig().check_resolved()


def test_a_model_is_not_built_with_an_unresolved_action_count() -> None:
    """``n_actions: auto`` is the data's to fill in; building a model before says so."""
    from atari_dt.errors import UserError
    from atari_dt.model import HookedDecisionTransformer, ModelConfig

    with pytest.raises(UserError, match=r"model\.n_actions is 'auto': resolve it from the"):
        HookedDecisionTransformer(ModelConfig())
