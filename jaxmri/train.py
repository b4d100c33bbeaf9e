"""Command line: ``python -m jaxmri.train classify|segment [flags]``.

The entry point only parses flags into a frozen config (``jaxmri.config``) and calls the run function;
any problem with the input (bad flag value, bad file, missing weights, used run directory) is a
``jaxmri.errors.JaxmriError``: printed as one line, and the process exits with its status (2), before
training starts.

``--config RUN/config.json`` repeats a run: the saved config is the starting point and the flags given
override it (a new run directory unless ``--out`` says otherwise).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from jaxmri.config import ARCHS, LOSSES, OPTIMIZERS, PRETRAINED, SCHEDULES, ClassifyConfig, SegmentConfig, load_config
from jaxmri.cli import run_command
from jaxmri.errors import RunDirError
from jaxmri.process import own_process

# The defaults each flag's help text quotes.
CLASSIFY_DEFAULTS, SEGMENT_DEFAULTS = ClassifyConfig(), SegmentConfig()


def _common(p: argparse.ArgumentParser, d) -> None:
    p.add_argument("--config", help="repeat a run: start from that run's config.json; the other flags given "
                   "override it (it writes a new run directory unless --out names one)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run that stopped (crash, Ctrl-C, full disk) after "
                   "its last finished epoch, bit-identical to a run never stopped; flags given must match its config")
    p.add_argument("--data", help="folder with one sub-folder per class (yes/ = tumor, no/ = no tumor), e.g. "
                   "../shared/data/brain_tumor_dataset; without it a generated phantom set is used")
    p.add_argument("--out", help="run directory for results (default: runs/<time>-<task>)")
    p.add_argument("--epochs", type=int, help=f"passes over the training images (default {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"images per optimizer step (default {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {d.lr}, paper Table 3)")
    p.add_argument("--weight-decay", type=float, help=f"L2 penalty added to the gradient, as PyTorch's Adam does "
                   f"(default {d.weight_decay})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adam = the paper (L2 in the gradient); adamw = "
                   "decoupled weight decay (default adam)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning rate over the run: constant = the paper; cosine = "
                   "decay to 0 by the last step (default constant)")
    p.add_argument("--devices", type=int, help="train data-parallel over this many devices, the batch split "
                   "between them (default 0 = every visible device; one CPU is one device)")
    p.add_argument("--seed", type=int, help=f"seed for the split, initial weights, shuffling and augmentation "
                   f"(default {d.seed}); the same seed gives the same run")
    p.add_argument("--image-size", type=int, help=f"side the cropped images are resized to (default {d.image_size})")
    p.add_argument("--max-angle", type=float, help=f"random rotation range in degrees (default {d.max_angle})")
    p.add_argument("--test-fraction", type=float, help=f"share of images (whole duplicate groups) held out for the "
                   f"test (default {d.test_fraction}, about the paper's Table 1)")
    p.add_argument("--val-fraction", type=float, help=f"share of the training part held out for validation, which "
                   f"picks the best epoch (default {d.val_fraction}; 0 keeps the last epoch)")
    p.add_argument("--skip-unreadable", action="store_true", default=None, help="train on the readable images and "
                   "list the unreadable ones, instead of stopping")
    p.add_argument("--overwrite", action="store_true", default=None, help="allow writing into a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar within an epoch (for logs; the "
                   "line per epoch still prints)")


def build_parser(prog: str = "python -m jaxmri.train", description: str = "Train the paper's models on brain MRI: "
                 "`classify` (tumor yes/no) or `segment` (tumor mask).", extra=None) -> argparse.ArgumentParser:
    """The training flags; ``extra(subparser)`` adds a command's own flags to both tasks (``jaxmri.evaluate``
    takes every training flag plus its own, so the same flag always means the same thing)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="task", required=True)
    pc = sub.add_parser("classify", help="tumor / no-tumor classification (paper Section 2)",
                        description="Train SmallCNN (Table 2) or a frozen VGG19 with a new 2-way head.")
    pc.add_argument("--arch", choices=ARCHS, help="cnn = SmallCNN trained from scratch; rescnn = our residual "
                    "CNN with batch norm (not the paper's); vgg19 = "
                    "VGG19 with frozen pre-trained layers and a new head (default cnn)")
    pc.add_argument("--pretrained", choices=PRETRAINED, help="vgg19 backbone: imagenet = converted "
                    "ImageNet weights (the paper); none = random init, clearly labelled (default imagenet)")
    pc.add_argument("--weights", help=f"converted ImageNet weights file (default {CLASSIFY_DEFAULTS.weights}; make it with "
                    "`python -m jaxmri.weights download vgg19`)")
    pc.add_argument("--label-smoothing", type=float, help="cross-entropy against targets smoothed by this much "
                    "(0 = the paper's plain cross-entropy; default 0)")
    pc.add_argument("--tta", action="store_true", default=None, help="test-time augmentation: average the logits of "
                    "each image and its mirror image, in validation, test and predict (default off)")
    _common(pc, CLASSIFY_DEFAULTS)
    ps = sub.add_parser("segment", help="tumor segmentation with a U-Net (paper Section 3)",
                        description="Train the paper's U-Net on tumor masks.",
                        epilog="On a CPU, --image-size 128 --loss bce+dice --epochs 150 is the recommended run: "
                               "4x cheaper steps than the paper's 256x256 (README, 'Results on the real data').")
    ps.add_argument("--masks", help="tumor annotations: a COCO polygon .json, a Labelbox .json/.ndjson export, or a "
                    "folder of PNG masks (required with --data)")
    ps.add_argument("--loss", choices=LOSSES, help="bce = the paper's pixel cross-entropy "
                    "(default), dice = soft Dice, bce+dice = their sum")
    ps.add_argument("--width", type=int, help=f"filters of the first U-Net block (64 = the paper; default "
                    f"{SEGMENT_DEFAULTS.width} to fit a CPU budget)")
    ps.add_argument("--negatives", type=int, help="add this many no/ images with empty masks (default 0)")
    ps.add_argument("--train-fraction", type=float, help="train on this share of the training part's duplicate "
                    "groups, per class (1/3: the paper's Section 3.2 comparison); validation and test unchanged "
                    "(default 1)")
    ps.add_argument("--threshold", type=float, help=f"probability above which a pixel is tumor (default {SEGMENT_DEFAULTS.threshold})")
    _common(ps, SEGMENT_DEFAULTS)
    if extra is not None:
        extra(pc), extra(ps)
    return parser


