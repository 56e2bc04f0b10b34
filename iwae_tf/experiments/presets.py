"""Every published configuration in one place: named presets, grids of them, published figures.

A preset is a name for a dict of `iwae_tf.config.TrainConfig` overrides; `apply_preset` turns it
into a config. Two tables are covered:

* Burda, Grosse & Salakhutdinov (2016), Table 1: `burda_{dataset}_{1l|2l}_{vae|iwae}_k{1|5|50}`
  for dataset in {mnist, omniglot}. One stochastic layer is x-200-200-z(50); two are
  x-200-200-h1(100)-100-100-h2(50). Adam (beta1 0.9, beta2 0.999, epsilon 1e-4), minibatch 20,
  and the staged schedule of `iwae_tf.schedules` (3^i passes at 0.001 * 10^(-i/7), i = 0..7,
  3280 passes in all); the NLL is estimated with K = 5000 importance samples. MNIST presets
  train on `train[:59600]`, Burda et al.'s training set (their code holds out the last 400).
* Hernandez-Lobato, Bui, Li, Hernandez-Lobato & Turner, IWAE with uncertain network weights:
  `{iwae|iwaeu|iwaeu_rec}_seed_{dataset}`: one hidden layer of 400 units, 40 latents, k = 25,
  factorized Gaussian weights with local reparameterization (IWAEU_rec: in the encoder only).
  Their optimizer schedule is not published; the presets use Adam at a constant 1e-3 and set
  no number of epochs, which the caller (a grid's budget) must give. No weight-prior KL enters
  the bound (kl_weight 0), the bound on the weight-mixture model described in `iwae_tf.model`.
  `iwaeu_kl_seed_{dataset}` adds the KL to a N(0, 1) weight prior (kl_weight 1), the
  Bayesian-regularized variant; the grids `uncertain_weights_kl_{dataset}` hold all four.

`{stl|dreg}_mnist_1l_iwae_k{5|50}` are Burda et al.'s 1-layer MNIST IWAE trained with the STL or
DReG encoder gradient (Tucker et al. 2019); the grid `estimators_mnist_k5` sets them beside the
VAE and IWAE at k = 5.

The objectives of `iwae_tf.bounds` on the same MNIST setup (grid `objectives_mnist_1l`):
`vr_max_mnist_{1|2}l_k50` (Li & Turner 2016), `{miwae|piwae}_mnist_1l_k64` (M = 8 groups of 8)
and `ciwae_mnist_1l_k64` (beta = 0.05) (Rainforth et al. 2018), and reweighted wake-sleep,
`rws_mnist_1l_k{5|50}` and with DReG's encoder update `rws_dreg_mnist_1l_k{5|50}`. At k = 5,
`vr_{max|neg1|half}_mnist_1l_k5` (alpha -inf, -1, 0.5) complete the sweep of grid
`vr_sweep_mnist_1l_k5` with the IWAE (alpha 0) and the VAE (alpha 1, the mean of the log-weights);
grid `orderings_mnist_1l_k5` sets the IWAE, the IWAE trained with DReG and the VAE side by side.

`manifold_2d` is an IWAE with 2 latents, for the latent-manifold plot of `experiments.plots`.

The published figures live in the package data file `paper_results.json` (a copy of the
project's shared reference file); `published(name)` reads the entry of a preset: the test NLL
in nats (the uncertain-weights and VR tables report log-likelihoods, negated here), for Table 1
the active units per stochastic layer, and for DReG, MIWAE, PIWAE and CIWAE the figures of public
reproductions.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from iwae_tf import schedules
from iwae_tf.config import TrainConfig

PAPER_RESULTS_FILE = "paper_results.json"

BURDA_DATASETS: tuple[str, ...] = ("mnist", "omniglot")
BURDA_MODELS: tuple[str, ...] = ("vae", "iwae")
BURDA_KS: tuple[int, ...] = (1, 5, 50)
BURDA_ARCHITECTURES: dict[int, dict[str, Any]] = {
    1: {"latent_sizes": (50,), "hidden_sizes": ((200, 200),)},
    2: {"latent_sizes": (100, 50), "hidden_sizes": ((200, 200), (100, 100))},
}
UNCERTAIN_MODELS: tuple[str, ...] = ("iwae", "iwaeu", "iwaeu_rec")
UNCERTAIN_KL_MODEL = "iwaeu_kl"
"""Preset prefix of IWAEU with the weight-prior KL (`kl_weight` 1), beside the seed's table."""
ESTIMATOR_VARIANTS: tuple[str, ...] = ("stl", "dreg")
VR_SWEEP_ALPHAS: dict[str, float] = {"max": float("-inf"), "neg1": -1.0, "half": 0.5}
"""The VR alphas of the k = 5 sweep that are neither the IWAE (0) nor the VAE's objective (1)."""
PAPER_EVAL_K = 5000
# Burda et al.'s optimization and evaluation, shared by Table 1 and the manifold preset.
_BURDA_TRAINING: dict[str, Any] = {
    "batch_size": 20,
    "learning_rate": schedules.PAPER_BASE_RATE,
    "schedule": "burda",
    "stages": schedules.PAPER_STAGES,
    "epochs": schedules.burda_epochs(schedules.PAPER_STAGES),
    "eval_k": PAPER_EVAL_K,
}

