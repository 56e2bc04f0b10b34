"""TrainConfig: every setting of a training run, stated once.

Each field carries its own help text, bounds and choices (`setting`), and everything else is
derived from them: the class docstring's attribute list, `TrainConfig.validate`, the JSON form
written to config.json (`to_dict` / `from_dict`) and the absl flags of the scripts
(`define_flags` / `flag_overrides`). A new setting is therefore one edit: a field here.

Sequences on the command line: `--latent_sizes=100,50` (bottom first) and
`--hidden_sizes=200,200/100,100` (one comma-separated list per stochastic layer, joined by '/').
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import flags

from iwae_tf import bounds, data, estimators, layers, likelihoods, schedules, serving
from iwae_tf.model import VARIANTS

ARCHITECTURES: tuple[str, ...] = ("mlp", "conv")
"""Network families (see `iwae_tf.networks`)."""

STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker")
"""tf.distribute strategies a run can use (see `iwae_tf.train.make_strategy`)."""

_LAYER_SEPARATOR = "/"


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    choices: Callable[[], Sequence[str]] | None = None,
    finite: bool = True,
) -> Any:
    """A TrainConfig field with its documentation and the checks `validate` applies.

    Args:
      default: The default value.
      doc: One sentence for the docstring and the flag's --help.
      minimum: Smallest valid value (None values are always valid).
      positive: The value must be > 0.
      choices: Returns the valid values (called lazily, at validation or flag definition).
      finite: A float value must be finite (not NaN or +-inf); off for alpha, whose -inf
        means VR-max.
    """
    metadata = {
        "help": doc,
        "minimum": minimum,
        "positive": positive,
        "choices": choices,
        "finite": finite,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    dataset: str = setting(
        "mnist",
        "Dataset: one of `iwae_tf.data.DATASETS` or any TFDS image dataset's name, with an "
        'optional config and version as TFDS spells them (e.g. "fashion_mnist", '
        '"emnist/letters", "cifar10:3.*").',
    )
    binarization: str = setting(
        "dynamic",
        "How intensities become inputs: dynamic (a fresh Bernoulli draw every epoch), static "
        "(one fixed draw of the training set per seed) or none (intensities, for the gaussian "
        "likelihood); the test set is binarized once unless none.",
        choices=lambda: data.BINARIZATIONS,
    )
    likelihood: str = setting(
        "bernoulli",
        "The decoder's p(x|h): bernoulli (binary data) or gaussian (intensities in [0, 1]), "
        "see `iwae_tf.likelihoods`.",
        choices=lambda: likelihoods.LIKELIHOODS,
    )
    min_std: float = setting(
        likelihoods.DEFAULT_MIN_STD,
        "Floor of the gaussian likelihood's standard deviation, in (0, 1).",
        positive=True,
    )
    architecture: str = setting(
        "mlp",
        "Networks: mlp (Burda et al.'s) or conv (a stride-2 conv stack of conv_filters before "
        "q(h_1|x)'s MLP, mirrored by resize-convolutions after p(x|h_1)'s).",
        choices=lambda: ARCHITECTURES,
    )
    conv_filters: tuple[int, ...] = setting(
        (32, 64),
        "Filters of the conv architecture's stride-2 3x3 convolutions, one per halving of the "
        "image (28x28 -> 14x14 -> 7x7 for the default).",
        minimum=1,
    )
    model: str = setting(
        "iwae", "Model variant, one of `iwae_tf.model.VARIANTS`.", choices=lambda: VARIANTS
    )
    objective: str | None = setting(
        None,
        "Training objective, one of `iwae_tf.bounds.OBJECTIVES` (None: the model variant's, vae "
        "for vae and iwae for the others).",
        choices=lambda: bounds.OBJECTIVES,
    )
    alpha: float = setting(
        0.0,
        "The alpha of objective vr (Li & Turner 2016): 0 is iwae, 1 the ELBO, -inf VR-max.",
        finite=False,
    )
    num_groups: int = setting(
        1, "The number M of sample groups of objectives miwae and piwae; must divide k.", minimum=1
    )
    beta: float = setting(0.5, "The ELBO's share of objective ciwae, in [0, 1].", minimum=0)
    estimator: str = setting(
        "reparam",
        "The encoder's gradient estimator: reparam, stl (Roeder et al. 2017) or dreg (Tucker "
        "et al. 2019); see `iwae_tf.estimators`.",
        choices=lambda: estimators.ESTIMATORS,
    )
    k: int = setting(5, "Importance samples per example in training.", minimum=1)
    epochs: int = setting(3, "Passes over the training set.", minimum=1)
    batch_size: int = setting(20, "Examples per training step.", minimum=1)
    learning_rate: float = setting(1e-3, "Adam learning rate.", positive=True)
    steps_per_epoch: int | None = setting(
        None, "Optional cap on the training steps of each epoch.", minimum=1
    )
    seed: int = setting(
        0,
        "Seed of everything random in the run: weight initialization, the training data's order "
        "and binarization, every draw of the train and validation steps (latents and uncertain "
        "weights, keyed by the step counter, see `iwae_tf.rng`) and the final test-NLL estimate. "
        "The test set's binarization has its own fixed seed, so that scores compare across runs.",
    )
    eval_k: int = setting(1000, "Importance samples per example for the final test NLL.", minimum=1)
    latent_sizes: tuple[int, ...] = setting(
        (50,), "Sizes of the stochastic layers, bottom first.", minimum=1
    )
    hidden_sizes: tuple[tuple[int, ...], ...] = setting(
        ((200, 200),), "Hidden layer sizes of each stochastic layer, bottom first.", minimum=1
    )
    uncertain_layer_kind: str = setting(
        "local_reparameterization",
        "Layer kind of the uncertain networks of iwaeu* models (see `iwae_tf.layers`).",
        choices=lambda: layers.LAYER_KINDS,
    )
    init_scale: float = setting(
        layers.DEFAULT_INIT_SCALE, "Initial posterior std of uncertain weights.", positive=True
    )
    kl_weight: float = setting(
        0.0,
        "Weight of the weight-prior KL(q(W) || p(W)) / N_train in the loss (0: none).",
        minimum=0,
    )
    prior_scale: float = setting(
        1.0, "Std of the N(0, s^2) weight prior of that KL.", positive=True
    )
    train_split: str = setting("train", 'tfds split to train on (slices like "train[:1000]" work).')
    test_split: str = setting(
        "test", "tfds split to report the NLL on; binarized once, with a fixed seed."
    )
    validation_split: str | None = setting(
        None,
        "tfds split validated on after every epoch (the history's val_ columns), binarized once "
        "like the test split; None: the test split.",
    )
    select_best: bool = setting(
        False,
        "Evaluate and export the weights of the epoch with the best validation bound "
        "(val_iwae_bound) instead of the last epoch's; needs a validation_split other than "
        "the test split.",
    )
    early_stopping_patience: int = setting(
        0,
        "With select_best: stop training once the validation bound has not improved for this "
        "many epochs (Keras' EarlyStopping, its count kept across a resume); 0: train every "
        "epoch.",
        minimum=0,
    )
    eval_batch_size: int = setting(100, "Examples per evaluation batch.", minimum=1)
    data_dir: str | None = setting(None, "tfds data directory (None: the tfds default).")
    jit_compile: bool | None = setting(
        None,
        "XLA-compile the train step; None picks what measured faster on CPU: on for every "
        "variant, off under tf.distribute, whose collectives XLA cannot compile on CPU.",
    )
    steps_per_execution: int = setting(
        100,
        "Train steps per tf.function call; more steps amortize Keras' per-call overhead, which "
        "dominates small models like the paper's.",
        minimum=1,
    )
    schedule: str = setting(
        "constant",
        'Learning-rate schedule: "constant", or "burda" (Burda et al.: 3^i passes at '
        "learning_rate * 10^(-i/7) for stage i = 0..stages-1; sets the number of epochs).",
        choices=lambda: schedules.SCHEDULES,
    )
    stages: int = setting(
        8, 'Stages of the "burda" schedule (8: the paper\'s 3280 epochs).', minimum=1
    )
    strategy: str = setting(
        "default",
        "tf.distribute strategy; multi_worker reads the cluster from TF_CONFIG (see BUILD.md).",
        choices=lambda: STRATEGIES,
    )
    export_dir: str | None = setting(
        None,
        "Where the trained SavedModel goes; None: exported/<name of the output dir>, relative "
        "to the current directory.",
    )
    tensorboard: bool = setting(
        True,
        "Write TensorBoard summaries to <output dir>/tensorboard: per-epoch bounds, learning "
        "rate and weight-posterior scales, and image grids (see `image_summary_epochs`).",
    )
    image_summary_epochs: int = setting(
        10,
        "Epochs between TensorBoard grids of prior samples and reconstructions (the last "
        "epoch always gets one).",
        minimum=1,
    )

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        for field in dataclasses.fields(self):
            _check(field, getattr(self, field.name))
        serving.check_count("k", self.k)
        serving.check_count("eval_k", self.eval_k)
        if len(self.latent_sizes) != len(self.hidden_sizes):
            raise ValueError(
                f"latent_sizes and hidden_sizes need one entry per stochastic layer; got "
                f"{len(self.latent_sizes)} latent sizes and {len(self.hidden_sizes)} hidden "
                "size lists (separate the lists with '/', e.g. --hidden_sizes=200,200/100,100)"
            )
        if self.select_best and self.validation_split in (None, self.test_split):
            raise ValueError(
                "select_best picks an epoch by its validation bound, which must not be the test "
                "set's: give --validation_split (e.g. train[50000:] beside "
                "--train_split=train[:50000])"
            )
        if self.early_stopping_patience and not self.select_best:
            raise ValueError(
                "early_stopping_patience stops on the validation bound, whose best epoch only "
                "select_best keeps: add --select_best (with --validation_split) or drop "
                "--early_stopping_patience"
            )
        spec = VARIANTS[self.model]
        if self.kl_weight > 0 and not (spec.uncertain_encoder or spec.uncertain_decoder):
            raise ValueError(
                f"kl_weight is the weight of the weight-prior KL of uncertain weights, but model "
                f"{self.model} has none; use an iwaeu model or drop --kl_weight"
            )
        objective = self.training_objective() or bounds.Objective(VARIANTS[self.model].objective)
        objective.check(self.k)
        estimators.check(self.estimator, objective)
        likelihoods.get(self.likelihood, self.min_std)
        binary = self.binarization != "none"
        if self.likelihood == "bernoulli" and not binary:
            raise ValueError(
                "the bernoulli likelihood needs binary data: use --binarization=dynamic or "
                "static, or --likelihood=gaussian for intensities"
            )
        if self.likelihood != "bernoulli" and binary:
            raise ValueError(
                f"the {self.likelihood} likelihood models intensities, not binary pixels: use "
                "--binarization=none"
            )
        if self.architecture == "conv" and (spec.uncertain_encoder or spec.uncertain_decoder):
            layers.check_conv_kind(self.uncertain_layer_kind)

    def check_tensor_sizes(self, data_shape: Sequence[int]) -> None:
        """Raises ValueError if a train or validation step's widest tensor has more elements
        than TensorFlow's int32 shape arithmetic allows (2^31 - 1).

        A step stacks its k samples of a batch into k * batch rows; the widest row is the data,
        a hidden layer or a conv feature map. Past the limit the step would fail deep inside
        TensorFlow (or wrap around), so the run is refused before anything is written.
        """
        rows = self.k * max(self.batch_size, self.eval_batch_size)
        widths = [math.prod(data_shape), *self.latent_sizes]
        widths += [size for sizes in self.hidden_sizes for size in sizes]
        if self.architecture == "conv" and len(data_shape) == 3:
            height, width = data_shape[:2]
            for i, filters in enumerate(self.conv_filters):
                widths.append(
                    math.ceil(height / 2 ** (i + 1)) * math.ceil(width / 2 ** (i + 1)) * filters
                )
        elements = rows * max(widths)
        if elements > serving.MAX_COUNT:
            raise ValueError(
                f"k={self.k} samples of batches of {max(self.batch_size, self.eval_batch_size)} "
                f"make tensors of {elements:,} elements, more than TensorFlow's int32 limit "
                "(2^31 - 1); lower k or the batch sizes"
            )

    def network_conv_filters(self) -> tuple[int, ...]:
        """The conv stack's filters, or () for the MLP architecture."""
        return self.conv_filters if self.architecture == "conv" else ()

    def training_objective(self) -> bounds.Objective | None:
        """The objective with its parameter, or None for the model variant's own."""
        if self.objective is None:
            return None
        return bounds.Objective(self.objective, self.alpha, self.num_groups, self.beta)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuilds a config from `to_dict`'s form; missing fields take their defaults.

        Raises:
          ValueError: A key that is no TrainConfig field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        values = {name: _tuples(value) for name, value in values.items()}
        return cls(**values)


