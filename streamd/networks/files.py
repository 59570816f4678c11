"""Which files make a network, and where each lives inside the network directory. Pure functions.

A TensorFlow SavedModel directory: `saved_model.pb` or `saved_model.pbtxt`, optionally
`variables/variables.index` + `variables/variables.data-NNNNN-of-NNNNN`; mean files beside them.
Upload part names are the file names (the official client keys files by name), so they are checked
here before anything touches the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from streamd.errors import InvalidRequestError
from streamd.networks.spec import MEAN_FILE_SUFFIXES, Preprocessing

MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Written beside saved_model.pb by TF >= 2.12 exports; optional, kept as is.
FINGERPRINT = "fingerprint.pb"
VARIABLES_INDEX = "variables.index"
_VARIABLES_DATA = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
ACCEPTED = (
    "saved_model.pb or saved_model.pbtxt, variables.index, variables.data-NNNNN-of-NNNNN, fingerprint.pb, "
    f"and mean files ({', '.join(MEAN_FILE_SUFFIXES)}) named by preprocessing mean_file"
)


class NetworkFileError(InvalidRequestError):
    code = "invalid_file"


def stored_path(name: str) -> PurePosixPath:
    """Relative path of an uploaded file inside the network directory; rejects unsafe or unknown names."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise NetworkFileError(
            f"file part {name!r} must be a plain file name (letters, digits, '_', '-', '.'; "
            "no path separators or '..'); expected " + ACCEPTED
        )
    if name == VARIABLES_INDEX or _VARIABLES_DATA.match(name):
        return PurePosixPath("variables") / name
    if name in MODEL_FILES or name == FINGERPRINT or name.endswith(MEAN_FILE_SUFFIXES):
        return PurePosixPath(name)
    raise NetworkFileError(f"unexpected file part {name!r}; expected " + ACCEPTED)


def check_file_set(names: Iterable[str], preprocessing: Preprocessing) -> None:
    """The uploaded files must form one loadable SavedModel plus exactly the referenced mean files."""
    names = set(names)
    models = sorted(names & set(MODEL_FILES))
    if not models:
        raise NetworkFileError(
            "no model file: upload saved_model.pb (or saved_model.pbtxt), "
            "e.g. -F saved_model.pb=@saved_model.pb"
        )
    if len(models) > 1:
        raise NetworkFileError("upload either saved_model.pb or saved_model.pbtxt, not both")
    _check_variables(names)
    means = {name for name in names if name.endswith(MEAN_FILE_SUFFIXES)}
    wanted = preprocessing.mean_files()
    missing = sorted(wanted - means)
    if missing:
        raise NetworkFileError(
            f"preprocessing names mean_file {', '.join(missing)} but no file part with that name was "
            f"uploaded; add -F {missing[0]}=@<path>"
        )
    unused = sorted(means - wanted)
    if unused:
        raise NetworkFileError(
            f"mean file {', '.join(unused)} is not named by any preprocessing input's mean_file; "
            "reference it or do not upload it"
        )


def _check_variables(names: set[str]) -> None:
    shards = [match for name in names if (match := _VARIABLES_DATA.match(name))]
    has_index = VARIABLES_INDEX in names
    if shards and not has_index:
        raise NetworkFileError("variables.data-* files need their variables.index; upload it too")
    if has_index and not shards:
        raise NetworkFileError(
            "variables.index needs its variables.data-NNNNN-of-NNNNN file(s); upload them too"
        )
    if not shards:
        return
    totals = {int(match.group(2)) for match in shards}
    indices = {int(match.group(1)) for match in shards}
    if len(totals) != 1 or indices != set(range(next(iter(totals)))):
        found = ", ".join(sorted(match.group(0) for match in shards))
        raise NetworkFileError(
            f"variables shards are incomplete or inconsistent ({found}); upload every "
            "variables.data-NNNNN-of-TOTAL file of the SavedModel"
        )
