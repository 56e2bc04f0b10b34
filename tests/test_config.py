"""Tests of iwae_tf.config: one statement per setting, from which docs, checks and flags follow."""

import dataclasses
import json

import pytest
from absl import flags

from iwae_tf import config as config_lib
from iwae_tf.config import TrainConfig

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def parsed_flags(*args, **kwargs):
    values = flags.FlagValues()
    config_lib.define_flags(flag_values=values, **kwargs)
    values(["prog", *args])
    return values


def test_every_field_has_a_flag_with_its_default_and_help():
    values = parsed_flags()
    for field in dataclasses.fields(TrainConfig):
        flag = values[field.name]
        assert flag.value == field.default, field.name
        assert field.metadata["help"] in flag.help and flag.help, field.name
    # And the docstring's attribute list is generated from the same help texts.
    for name in FIELDS:
        assert f"  {name}: " in TrainConfig.__doc__


def test_flags_given_become_overrides_and_others_do_not():
    values = parsed_flags(
        "--k=7",
        "--model=iwaeu",
        "--latent_sizes=100,50",
        "--hidden_sizes=200,200/100,100",
        "--jit_compile=false",
        "--learning_rate=0.003",
    )
    overrides = config_lib.flag_overrides(flag_values=values)
    assert overrides == {
        "k": 7,
        "model": "iwaeu",
        "latent_sizes": (100, 50),
        "hidden_sizes": ((200, 200), (100, 100)),
        "jit_compile": False,
        "learning_rate": 0.003,
    }
    config = TrainConfig(**overrides)
    config.validate()
    assert config.hidden_sizes == ((200, 200), (100, 100))


@pytest.mark.parametrize(
    "args",
    [["--k=0"], ["--model=iwea"], ["--learning_rate=0"], ["--latent_sizes=5,x"], ["--seed=a"]],
)
def test_bad_flags_fail_at_parsing(args):
    with pytest.raises(flags.Error):
        parsed_flags(*args)


def test_a_subset_of_flags_without_defaults_overrides_only_what_is_given():
    values = parsed_flags("--seed=3", names=("seed", "data_dir"), defaults=False)
    assert "k" not in values
    assert values["data_dir"].value is None
    assert config_lib.flag_overrides(flag_values=values) == {"seed": 3}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"k": 0}, "k must be >= 1"),
        ({"model": "iwea"}, "unknown model 'iwea'"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"hidden_sizes": ((200, 0),)}, "hidden_sizes must be >= 1"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be >= 1"),
        ({"latent_sizes": (50, 10)}, "one entry per stochastic layer"),
        ({"schedule": "cosine"}, "unknown schedule"),
        ({"objective": "miwae", "num_groups": 3}, "dividing k = 5"),
        ({"objective": "ciwae", "beta": 2.0}, r"beta in \[0, 1\]"),
        ({"objective": "vr", "alpha": float("nan")}, "alpha must be a real number"),
        ({"objective": "elbo"}, "unknown objective"),
    ],
)
def test_validate_names_the_bad_setting(change, message):
    TrainConfig().validate()  # The defaults are valid.
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(), **change).validate()


def test_objective_flags_reach_the_config():
    values = parsed_flags("--objective=vr", "--alpha=-inf", "--k=7")
    config = TrainConfig(**config_lib.flag_overrides(flag_values=values))
    config.validate()
    assert tuple(config.training_objective()) == ("vr", float("-inf"), 1, 0.5)
    assert TrainConfig().training_objective() is None  # The variant's own.


def test_json_round_trip_restores_tuples_and_fills_missing_fields():
    config = TrainConfig(latent_sizes=(100, 50), hidden_sizes=((200, 200), (100, 100)), k=3)
    text = json.dumps(config.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == config
    # A config.json written before a field existed still loads, with the field's default.
    older = json.loads(text)
    del older["tensorboard"]
    assert TrainConfig.from_dict(older) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields: colour"):
        TrainConfig.from_dict({**older, "colour": "red"})


def test_a_new_field_is_one_edit():
    # A subclass adds one field with `setting`, and nothing else: it validates and has a flag.
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        warmup_epochs: int = config_lib.setting(0, "Epochs of learning-rate warm-up.", minimum=0)

    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        Extended(warmup_epochs=-1).validate()
    values = flags.FlagValues()
    config_lib.define_flags(flag_values=values, config_class=Extended)
    values(["prog", "--warmup_epochs=4"])
    overrides = config_lib.flag_overrides(flag_values=values, config_class=Extended)
    assert overrides == {"warmup_epochs": 4}
    assert Extended(**overrides).warmup_epochs == 4
