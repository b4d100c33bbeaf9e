"""Using a trained run: ``load_run`` (config + model + checkpoint), ``predict_files`` (the records and
PNGs of ``python -m jaxmri.predict``) and ``outputs`` (pasting a prediction back at the scan's size)."""

from jaxmri.inference.load import Run, load_run
from jaxmri.inference.predictor import collect_inputs, output_names, predict_files

__all__ = ["Run", "collect_inputs", "load_run", "output_names", "predict_files"]
