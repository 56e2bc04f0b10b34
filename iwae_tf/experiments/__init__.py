"""The experiment harness on top of the core: what reproduces, plots and measures.

* `presets`: named published configurations, grids of them, and the published figures.
* `reproduce`: trains a grid under a stated budget and writes results tables and plots.
* `plots`: learning curves, sample and reconstruction grids, latent manifolds (matplotlib).
* `benchmarking`: training-step throughput, FLOP counts and memory, measured in subprocesses.
* `snr`: gradient signal-to-noise ratios against k, for any objective and estimator.

Imports point one way: `scripts/` use this package, this package uses the core `iwae_tf`, and
nothing in the core imports from here.
"""
