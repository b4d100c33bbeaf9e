"""The whole paper on this machine: the three real training commands back to back, timed.

Runs, each as its own ``python -m jaxmri.train`` process (exactly what a user types):
  cnn     classify --arch cnn, 50 epochs                      (Table 2 / Table 4)
  vgg19   classify --arch vgg19, 50 epochs                    (Section 2.2; ``--pretrained none`` when the
          converted ImageNet weights are absent: the same network and cost, random frozen weights)
  unet    segment --image-size 128 --loss bce+dice --epochs 150   (README's recommended CPU run)
and prints, per command, the wall time of the whole process, the first epoch's compile time and the
median epoch, read from the run's own ``metrics.json``, with the headline result of each run.

Usage:
  python benchmarks/paper_runs.py --data ../shared/data/brain_tumor_dataset \\
      --masks ../shared/data/annotations/tumor_polygons_coco.json --out runs/paper
  python benchmarks/paper_runs.py ... --epochs 3        # every command with 3 epochs (a quick look)
  python benchmarks/paper_runs.py ... --runs cnn,unet
  python benchmarks/paper_runs.py ... --malloc-default  # JAXMRI_MALLOC=default: glibc's own allocator settings
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = ("cnn", "vgg19", "unet")
WEIGHTS = Path("weights/vgg19_imagenet.safetensors")


def command(run: str, args) -> list[str]:
    out = str(Path(args.out) / run)
    base = [sys.executable, "-m", "jaxmri.train"]
    if run == "unet":
        cmd = base + ["segment", "--data", args.data, "--masks", args.masks, "--image-size", "128",
                      "--loss", "bce+dice", "--epochs", str(args.epochs or 150)]
    else:
        cmd = base + ["classify", "--arch", run, "--data", args.data, "--epochs", str(args.epochs or 50)]
        if run == "vgg19" and not WEIGHTS.is_file():
            cmd += ["--pretrained", "none"]
    return cmd + ["--seed", str(args.seed), "--out", out, "--overwrite"]


def headline(run: str, metrics: dict) -> str:
    if run == "unet":
        return f"test Dice {metrics['dice']:.3f} (best epoch {metrics['best_epoch']})"
    return (f"test accuracy {metrics['test_accuracy']:.3f} (best epoch {metrics['best_epoch']}), mean over epochs "
            f"{metrics['mean_test_accuracy_over_epochs']:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--out", default="runs/paper")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--epochs", type=int, help="override every command's epochs (default: the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc-default", action="store_true", help="run with JAXMRI_MALLOC=default")
    args = parser.parse_args(argv)
    env = dict(os.environ, **({"JAXMRI_MALLOC": "default"} if args.malloc_default else {}))

    rows, total = [], 0.0
    for run in args.runs.split(","):
        cmd = command(run, args)
        print("$", " ".join(cmd[1:]), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"{run} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        total += wall
        metrics = json.loads((Path(args.out) / run / "metrics.json").read_text())
        epochs = metrics["epochs"]
        rows.append((run, len(epochs), wall, epochs[0].get("compile_seconds", float("nan")),
                     statistics.median(e["seconds"] for e in epochs[1:] or epochs), headline(run, metrics)))
        print(f"  {run}: {wall / 60:.1f} min", flush=True)

    print(f"\n{'run':<6} {'epochs':>6} {'wall':>9} {'compile (epoch 1)':>17} {'median epoch':>12}  result")
    for run, n, wall, comp, epoch, result in rows:
        print(f"{run:<6} {n:>6} {wall / 60:>7.1f} m {comp:>15.1f} s {epoch:>10.2f} s  {result}")
    print(f"total  {total / 60:.1f} min  (malloc: {'glibc defaults' if args.malloc_default else 'jaxmri default'})")


if __name__ == "__main__":
    main()