def _tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _document(cls: type) -> None:
    lines = [cls.__doc__ or "", "", "Attributes:"]
    for field in dataclasses.fields(cls):
        lines.append(f"  {field.name}: {field.metadata['help']}")
    cls.__doc__ = "\n".join(lines)


_document(TrainConfig)


def _values(value: Any) -> Iterable[Any]:
    """The scalars inside a (possibly nested) tuple setting."""
    if isinstance(value, tuple):
        for item in value:
            yield from _values(item)
    else:
        yield value


def _check(field: dataclasses.Field, value: Any) -> None:
    if value is None:
        return
    meta = field.metadata
    choices = meta["choices"]
    if choices is not None and value not in choices():
        raise ValueError(f"unknown {field.name} {value!r}; expected one of {sorted(choices())}")
    for item in _values(value):
        if meta["finite"] and isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{field.name} must be a finite number, got {value}")
        if meta["minimum"] is not None and item < meta["minimum"]:
            raise ValueError(f"{field.name} must be >= {meta['minimum']}, got {value}")
        if meta["positive"] and not item > 0:
            raise ValueError(f"{field.name} must be > 0, got {value}")


# ------------------------------------------------------------------------------ absl flags


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise flags.ValidationError(f"expected comma-separated integers, got {text!r}") from None


