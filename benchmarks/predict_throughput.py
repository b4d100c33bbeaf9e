"""Images per second of ``python -m jaxmri.predict``'s library path on a folder, compile included and not.

In one process: the first pass over the images compiles the step (its time includes that), the
second reuses the compiled step. Decoding, cropping, the model and writing every output file are all
inside the timing, as a user's run would see them.

    python benchmarks/predict_throughput.py --run runs/cnn ../shared/data/brain_tumor_dataset [--explain]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from jaxmri.inference import collect_inputs, load_run, predict_files


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--run", required=True)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    run = load_run(args.run)
    files = collect_inputs(args.inputs)
    print(f"{run.task} run {args.run}: {type(run.model).__name__} at {run.cfg.image_size}px, {len(files)} images, "
          f"batch {args.batch_size or run.cfg.batch_size}, explain={args.explain}, {os.cpu_count()} CPUs")
    for label in ("first pass (compile included)", "second pass (compiled)"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            records = predict_files(run, files, Path(out), explain=args.explain, batch_size=args.batch_size,
                                    progress=False)
            seconds = time.perf_counter() - start
        print(f"  {label:32s} {seconds:6.1f} s  {len(records) / seconds:6.1f} images/s")


if __name__ == "__main__":
    main()
