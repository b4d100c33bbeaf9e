"""Which CPU convolution library XLA should use, per step: the same jitted step compiled with each option set.

XLA's CPU backend can hand convolutions and dots to YNNPACK (its default in jax 0.12), to oneDNN, or
keep them on its own Eigen kernels; the choice is a per-executable compiler option, so each of the
library's steps can make its own (``jaxmri.training.compiled.CompiledStep``). This script compiles
each step with every option set below and times them alternating round by round in one process, with
the allocator set up as the ``python -m jaxmri...`` commands do (``jaxmri.allocator``).

  python benchmarks/compile_options.py                      # cnn, vgg19, vgg19-fwd, unet32; 5 rounds
  python benchmarks/compile_options.py --cases unet32 --rounds 8
"""

import argparse
import statistics

import jax
from roofline import BATCH, make_case
from unet_bench import time_interleaved

from jaxmri.allocator import tune_malloc
from jaxmri.training import classify_steps, segment_steps
from jaxmri.training.compiled import CompiledStep

YNN_NO_CONV = "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
OPTION_SETS = {
    "xla default": {},
    "ynn: no convs": {"xla_cpu_experimental_ynn_fusion_type": YNN_NO_CONV},
    "onednn convs": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "onednn convs, ynn no convs": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
                                   "xla_cpu_experimental_ynn_fusion_type": YNN_NO_CONV},
}
STEPS = {"cnn": classify_steps.train_step, "vgg19": classify_steps.train_step, "vgg19-fwd": classify_steps.eval_step,
         "unet32": segment_steps.plain_train_step}
STATIC = {"cnn": ("max_angle",), "vgg19": ("max_angle",), "vgg19-fwd": (), "unet32": ("loss", "max_angle")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(STEPS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"malloc: {tune_malloc()}; jax {jax.__version__}")
    for case in args.cases.split(","):
        steps = {}
        for label, options in OPTION_SETS.items():
            step = CompiledStep(STEPS[case], options, static_argnames=STATIC[case])
            with patched(case, step):
                steps[label] = make_case(case, BATCH[case])[0]
        times = time_interleaved(steps, 2, args.rounds)
        base = statistics.median(times["xla default"]["wall"])
        print(f"{case} (batch {BATCH[case]}): " + "; ".join(
            f"{label} {statistics.median(t['wall']):.0f} ms ({base / statistics.median(t['wall']):.2f}x)"
            for label, t in times.items()), flush=True)


class patched:
    """Make ``roofline.make_case`` build its step with ``step`` in place of the library's."""

    def __init__(self, case, step):
        module = segment_steps if case.startswith("unet") else classify_steps
        name = "train_step" if case != "vgg19-fwd" else "eval_step"
        self.module, self.name, self.step = module, name, step

    def __enter__(self):
        self.saved = getattr(self.module, self.name)
        setattr(self.module, self.name, self.step)

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.saved)


if __name__ == "__main__":
    main()
