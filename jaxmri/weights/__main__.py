"""``python -m jaxmri.weights {download,convert}``: get VGG19 ImageNet weights into weights/.

Exit status: 0 on success; 2 when a file cannot be converted, the download fails (offline), ``--out``
already exists (``--overwrite`` replaces it) or the command line is wrong (every
``jaxmri.errors.JaxmriError`` carries that status). Errors are printed as one sentence, ``error: ...``,
without a traceback.
"""

import argparse
import sys
from pathlib import Path

from jaxmri.errors import JaxmriError, WeightsError
from jaxmri.weights import DEFAULT_WEIGHTS, convert
from jaxmri.weights.download import VGG19_FILE, VGG19_URL, download_vgg19


def _print_report(report: dict) -> None:
    size_mb = report["bytes"] / 1e6
    print(f"Converted {report['source']} ({report['format']}, {report['source_keys']} tensors, "
          f"{report['parameters']:,} parameters) -> {report['out']} ({size_mb:.1f} MB) in {report['seconds']:.1f} s.")
    print(f"Source SHA-256: {report['sha256']}")
    if report["release_match"] is False:
        print(f"Warning: {Path(report['source']).name} does not match the hash of the released file of that name; "
              "it may be truncated or modified.", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxmri.weights",
        description="Get pretrained VGG19 ImageNet weights into the safetensors file that "
                    "`python -m jaxmri.train classify --arch vgg19` loads. See weights/README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser(
        "download", help="download torchvision's VGG19 weights, check the hash, convert them",
        description=f"Download {VGG19_URL} (548 MB) into --cache-dir, check its SHA-256, and convert it to --out. "
                    "Needs internet; offline it prints how to do it by hand and exits with status 2.",
    )
    dl.add_argument("model", choices=["vgg19"], help="the network whose weights to fetch (only vgg19)")
    dl.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS,
                    help=f"converted file to write (default: {DEFAULT_WEIGHTS})")
    dl.add_argument("--cache-dir", type=Path, default=DEFAULT_WEIGHTS.parent,
                    help=f"where {VGG19_FILE} is kept (default: {DEFAULT_WEIGHTS.parent}, git-ignored)")
    dl.add_argument("--url", default=VGG19_URL, help="download from a mirror instead (the hash is still checked)")
    dl.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cv = sub.add_parser(
        "convert", help="convert a torchvision .pth or Keras .h5 VGG19 file you already have",
        description="Convert torchvision's vgg19-dcbb9e9d.pth (zip or legacy torch.save format, read without torch "
                    "and without running code from the file) or Keras' vgg19_weights_tf_dim_ordering_tf_kernels.h5 "
                    "/ _notop.h5 (needs h5py: pip install 'jaxmri[keras]') into Flax-layout safetensors.",
    )
    cv.add_argument("src", type=Path, metavar="PATH", help="the .pth or .h5 file")
    cv.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS,
                    help=f"converted file to write (default: {DEFAULT_WEIGHTS})")
    cv.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:  # checked first: before a 548 MB download
            raise WeightsError(f"--out {args.out} already exists; pass --overwrite to replace it, or choose another "
                               "--out.")
        if args.command == "download":
            src = download_vgg19(args.cache_dir, args.out, url=args.url)
        else:
            src = args.src
        _print_report(convert(src, args.out))
    except JaxmriError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
