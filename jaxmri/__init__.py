"""jaxmri: brain-MRI tumor classification and segmentation in JAX / Flax NNX.

A reimplementation of Blue, Burkhart & Manuel (2024), "Using Image Classification and Semantic
Segmentation for Tumor Detection in MRI Data" (see README.md for the map from paper to files).
"""

__version__ = "0.1.0"
