"""Start-up of a full VGG19: the eager constructor against ``load_vgg19``'s abstract build, each in a fresh process.

  eager     ``VGG19Classifier(2, rngs=...)``: every initializer runs (and compiles, one per shape), 548 MB
            of random weights are drawn and then thrown away when a weights file is loaded;
  load      ``jaxmri.weights.load_vgg19(FILE, num_classes=2)``: traced abstractly, only the new head and the
            dropout streams are initialised, the file's arrays are put in place;
  random    ``build_except(VGG19Classifier)``: the ``--pretrained none`` build, one compiled initializer.
Each row: wall seconds to a ready model (``jax.block_until_ready``, JAX import excluded) and the process's
peak resident memory. The variants alternate, ``--rounds`` processes each.

  python tests/fixtures/make_vgg_fixtures.py --full-size /tmp/vgg19          # random full-size files
  python -m jaxmri.weights convert /tmp/vgg19/vgg19_random_torchvision.pth --out /tmp/vgg19/vgg19.safetensors
  python benchmarks/vgg19_startup.py /tmp/vgg19/vgg19.safetensors
"""

import argparse
import statistics
import subprocess
import sys

CHILD = """
import resource, sys, time
import jax
from functools import partial
from flax import nnx
from jaxmri.models import VGG19Classifier
from jaxmri.models.params import build_except
from jaxmri.weights import load_vgg19
jax.numpy.zeros(1).block_until_ready()
start = time.perf_counter()
rngs = nnx.Rngs(params=0, dropout=1)
variant = sys.argv[1]
if variant == "eager":
    model = VGG19Classifier(2, rngs=rngs)
elif variant == "load":
    model = load_vgg19(sys.argv[2], num_classes=2, rngs=rngs)
else:
    model = build_except(partial(VGG19Classifier, 2), rngs)
jax.block_until_ready(nnx.state(model))
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="a full-size .safetensors written by python -m jaxmri.weights convert")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = {"eager": [], "load": [], "random": []}
    for _ in range(args.rounds):
        for variant in results:
            out = subprocess.run([sys.executable, "-c", CHILD, variant, args.weights], check=True,
                                 capture_output=True, text=True).stdout.split()
            results[variant].append((float(out[0]), float(out[1])))
    print(f"{'build':<7} {'seconds (median)':>16} {'peak RSS (GiB)':>14}")
    for variant, rows in results.items():
        print(f"{variant:<7} {statistics.median(r[0] for r in rows):>16.2f} "
              f"{statistics.median(r[1] for r in rows):>14.2f}")


if __name__ == "__main__":
    main()
