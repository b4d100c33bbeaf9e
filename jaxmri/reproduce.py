"""Command line: ``python -m jaxmri.reproduce --data ../shared/data --budget quick|paper --out report/``.

Runs the paper's experiments (SmallCNN and frozen VGG19 on one split, Table 4; the U-Net on every
annotated image and on a third of them, Section 3.2) and our cross-validated versions (SmallCNN, ResCNN,
U-Net), then writes ``REPORT.md`` with the paper's Tables 1 and 4 beside ours, the figures, the exact
commands, package versions, machine and wall times (``jaxmri.evaluation.reproduction`` and ``.report``).

``--budget quick`` runs everything with few epochs and 3 folds (minutes on 2 CPU cores, and the report
says so at the top); ``--budget paper`` is the full protocol (about 1.5 hours on 2 CPU cores). Every
image and annotation is read once before the first experiment. Rerunning the same command continues
where it stopped; finished experiments are kept.
"""

import argparse
import sys

from jaxmri.config import DEFAULT_VGG19_WEIGHTS
from jaxmri.cli import run_command
from jaxmri.process import own_process


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxmri.reproduce", description="Reproduce the paper's experiments "
                                "and our cross-validated versions; write REPORT.md.")
    p.add_argument("--data", help="the folder holding brain_tumor_dataset/ and annotations/tumor_polygons_coco.json "
                   "(e.g. ../shared/data), or a folder of class folders (then pass --masks); without it the generated "
                   "phantom set is used")
    p.add_argument("--masks", help="tumor annotations, if not annotations/tumor_polygons_coco.json under --data")
    p.add_argument("--budget", choices=("quick", "paper"), default="quick", help="quick = few epochs, 3 folds "
                   "(minutes); paper = the full protocol (default quick)")
    p.add_argument("--weights", default=DEFAULT_VGG19_WEIGHTS, help="converted VGG19 ImageNet weights; when the file "
                   f"is absent VGG19 runs with a clearly labelled random-init backbone (default {DEFAULT_VGG19_WEIGHTS})")
    p.add_argument("--out", default="report", help="output folder: REPORT.md, figures/ and runs/ (default report)")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that holds another plan")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from jaxmri.evaluation.report import write_report
    from jaxmri.evaluation.reproduction import find_data, plan, run_plan

    started = []

    def body():
        from jaxmri.training.hosts import one_host_only

        one_host_only("python -m jaxmri.reproduce")
        data, masks = find_data(args.data, args.masks)
        experiments = plan(args.budget, data=data, masks=masks, weights=args.weights)
        started.append(True)
        records = run_plan(experiments, args.out, budget=args.budget, overwrite=args.overwrite)
        print(f"report in {write_report(experiments, args.out, budget=args.budget, records=records, argv=argv)}")

    def resume():
        return started and (f"continue with the same command, without --overwrite ({args.out} keeps every finished "
                            "experiment and epoch).")

    return run_command(body, resume)


if __name__ == "__main__":
    own_process()  # this process is ours: glibc's allocator and XLA's compile cache (jaxmri.process)
    sys.exit(main())
