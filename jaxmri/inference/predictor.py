"""Running a loaded run on new scans: ``predict_files`` behind ``python -m jaxmri.predict``.

Each file goes through exactly training's path (``read_image`` for any mode, ``brain_crop`` for the
crop and resize, the model's own normalisation inside its ``__call__``), in fixed-size batches so the
step compiles once. A file that cannot be read gets an ``error`` record and the others go on.

Output names: ``<stem>_mask.png`` and so on, where ``stem`` is the input's file name without its
extension; when two inputs share a stem (``a/Y1.jpg`` and ``b/Y1.jpg``, or ``Y92.jpg`` and
``Y92.png``), each of them gets ``<stem>-<first 8 hex digits of the SHA-1 of its path as given>``
instead, so no output overwrites another and a name never depends on the order of the inputs.
"""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from jaxmri.data.batching import apply_in_batches
from jaxmri.data.crop import brain_crop
from jaxmri.data.images import IMAGE_EXTENSIONS, read_image
from jaxmri.errors import BadImageError, DataError
from jaxmri.inference.load import Run
from jaxmri.inference.outputs import paste_back, peak_xy, write_heatmap, write_mask, write_overlay
from jaxmri.models.gradcam import gradcam
from jaxmri.training.classify import Evaluator, softmax, tumor_class, winograd_cache
from jaxmri.training.segment_steps import predict_step


def collect_inputs(paths) -> list[str]:
    """Files as given, and every image file under each folder (recursively, sorted, hidden ones skipped).

    Raises ``DataError`` for a path that does not exist or when no image is found at all.
    """
    files = []
    for given in map(str, paths):
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            files += [str(p) for p in found]
        elif path.exists():
            files.append(given)
        else:
            raise DataError(f"{given}: no such file or folder; pass image files and/or folders of images.")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths)) or 'the arguments'} (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}); pass image files or folders that hold them.")
    return files


def output_names(files: list[str]) -> list[str]:
    """The output stem of each input (see the module docstring)."""
    stems = [Path(f).stem for f in files]
    counts = Counter(stems)
    return [stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(f.encode()).hexdigest()[:8]}"
            for stem, f in zip(stems, files)]


def _prepare(files: list[str], run: Run) -> tuple[list, list[str | None]]:
    """Per file ``(rgb, crop, box)`` or None, and per file the reason it failed (None when it did not)."""
    size = run.cfg.image_size
    prepared, errors = [], []
    for file in files:
        try:
            rgb = read_image(file)
            crop, box = brain_crop(rgb, size, run.channels)
            prepared.append((rgb, crop, box))
            errors.append(None)
        except BadImageError as err:
            prepared.append(None)
            errors.append(err.reason)
    return prepared, errors


def predict_files(run: Run, files: list[str], out: Path, *, explain: bool = False, batch_size: int | None = None,
                  progress: bool = True, keep_heat: bool = False) -> list[dict]:
    """One record per file, in order (see README, "Use a trained model"); writes the PNGs into ``out``.

    ``explain`` (classifiers): Grad-CAM of the tumor class as ``<name>_gradcam.png`` and ``gradcam_peak``.
    ``keep_heat``: also keep each Grad-CAM map at the image's size under the record's ``"_heat"`` key
    (for the localisation score; not JSON). Decoding happens ``batch_size`` files at a time (default:
    the run's own batch size), so memory stays bounded for any number of files. A VGG19's Winograd
    kernels are transformed once for all the files (``training.classify.winograd_cache``).
    """
    with winograd_cache(run.model):
        return _predict_files(run, files, out, explain=explain, batch_size=batch_size, progress=progress,
                              keep_heat=keep_heat)


def _predict_files(run: Run, files: list[str], out: Path, *, explain: bool, batch_size: int | None, progress: bool,
                   keep_heat: bool) -> list[dict]:
    if explain:
        run.require_classifier("--explain (Grad-CAM)")
    batch_size = batch_size or run.cfg.batch_size
    names, records = output_names(files), []
    tumor = tumor_class(run.class_names)
    bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress)
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        prepared, errors = _prepare(chunk, run)
        good = [i for i, p in enumerate(prepared) if p is not None]
        crops = np.stack([prepared[i][1] for i in good]) if good else None
        if good and run.task == "segment":
            outputs = apply_in_batches(predict_step, run.model, crops, batch_size)[..., 0]
        elif good:  # the class probabilities exactly as validation and test computed them (with --tta if the run used it)
            probs = softmax(Evaluator(run.model, crops, np.zeros(len(crops), np.int32), batch_size,
                                      tta=run.cfg.tta).logits(run.model))
            heats = apply_in_batches(gradcam, run.model, crops, batch_size, target=tumor)[0] if explain else None
        chunk_records = [{"file": f, "error": reason} for f, reason in zip(chunk, errors)]
        for j, i in enumerate(good):
            rgb, _, box = prepared[i]
            name, record = names[start + i], {"file": chunk[i]}
            size = rgb.shape[:2]
            if run.task == "segment":
                mask = paste_back(outputs[j], box, size) > run.cfg.threshold
                record.update(tumor_fraction=float(mask.mean()), tumor_pixels=int(mask.sum()), box=list(box),
                              size=list(size), mask=f"{name}_mask.png", overlay=f"{name}_overlay.png")
                write_mask(out / record["mask"], mask)
                write_overlay(out / record["overlay"], rgb, mask)
            else:
                p = probs[j]
                record.update(label=run.class_names[int(np.argmax(p))], tumor_probability=float(p[tumor]),
                              probabilities={c: float(v) for c, v in zip(run.class_names, p)}, box=list(box))
                if explain:
                    heat = paste_back(heats[j], box, size)
                    record.update(gradcam_peak=list(peak_xy(heat)), gradcam=f"{name}_gradcam.png")
                    write_heatmap(out / record["gradcam"], rgb, heat, record["gradcam_peak"])
                    if keep_heat:
                        record["_heat"] = heat
            chunk_records[i] = record
        records += chunk_records
        bar.update(len(chunk))
    bar.close()
    return records