# MNIST presets train on the first 59,600 training images, as Burda et al.'s code does
# (datasets.binarized_mnist holds out the last 400 as validation); the 400 stay free for model
# selection. Other datasets train on their whole training split.
_TRAIN_SPLITS: dict[str, str] = {"mnist": "train[:59600]"}


class _Reference(NamedTuple):
    """A preset's place in paper_results.json.

    Attributes:
      path: The keys down to its figure, or to a list of figures.
      index: Which entry of that list, or None.
      active_index: The index of its active-unit count in Table 1 (listed per k), or None.
    """

    path: tuple[str, ...]
    index: int | None = None
    active_index: int | None = None


# Tables that report test log-likelihoods (negated into NLLs here), not NLLs.
_LOG_LIKELIHOOD_TABLES = frozenset({"iwae_uncertain_weights", "li_turner2016_vr"})
_LATER_WORK = "later_work_mnist_1_layer_k_samples"


def _burda_name(dataset: str, layers: int, model: str, k: int) -> str:
    return f"burda_{dataset}_{layers}l_{model}_k{k}"


def _estimator_name(estimator: str, k: int) -> str:
    return f"{estimator}_mnist_1l_iwae_k{k}"


def _uncertain_name(model: str, dataset: str) -> str:
    return f"{model}_seed_{dataset}"


