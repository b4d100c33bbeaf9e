"""jaxmri: brain-MRI tumor classification and segmentation in JAX / Flax NNX.

A reimplementation of Blue, Burkhart & Manuel (2024), "Using Image Classification and Semantic
Segmentation for Tumor Detection in MRI Data" (see README.md for the map from paper to files).

The package follows the pipeline: ``data`` (files -> cached arrays -> batches), ``models`` (SmallCNN,
VGG19Classifier, UNet, Grad-CAM), ``training`` (steps and one epoch loop per task), ``evaluation``
(metrics, plots, localisation), ``inference`` (using a trained run), ``weights`` (ImageNet VGG19).
The commands are ``python -m jaxmri.train``, ``python -m jaxmri.evaluate`` (grouped k-fold),
``python -m jaxmri.predict`` and ``python -m jaxmri.weights``;
every error a user can cause is a ``jaxmri.errors.JaxmriError``.
"""

__version__ = "0.1.0"
