"""Dataset files on disk: where they live, checksum verification, and downloads.

A data folder holds one sub-folder per dataset with the official file names, e.g.::

    DATA/mnist/train-images-idx3-ubyte.gz
    DATA/fashion_mnist/t10k-labels-idx1-ubyte.gz
    DATA/cifar10/cifar-10-python.tar.gz

The folder is, in order of precedence, the ``data_dir`` argument (``--data-dir`` on the command
line), the ``BMR_JAX_DATA`` environment variable, or ``<user cache dir>/bmr-jax/data``.
Every file is checked against its published MD5 on every load; a file that fails is never used.
Missing files are downloaded (atomically, checksum verified, by :mod:`pooch`) unless downloads
are switched off with ``download=False`` or ``BMR_JAX_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from bmr_jax.errors import ChecksumMismatchError, DownloadError, MissingDataFileError

DATA_DIR_ENV = "BMR_JAX_DATA"
OFFLINE_ENV = "BMR_JAX_OFFLINE"


@dataclass(frozen=True)
class DataFile:
    """One published file of a dataset.

    Attributes:
      name: the official file name; it is also the name inside the dataset's folder.
      md5: the checksum the dataset's authors publish.
      urls: the places to download it from, tried in order.
    """

    name: str
    md5: str
    urls: tuple[str, ...] = ()


def default_data_dir() -> Path:
    """The folder used when neither ``data_dir`` nor ``BMR_JAX_DATA`` is given."""
    return Path(platformdirs.user_cache_dir("bmr-jax")) / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given (made when a download needs it), else ``$BMR_JAX_DATA``, which
    must name an existing folder (:class:`MissingDataFileError` otherwise: a mistyped path is
    not a place to download into), else :func:`default_data_dir`. The command line's
    ``--data-dir`` must exist too (``bmr_jax.cli.parser``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    named = os.environ.get(DATA_DIR_ENV)
    if not named:
        return default_data_dir().expanduser().resolve()
    path = Path(named).expanduser().resolve()
    if not path.is_dir():
        raise MissingDataFileError(f"{path}: the data folder ({DATA_DIR_ENV}) does not exist")
    return path


def downloads_allowed(download: bool | None = None) -> bool:
    """``download`` if given, else True unless ``BMR_JAX_OFFLINE`` is set to a true value."""
    if download is not None:
        return download
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, md5: str) -> Path:
    """Returns ``path`` if its MD5 is ``md5``; raises :class:`ChecksumMismatchError` if not."""
    actual = md5sum(path)
    if actual != md5:
        raise ChecksumMismatchError(
            f"{path}: md5 {actual} differs from the published {md5}; the file is corrupt or "
            f"not the official one (delete it to download it again)"
        )
    return path


def fetch_file(folder: Path, file: DataFile, download: bool | None = None) -> Path:
    """The verified path of ``file`` in ``folder``, downloading it first if it is missing.

    Raises:
      ChecksumMismatchError: the file on disk (or the one downloaded) has the wrong checksum.
      MissingDataFileError: the file is missing and downloads are off or impossible.
      DownloadError: every URL failed.
    """
    path = folder / file.name
    if path.is_file():
        return verify_file(path, file.md5)
    if not file.urls:
        raise MissingDataFileError(f"{path}: file is missing and has no download source")
    if not downloads_allowed(download):
        raise MissingDataFileError(
            f"{path}: file is missing and downloads are off ({OFFLINE_ENV} or download=False)"
        )
    import pooch  # imported here: only downloads need it

    failures = []
    for url in file.urls:
        try:
            # pooch writes to a temporary file, checks the hash, then moves it into place.
            pooch.retrieve(
                url, known_hash=f"md5:{file.md5}", fname=file.name, path=folder, progressbar=True
            )
            return verify_file(path, file.md5)
        except ChecksumMismatchError:
            raise
        except Exception as e:  # network errors come in many types; we report them all
            failures.append(f"{url}: {type(e).__name__}: {e}".replace("\n", " "))
    raise DownloadError(f"{path}: download failed from every source ({'; '.join(failures)})")
