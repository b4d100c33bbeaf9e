"""Command line: ``python -m jaxmri.evaluate classify|segment [every training flag] --folds K ...``.

Grouped, stratified k-fold cross-validation with model selection on validation only
(``jaxmri.evaluation.crossval``): one normal run directory per round (``predict`` works on each), then
``cv.json``, ``cv.md``, ``folds.png`` and (classification) ``roc.png`` in ``--out``.

    python -m jaxmri.evaluate classify --arch cnn --data ../shared/data/brain_tumor_dataset --folds 5 --out runs/cv-cnn
    python -m jaxmri.evaluate classify ... --tune lr=1e-4,3e-4,1e-3 weight_decay=0,4e-4
    python -m jaxmri.evaluate segment --data ... --masks ... --image-size 128 --loss bce+dice --folds 5 --out runs/cv-unet

Rerunning the same command continues an interrupted evaluation; other settings into the same ``--out``
are refused with the names of the differing settings.
"""

import dataclasses
import sys

from jaxmri.cli import run_command
from jaxmri.evaluation.bootstrap import RESAMPLES
from jaxmri.process import own_process
from jaxmri.train import build_parser, check_devices, config_from_args
from jaxmri.training.rundir import default_run_dir


def _evaluate_flags(p) -> None:
    p.add_argument("--folds", type=int, default=5, help="number of grouped, stratified folds (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the k-fold with split seeds seed, seed+1, ... "
                   "(default 1)")
    p.add_argument("--tune", nargs="+", metavar="FIELD=V1,V2", help="a grid over config fields, e.g. "
                   "lr=1e-4,3e-4,1e-3 weight_decay=0,4e-4; in every round each point trains without the test "
                   "fold and the best on that round's validation part is tested (nested selection)")
    p.add_argument("--bootstrap", type=int, default=RESAMPLES, help=f"bootstrap resamples of duplicate groups "
                   f"for the 95%% intervals (default {RESAMPLES})")


def main(argv=None) -> int:
    parser = build_parser("python -m jaxmri.evaluate", "Cross-validate a training config on brain MRI: grouped "
                          "k-fold, model selection on validation only, intervals.", extra=_evaluate_flags)
    args = parser.parse_args(argv)
    from jaxmri.evaluation.crossval import cross_validate, parse_grid

    given = " ".join(sys.argv[1:] if argv is None else argv)

    def body():
        from jaxmri.training.hosts import one_host_only

        one_host_only("python -m jaxmri.evaluate")
        try:
            if args.resume is not None:
                raise ValueError("an evaluation resumes by running the same command again (same --out); drop --resume.")
            cfg = config_from_args(args)
            check_devices(cfg)
            grid = parse_grid(args.tune, type(cfg))
            for point in grid:  # every point must make a valid config before any data is read
                try:
                    dataclasses.replace(cfg, **point)
                except ValueError as err:
                    raise ValueError(f"--tune point {point}: {err}") from None
            if args.folds < 2:
                raise ValueError(f"--folds must be at least 2, got {args.folds}.")
            if args.repeats < 1:
                raise ValueError(f"--repeats must be at least 1, got {args.repeats}.")
            if args.bootstrap < 100:
                raise ValueError(f"--bootstrap must be at least 100 resamples, got {args.bootstrap}.")
        except ValueError as err:
            parser.error(str(err))
        out = cfg.out or default_run_dir(f"cv-{args.task}")
        args.out = str(out)
        cross_validate(cfg, folds=args.folds, repeats=args.repeats, grid=grid, resamples=args.bootstrap, out=out,
                       overwrite=bool(cfg.overwrite), progress=not args.no_progress)

    def resume():
        return args.out and ("continue with the same command" + ("" if "--out" in given else f" and --out {args.out}")
                             + f", without --overwrite ({args.out} keeps every finished epoch of every round).")

    return run_command(body, resume)


if __name__ == "__main__":
    own_process()  # this process is ours: glibc's allocator and XLA's compile cache (jaxmri.process)
    sys.exit(main())