class _SizesParser(flags.ArgumentParser):
    """`100,50` -> (100, 50)."""

    def parse(self, argument: Any) -> tuple[int, ...]:
        return argument if isinstance(argument, tuple) else _parse_sizes(argument)

    def flag_type(self) -> str:
        return "comma-separated integers"


class _NestedSizesParser(flags.ArgumentParser):
    """`200,200/100,100` -> ((200, 200), (100, 100))."""

    def parse(self, argument: Any) -> tuple[tuple[int, ...], ...]:
        if isinstance(argument, tuple):
            return argument
        return tuple(_parse_sizes(part) for part in argument.split(_LAYER_SEPARATOR))

    def flag_type(self) -> str:
        return f"integer lists joined by {_LAYER_SEPARATOR!r}"


def _format_sizes(value: tuple) -> str:
    if value and isinstance(value[0], tuple):
        return _LAYER_SEPARATOR.join(_format_sizes(v) for v in value)
    return ",".join(str(v) for v in value)


def define_flags(
    names: Sequence[str] | None = None,
    *,
    defaults: bool = True,
    flag_values: flags.FlagValues = flags.FLAGS,
    config_class: type[TrainConfig] = TrainConfig,
) -> None:
    """Defines one absl flag per TrainConfig field, typed and documented from the field.

    Args:
      names: The fields to define flags for (default: all).
      defaults: Give each flag its field's default; False leaves every default None, for
        scripts whose flags override other configs (presets, grids).
      flag_values: The FlagValues to define them in.
      config_class: TrainConfig, or a subclass with more fields.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if names is not None and field.name not in names:
            continue
        default = field.default if defaults else None
        kind = _base_type(hints[field.name])
        help_text = field.metadata["help"]
        choices = field.metadata["choices"]
        common = {"name": field.name, "default": default, "help": help_text}
        minimum = field.metadata["minimum"]
        if choices is not None:
            flags.DEFINE_enum(enum_values=list(choices()), flag_values=flag_values, **common)
        elif kind is bool:
            flags.DEFINE_boolean(flag_values=flag_values, **common)
        elif kind is int:
            flags.DEFINE_integer(lower_bound=minimum, flag_values=flag_values, **common)
        elif kind is float:
            flags.DEFINE_float(lower_bound=minimum, flag_values=flag_values, **common)
        elif kind is str:
            flags.DEFINE_string(flag_values=flag_values, **common)
        elif kind is tuple and _nested(hints[field.name]):
            _define_sizes(_NestedSizesParser(), common, flag_values)
        elif kind is tuple:
            _define_sizes(_SizesParser(), common, flag_values)
        else:  # A new field of a new type needs a parser here.
            raise TypeError(f"no flag type for {field.name}: {hints[field.name]}")
        if field.metadata["positive"]:
            flags.register_validator(
                field.name,
                lambda value: value is None or value > 0,
                message=f"--{field.name} must be > 0",
                flag_values=flag_values,
            )


def _define_sizes(
    parser: flags.ArgumentParser, common: dict, flag_values: flags.FlagValues
) -> None:
    default = common["default"]
    flags.DEFINE(
        parser,
        common["name"],
        None if default is None else _format_sizes(default),
        common["help"],
        flag_values=flag_values,
        serializer=flags.ArgumentSerializer(),
    )


def _nested(hint: Any) -> bool:
    """Whether a tuple type holds tuples, as hidden_sizes does."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return any(typing.get_origin(a) is tuple for a in args)


def _base_type(hint: Any) -> Any:
    """int for `int | None`, and so on; tuple for tuple types."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if args and origin is not tuple:
        return _base_type(args[0])
    return hint


def flag_overrides(
    names: Sequence[str] | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
    config_class: type[TrainConfig] = TrainConfig,
) -> dict[str, Any]:
    """The TrainConfig fields whose flags were given on the command line, with their values."""
    fields = [f.name for f in dataclasses.fields(config_class)]
    return {
        name: flag_values[name].value
        for name in fields
        if (names is None or name in names) and name in flag_values and flag_values[name].present
    }