def config_from_args(args: argparse.Namespace):
    """The task's config, overridden by the flags the user gave.

    Without ``--config`` the start is the paper's defaults; with it, that run's saved config, less its
    ``out`` and ``overwrite`` (a repeat never writes into the run it repeats by accident). Raises
    ``ValueError`` for a bad flag value and ``RunDirError`` for a config file that cannot be used.
    """
    cls = ClassifyConfig if args.task == "classify" else SegmentConfig
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "resume", None) is not None:
        if args.config is not None:
            raise ValueError("--resume continues a run with its own config; drop --config.")
        return resume_config(args.resume, cls, given)
    if args.config is None:
        return cls(**given)
    base = load_config(args.config)
    if not isinstance(base, cls):
        other = "segment" if args.task == "classify" else "classify"
        raise ValueError(f"--config {args.config} is a {other} run's config; use `python -m jaxmri.train {other} "
                         f"--config {args.config}`.")
    return dataclasses.replace(base, **{"out": None, "overwrite": False, **given})


def check_devices(cfg) -> None:
    """``ValueError`` for a ``--devices`` / ``--batch-size`` pair this machine cannot run."""
    from jaxmri.training.parallel import batch_mesh, check_batch_size

    check_batch_size(batch_mesh(cfg.devices), cfg.batch_size)


def resume_config(run_dir: str, cls, given: dict):
    """The config of the run in ``run_dir``, for ``--resume``: the flags ``given`` must agree with it.

    Raises ``RunDirError`` naming the run when it is not a run of this task, and naming each differing
    setting (saved value and given value) when the flags ask for another run.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such run directory; pass a folder that python -m jaxmri.train wrote.")
    base = load_config(run / "config.json")
    if not isinstance(base, cls):
        raise RunDirError(f"--resume {run_dir}: this is a {type(base).__name__} run; resume it with the other task.")
    differ = [f"{k.replace('_', '-')} {getattr(base, k)!r} (given {v!r})" for k, v in given.items()
              if k not in ("out", "overwrite") and getattr(base, k) != v]
    if differ:
        raise RunDirError(f"--resume {run_dir}: this run was started with other settings: {'; '.join(differ)}. "
                          "Drop those flags to resume it, or start a new run with --out.")
    if "out" in given and Path(given["out"]).absolute() != run.absolute():
        raise RunDirError(f"--resume {run_dir} writes into that run; drop --out {given['out']}.")
    return dataclasses.replace(base, out=str(run), overwrite=False)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = {}

    def body():
        from jaxmri.training import hosts

        several = hosts.initialize()  # a multi-host launch (JAX_COORDINATOR_ADDRESS, ...): join it first
        try:
            cfg = config_from_args(args)
            if several and cfg.out is None:
                raise ValueError("a run over several processes needs --out: the same folder, on a file system "
                                 "every host sees, in every process's command.")
            check_devices(cfg)
        except ValueError as err:  # a flag value the config refuses: argparse's usage line and exit 2
            parser.error(str(err))
        if cfg.out is None:  # named now, so an interruption can say which run to resume
            from jaxmri.training.rundir import default_run_dir

            kind = f"classify-{cfg.arch}" if args.task == "classify" else "segment"
            cfg = dataclasses.replace(cfg, out=str(default_run_dir(kind)))
        if args.task == "classify":
            from jaxmri.training.classify import run
        else:
            from jaxmri.training.segment import run
        started["out"] = cfg.out
        run(cfg, resume=args.resume is not None, progress=not args.no_progress)

    def resume():
        out = started.get("out")
        return out and f"continue with `python -m jaxmri.train {args.task} --resume {out}` (it keeps every finished epoch)."

    return run_command(body, resume)


if __name__ == "__main__":
    own_process()  # this process is ours: glibc's allocator and XLA's compile cache (jaxmri.process)
    sys.exit(main())
