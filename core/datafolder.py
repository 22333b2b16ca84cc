"""Where the benches find the large recorded corpora that the repo does not carry.

The repo vendors what the demo and the tests read (``deploy/demo/recordings/``, ``tests/data/``);
the benches score over whole corpora (all 42 NAB series, 249 syzkaller reports, every scrape
page ...) laid out like the shared data folder: ``--data PATH``, else ``$KUBESIGHT_DATA``, else
``../shared/data`` beside the repo.  A missing corpus is one clear line naming where to get it (exit 2, as every
error the user can fix: ``FileNotFoundError`` with our message, which ``kubesight.cli`` prints as it is).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOW = ("pass {option} PATH or set KUBESIGHT_DATA to a folder laid out like the shared data folder "
       "(one sub-folder per corpus; tests/data/README.md names each corpus's source)")


def data_root(arg: str | os.PathLike | None = None, *need: str, option: str = "--data") -> Path:
    """The data folder; ``need``: sub-paths that must exist in it (else ``FileNotFoundError``, one line naming the
    command's ``option`` for the folder).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> data_root(d) == Path(d)
    True
    >>> try:
    ...     data_root(d, "nab", option="--corpus")
    ... except FileNotFoundError as e:
    ...     print(str(e).split(":")[0].endswith("nab"), "pass --corpus PATH" in str(e))
    True True
    >>> (Path(d) / "nab" / "data").mkdir(parents=True)
    >>> data_root(Path(d) / "nab", "nab/data") == Path(d)  # the corpus folder itself is taken too
    True
    """
    root = Path(arg or os.environ.get("KUBESIGHT_DATA") or REPO.parent / "shared" / "data")
    if need and not all((root / sub).exists() for sub in need) \
            and all(Path(sub).parts[0] == root.name and (root.parent / sub).exists() for sub in need):
        root = root.parent  # given the corpus folder itself (as ``bench nab`` and ``bench multivariate`` take it)
    for sub in need:
        if not (root / sub).exists():
            raise FileNotFoundError(f"{root / sub}: corpus not found; {HOW.format(option=option)}")
    return root