def _build_registry() -> tuple[dict[str, dict[str, Any]], dict[str, _Reference]]:
    presets: dict[str, dict[str, Any]] = {}
    references: dict[str, _Reference] = {}
    for dataset in BURDA_DATASETS:
        for layers, architecture in BURDA_ARCHITECTURES.items():
            for model in BURDA_MODELS:
                for k_index, k in enumerate(BURDA_KS):
                    name = _burda_name(dataset, layers, model, k)
                    presets[name] = {
                        "dataset": dataset,
                        "model": model,
                        "k": k,
                        **architecture,
                        **_BURDA_TRAINING,
                        **_train_split(dataset),
                    }
                    table_layers = "1_layer" if layers == 1 else f"{layers}_layers"
                    references[name] = _Reference(
                        ("burda2016_iwae", dataset, table_layers, model, f"k{k}"),
                        active_index=k_index,
                    )
    for dataset in BURDA_DATASETS:
        for model in UNCERTAIN_MODELS:
            name = _uncertain_name(model, dataset)
            presets[name] = {
                "dataset": dataset,
                "model": model,
                "k": 25,
                "latent_sizes": (40,),
                "hidden_sizes": ((400,),),
                "batch_size": 20,
                "learning_rate": 1e-3,
                "schedule": "constant",
                "uncertain_layer_kind": "local_reparameterization",
                "kl_weight": 0.0,
                "eval_k": PAPER_EVAL_K,
                **_train_split(dataset),
            }
            references[name] = _Reference(
                ("iwae_uncertain_weights", "test_log_likelihood", dataset, model)
            )
        # The Bayesian-regularized variant (a KL to a N(0, 1) weight prior), which the seed's
        # table does not have: no published figure.
        presets[_uncertain_name(UNCERTAIN_KL_MODEL, dataset)] = {
            **presets[_uncertain_name("iwaeu", dataset)],
            "kl_weight": 1.0,
        }
    # Burda et al.'s 1-layer IWAE with the encoder gradient of STL or DReG (iwae_tf.estimators):
    # Tucker et al.'s comparison, on the Table 1 setup; DReG's figures are those of a public
    # reproduction (paper_results.json, later work).
    for estimator in ESTIMATOR_VARIANTS:
        for k_index, k in enumerate(BURDA_KS):
            if k == 1:
                continue
            name = _estimator_name(estimator, k)
            presets[name] = {**presets[_burda_name("mnist", 1, "iwae", k)], "estimator": estimator}
            if estimator == "dreg":
                references[name] = _Reference((_LATER_WORK, "dreg_iwae_k1_k5_k50"), k_index)
    # The relatives of iwae_tf.bounds on Burda et al.'s MNIST setup (architecture, optimizer,
    # schedule, K = 5000), each with its published figure where there is one.
    for layers in (1, 2):
        presets[f"vr_max_mnist_{layers}l_k50"] = {
            **presets[_burda_name("mnist", layers, "iwae", 50)],
            "objective": "vr",
            "alpha": float("-inf"),
        }
        references[f"vr_max_mnist_{layers}l_k50"] = _Reference(
            ("li_turner2016_vr", "mnist_test_log_likelihood", f"L{layers}_K50", "vr_max")
        )
    # Li & Turner's alpha at Burda et al.'s 1-layer k = 5 (issue #16's sweep): alpha = 0 is the
    # IWAE preset and alpha = 1 the VAE's objective, so only the other three need presets.
    for alpha_name, alpha in VR_SWEEP_ALPHAS.items():
        presets[f"vr_{alpha_name}_mnist_1l_k5"] = {
            **presets[_burda_name("mnist", 1, "iwae", 5)],
            "objective": "vr",
            "alpha": alpha,
        }
    # Rainforth et al.'s budget: M = 8 groups of K = 8 samples, k = 64 in all.
    for objective, parameter, key in (
        ("miwae", {"num_groups": 8}, "miwae_m8_k8"),
        ("piwae", {"num_groups": 8}, "piwae_m8_k8"),
        ("ciwae", {"beta": 0.05}, "ciwae_beta_0.05"),
    ):
        name = f"{objective}_mnist_1l_k64"
        presets[name] = {
            **presets[_burda_name("mnist", 1, "iwae", 50)],
            "k": 64,
            "objective": objective,
            **parameter,
        }
        references[name] = _Reference((_LATER_WORK, key))
    for k in BURDA_KS[1:]:
        for estimator in ("reparam", "dreg"):
            suffix = "" if estimator == "reparam" else "_dreg"
            presets[f"rws{suffix}_mnist_1l_k{k}"] = {
                **presets[_burda_name("mnist", 1, "iwae", k)],
                "objective": "rws",
                "estimator": estimator,
            }
    presets["manifold_2d"] = {
        "dataset": "mnist",
        "model": "iwae",
        "k": 5,
        "latent_sizes": (2,),
        "hidden_sizes": ((200, 200),),
        **_BURDA_TRAINING,
        **_train_split("mnist"),
    }
    return presets, references


