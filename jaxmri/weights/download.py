"""Fetch torchvision's VGG19 ImageNet weights with a progress bar and check their hash.

Only ``python -m jaxmri.weights download`` calls this; importing or building a model never downloads.
"""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from jaxmri.errors import WeightsError
from jaxmri.weights.conversion import KNOWN_FILES, file_digests

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
VGG19_SHA256_PREFIX = KNOWN_FILES[VGG19_FILE][1]  # torchvision's file name carries the first 8 hex digits


class DownloadError(WeightsError):
    """The file could not be fetched (offline, DNS, HTTP error); the CLI exits with status 2."""


def download_vgg19(cache_dir: Path, out: Path, url: str = VGG19_URL) -> Path:
    """``cache_dir/vgg19-dcbb9e9d.pth``, downloaded (via a ``.part`` file) unless a copy with the right hash is there.

    ``out`` only appears in the offline message (the ``convert`` command to run by hand). Raises
    ``DownloadError`` for network failures and ``WeightsError`` when the SHA-256 does not start with
    torchvision's prefix; the partial file is deleted either way, so a later run starts clean.
    """
    dest = Path(cache_dir) / VGG19_FILE
    sha256_prefix = VGG19_SHA256_PREFIX  # read at call time, so a test can point it at a fixture's hash
    if dest.is_file() and file_digests(dest)["sha256"].startswith(sha256_prefix):
        print(f"{dest} is already here and its SHA-256 matches; not downloading it again.")
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where the cache folder should be
        raise WeightsError(f"--cache-dir {dest.parent}: cannot be used as a folder ({err.strerror}); pass another "
                           "--cache-dir.") from None
    part = dest.with_name(dest.name + ".part")
    sha256 = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    sha256.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Could not download {url} ({getattr(exc, 'reason', exc)}); on a machine with internet download that "
            f"file by hand (548 MB, SHA-256 starting {sha256_prefix}), put it at {dest} and run "
            f"`python -m jaxmri.weights convert {dest} --out {out}`."
        ) from None
    digest = sha256.hexdigest()
    if not digest.startswith(sha256_prefix):
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url} arrived with SHA-256 {digest}, which does not start with {sha256_prefix}, so it is "
                           "corrupt or not the released file; it was deleted, run the download again.")
    os.replace(part, dest)
    return dest
