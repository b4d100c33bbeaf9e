"""Command line: ``python -m jaxmri.predict --run RUN --out OUT [--explain] INPUT...``.

Runs a trained run directory (SmallCNN, VGG19 or U-Net) on image files and/or folders, with exactly
the preprocessing training used, and writes ``OUT/predictions.jsonl`` (one record per input, in input
order) plus, for U-Nets, a mask and an overlay per image at the image's own size, and with
``--explain`` a Grad-CAM heat map per image. ``--localisation MASKS`` scores the Grad-CAM maps against
tumor masks (pointing game and mass inside, beside a centred baseline) into ``OUT/localisation.json``.

Exit status: 0; 1 when some image could not be read (each is named on stderr and has an ``error``
record; every other image is still predicted); 2 for a usage error (``jaxmri.errors.JaxmriError``:
missing or foreign run directory, a checkpoint that does not fit its config, a used ``--out``
without ``--overwrite``, no images found, a ``--localisation`` source that cannot be read), before
anything is written. Only "no mask matches an input image" is found after the predictions are written
(they are kept).
"""

import argparse
import json
import sys
from pathlib import Path

from jaxmri.errors import DataError, JaxmriError
from jaxmri.process import own_process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxmri.predict",
        description="Use a trained run (python -m jaxmri.train) on new MRI scans.",
        epilog="Outputs are named after each input's file name without extension; inputs that share one get "
               "'<stem>-<8 hex digits of the SHA-1 of the path as given>' so none overwrites another.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    parser.add_argument("--run", required=True, help="a run directory written by python -m jaxmri.train")
    parser.add_argument("--out", required=True, help="folder for predictions.jsonl and the PNGs")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    parser.add_argument("--explain", action="store_true", help="classifiers: Grad-CAM of the tumor class "
                        "(OUT/<name>_gradcam.png and gradcam_peak in each record)")
    parser.add_argument("--localisation", metavar="MASKS", help="classifiers: score Grad-CAM against these tumor "
                        "masks (COCO .json, Labelbox export or PNG folder, matched by file stem) and write "
                        "OUT/localisation.json; implies --explain")
    parser.add_argument("--batch-size", type=int, help="images per model call (default: the run's batch size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _localisation(records: list[dict], masks_source: str) -> dict:
    from jaxmri.data.masks import load_masks
    from jaxmri.evaluation.localisation import localisation_scores

    scored = [r for r in records if "_heat" in r]
    sizes = {}
    for record in scored:
        sizes.setdefault(Path(record["file"]).stem.lower(), record["_heat"].shape)
    masks = load_masks(masks_source, sizes, skip_unmatched=True)  # annotations of images not given are left out
    matched = [r for r in scored if Path(r["file"]).stem.lower() in masks]
    if not matched:
        raise DataError(f"{masks_source}: no mask matches an input image's file name; pass the images the masks "
                        "were drawn on.")
    scores = localisation_scores([r["_heat"] for r in matched], [masks[Path(r["file"]).stem.lower()] > 0 for r in matched],
                                 [r["box"] for r in matched])
    for record, row in zip(matched, scores["per_image"]):
        row["file"] = record["file"]
    return {"masks": str(masks_source), **scores}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise DataError(f"--batch-size must be at least 1, got {args.batch_size}.")
        from jaxmri.inference.load import load_run
        from jaxmri.inference.predictor import collect_inputs, predict_files
        from jaxmri.training.rundir import make_run_dir, write_json

        run = load_run(args.run)
        files = collect_inputs(args.inputs)
        explain = args.explain or args.localisation is not None
        if explain:  # checked here too, so that nothing is written first
            run.require_classifier("--localisation" if args.localisation is not None else "--explain")
        if args.localisation is not None:
            if not Path(args.localisation).exists():
                raise DataError(f"--localisation {args.localisation}: no such file or folder.")
            from jaxmri.data.masks import load_masks

            load_masks(args.localisation, {}, skip_unmatched=True)  # a broken mask source stops us before writing
        out = make_run_dir(args.out, "predict", overwrite=args.overwrite)
        print(f"{run.task} run {run.path} ({type(run.model).__name__}, {run.cfg.image_size}px): {len(files)} images")
        records = predict_files(run, files, out, explain=explain, batch_size=args.batch_size,
                                progress=not args.no_progress, keep_heat=args.localisation is not None)
        with open(out / "predictions.jsonl", "w") as handle:
            for record in records:
                handle.write(json.dumps({k: v for k, v in record.items() if k != "_heat"}) + "\n")
        failed = [r for r in records if "error" in r]
        for record in failed:
            print(f"error: {record['file']}: {record['error']}", file=sys.stderr)
        print(f"{len(records) - len(failed)} of {len(records)} images predicted -> {out / 'predictions.jsonl'}")
        if args.localisation is not None:
            scores = _localisation(records, args.localisation)
            write_json(out / "localisation.json", scores)
            model, base = scores["gradcam"], scores["centred_baseline"]
            print(f"localisation on {scores['images']} annotated images: pointing game {model['pointing_game']:.3f} "
                  f"(centred baseline {base['pointing_game']:.3f}), Grad-CAM mass inside the mask "
                  f"{model['mass_inside']:.3f} (baseline {base['mass_inside']:.3f}; the masks cover "
                  f"{scores['mask_area']:.1%} of the image) -> {out / 'localisation.json'}")
    except JaxmriError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
    return 1 if failed else 0


if __name__ == "__main__":
    own_process()  # this process is ours: glibc's allocator and XLA's compile cache (jaxmri.process)
    sys.exit(main())