def _train_split(dataset: str) -> dict[str, str]:
    return {"train_split": _TRAIN_SPLITS[dataset]} if dataset in _TRAIN_SPLITS else {}


PRESETS, _REFERENCES = _build_registry()
"""Preset name -> TrainConfig field overrides."""


def _burda_grid(datasets: Sequence[str], layer_counts: Sequence[int]) -> tuple[str, ...]:
    return tuple(
        _burda_name(dataset, layers, model, k)
        for dataset in datasets
        for layers in layer_counts
        for model in BURDA_MODELS
        for k in BURDA_KS
    )


GRIDS: dict[str, tuple[str, ...]] = {
    "burda_table1": _burda_grid(BURDA_DATASETS, (1, 2)),
    **{f"burda_table1_{d}": _burda_grid((d,), (1, 2)) for d in BURDA_DATASETS},
    **{
        f"burda_table1_{d}_{layers}l": _burda_grid((d,), (layers,))
        for d in BURDA_DATASETS
        for layers in (1, 2)
    },
    "uncertain_weights": tuple(
        _uncertain_name(m, d) for d in BURDA_DATASETS for m in UNCERTAIN_MODELS
    ),
    **{
        f"uncertain_weights_{d}": tuple(_uncertain_name(m, d) for m in UNCERTAIN_MODELS)
        for d in BURDA_DATASETS
    },
    **{
        f"uncertain_weights_kl_{d}": tuple(
            _uncertain_name(m, d) for m in (*UNCERTAIN_MODELS, UNCERTAIN_KL_MODEL)
        )
        for d in BURDA_DATASETS
    },
    # Burda et al.'s ordering (IWAE below VAE) with either IWAE encoder gradient, and the VR
    # sweep over alpha in {-inf, -1, 0, 0.5, 1} at the same setup (issue #16).
    "orderings_mnist_1l_k5": (
        _burda_name("mnist", 1, "iwae", 5),
        _estimator_name("dreg", 5),
        _burda_name("mnist", 1, "vae", 5),
    ),
    "vr_sweep_mnist_1l_k5": (
        "vr_max_mnist_1l_k5",
        "vr_neg1_mnist_1l_k5",
        _burda_name("mnist", 1, "iwae", 5),
        "vr_half_mnist_1l_k5",
        _burda_name("mnist", 1, "vae", 5),
    ),
    "quick": tuple(_burda_name("mnist", 1, m, k) for m in ("iwae", "vae") for k in (1, 5)),
    "manifold_2d": ("manifold_2d",),
    "objectives_mnist_1l": (
        "vr_max_mnist_1l_k50",
        *(f"{o}_mnist_1l_k64" for o in ("miwae", "piwae", "ciwae")),
        "rws_mnist_1l_k50",
        "rws_dreg_mnist_1l_k50",
    ),
    "estimators_mnist_k5": (
        _burda_name("mnist", 1, "vae", 5),
        _burda_name("mnist", 1, "iwae", 5),
        *(_estimator_name(e, 5) for e in ESTIMATOR_VARIANTS),
    ),
}
"""Grid name -> preset names, in the order they run (and appear in results tables)."""


def _unknown(kind: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} ({len(known)} {kind}s: see presets.py)")


def preset_overrides(name: str) -> dict[str, Any]:
    """A copy of the TrainConfig overrides of preset `name`.

    Raises:
      ValueError: Unknown preset; the message lists close matches.
    """
    if name not in PRESETS:
        raise _unknown("preset", name, sorted(PRESETS))
    return dict(PRESETS[name])


def grid_presets(name: str) -> list[str]:
    """The preset names of grid `name`.

    Raises:
      ValueError: Unknown grid; the message lists close matches.
    """
    if name not in GRIDS:
        raise _unknown("grid", name, sorted(GRIDS))
    return list(GRIDS[name])


