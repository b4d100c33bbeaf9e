"""Which CPU convolution library XLA should use, per step: the same jitted step compiled with each option set.

XLA's CPU backend can hand convolutions and dots to YNNPACK (its default in jax 0.12), to oneDNN, or
keep them on its own Eigen kernels; the choice is a per-executable compiler option, so each of the
library's steps can make its own (``jaxmri.training.compiled.CompiledStep``). This script compiles
each step with every option set below and times them alternating round by round in one process, with
the allocator set up as the ``python -m jaxmri...`` commands do (``jaxmri.allocator``).

  python benchmarks/compile_options.py                      # cnn, vgg19, vgg19-fwd, unet32; 5 rounds
  python benchmarks/compile_options.py --cases unet32 --rounds 8
  python benchmarks/compile_options.py --cases cnn+aug,unet32+aug   # the step as training calls it
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
    "onednn convs + ynn no convs": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
                                    "xla_cpu_experimental_ynn_fusion_type": YNN_NO_CONV},
    "ynn: reduce only": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"},
    "no ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "ynn: reduce+convs": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "ynn: reduce+dots": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
}
STEPS = {"cnn": classify_steps.plain_train_step, "vgg19": classify_steps.plain_train_step, "vgg19-fwd": classify_steps.eval_step,
         "unet32": segment_steps.plain_train_step}
STATIC = {"cnn": ("max_angle",), "vgg19": ("max_angle",), "vgg19-fwd": (), "unet32": ("loss", "max_angle")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(STEPS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--options", default=",".join(OPTION_SETS),
                        help="comma-separated labels of OPTION_SETS to compare (the first is the baseline)")
    args = parser.parse_args(argv)
    unknown = [label for label in args.options.split(",") if label not in OPTION_SETS]
    if unknown:
        parser.error(f"--options: unknown label {unknown[0]!r}; choose from: {', '.join(OPTION_SETS)}")
    print(f"malloc: {tune_malloc()}; jax {jax.__version__}")
    for case in args.cases.split(","):
        base_case, aug = case.removesuffix("+aug"), case.endswith("+aug")
        steps = {}
        for label in args.options.split(","):
            options = OPTION_SETS[label]
            step = CompiledStep(STEPS[base_case], options, static_argnames=STATIC[base_case])
            with patched(base_case, with_augmentation(step) if aug else step):
                steps[label] = make_case(base_case, BATCH[base_case])[0]
        times = time_interleaved(steps, 2, args.rounds)
        base = statistics.median(next(iter(times.values()))["wall"])
        print(f"{case} (batch {BATCH[base_case]}): " + "; ".join(
            f"{label} {statistics.median(t['wall']):.0f} ms ({base / statistics.median(t['wall']):.2f}x)"
            for label, t in times.items()), flush=True)


class with_augmentation:
    """``step`` called with an augmentation key, as the training loops call it (``roofline`` passes none)."""

    def __init__(self, step):
        self.step, self.key = step, jax.random.key(0)

    def __call__(self, model, optimizer, batch, _key=None, **static):
        return self.step(model, optimizer, batch, self.key, **static)

    def compiled_for(self, model, optimizer, batch, _key=None, **static):
        return self.step.compiled_for(model, optimizer, batch, self.key, **static)


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
