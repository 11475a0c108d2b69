"""Training of the denoiser: settings (:mod:`.config`), reference images and noisy patches
(:mod:`.data`, real CT from :mod:`.realct`), the loop (:mod:`.train`) and the shipped weights with
their model card (:mod:`.card`). Command line: ``python -m models.training`` (:mod:`.__main__`).

Imports run one way: the network and its weight files (``models.autoencoder``, ``models.store``)
import nothing of the project; ``pipeline`` (the data path, the QA yardstick, the synthetic data of
``pipeline.synthetic``) uses them for inference; training builds on both; ``tasks`` wires everything.
"""