def resolve_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Makes a dict of TrainConfig overrides self-consistent about its schedule.

    With schedule "burda" the number of epochs follows from the stages (burda_epochs(stages)),
    so it is set from them; an explicitly different `epochs` is an error rather than silently
    ignored.

    Raises:
      ValueError: schedule "burda" with epochs != burda_epochs(stages).
    """
    values = dict(values)
    if values.get("schedule") == "burda":
        stages = values.get("stages", schedules.PAPER_STAGES)
        epochs = schedules.burda_epochs(stages)
        if values.get("epochs", epochs) != epochs:
            raise ValueError(
                f"schedule 'burda' with {stages} stages trains {epochs} epochs, not "
                f"{values['epochs']}: set stages instead, or schedule='constant'"
            )
        values["epochs"] = epochs
    return values


def apply_preset(name: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of preset `name`, with `overrides` taking precedence.

    Overriding `stages` of a "burda" preset truncates its schedule and sets `epochs` to
    burda_epochs(stages); overriding `epochs` needs schedule="constant" as well.

    Args:
      name: A key of `PRESETS`.
      **overrides: TrainConfig fields, e.g. data_dir, steps_per_epoch, stages.

    Returns:
      The config (not validated: TrainConfig.validate() runs when training starts).

    Raises:
      ValueError: Unknown preset or field, or an inconsistent schedule (`resolve_overrides`).
    """
    values = preset_overrides(name)
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in overrides:
        if key not in fields:
            raise _unknown("TrainConfig field", key, fields)
    if "stages" in overrides and "epochs" not in overrides:
        values.pop("epochs", None)  # Recomputed from the new stages.
    values.update(overrides)
    return TrainConfig(**resolve_overrides(values))


class Published(NamedTuple):
    """A published figure for one preset.

    Attributes:
      nll: Test negative log-likelihood in nats.
      nll_stderr: Its standard error, where published (else None).
      active_units: Active latent units per stochastic layer, bottom first, where published.
      source: The publication.
    """

    nll: float
    nll_stderr: float | None
    active_units: tuple[int, ...] | None
    source: str


@functools.cache
def load_paper_results() -> dict[str, Any]:
    """The package's copy of the published figures (paper_results.json), parsed."""
    text = importlib.resources.files("iwae_tf.experiments").joinpath(PAPER_RESULTS_FILE).read_text()
    return json.loads(text)


def _parse_active(value: int | str) -> tuple[int, ...]:
    # Table 1 writes one layer's count as an int and two layers' as "h1+h2".
    return tuple(int(part) for part in str(value).split("+"))


def published(name: str) -> Published | None:
    """The published figures of preset `name`, or None if it has none (e.g. manifold_2d).

    Raises:
      ValueError: Unknown preset.
    """
    preset_overrides(name)  # Validates the name.
    if name not in _REFERENCES:
        return None
    reference = _REFERENCES[name]
    results = load_paper_results()
    table = results[reference.path[0]]
    source = table.get("source") or table["_about"]
    entry: Any = results
    for key in reference.path:
        entry = entry[key]
    if reference.index is not None:
        entry = entry[reference.index]
    stderr = None
    if isinstance(entry, list):  # [value, standard error]
        entry, stderr = entry
    nll = -float(entry) if reference.path[0] in _LOG_LIKELIHOOD_TABLES else float(entry)
    active = None
    if reference.active_index is not None:
        table_row: Any = results
        for key in reference.path[:-1]:
            table_row = table_row[key]
        active = _parse_active(table_row["active"][reference.active_index])
    return Published(nll, None if stderr is None else float(stderr), active, source)


def published_nll(name: str) -> float | None:
    """The published test NLL (nats, K = 5000) of preset `name`, or None."""
    figures = published(name)
    return None if figures is None else figures.nll


def published_active_units(name: str) -> tuple[int, ...] | None:
    """Published active units per stochastic layer of preset `name`, or None."""
    figures = published(name)
    return None if figures is None else figures.active_units
