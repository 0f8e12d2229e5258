"""The files the command line serves: named files, and directories read again as they change.

This module owns turning ``serve PATH...`` into the name -> path mapping the
viewer serves. A file argument is served by name (its base name, made URL
safe and unique); a directory argument serves every readable regular file in
it (not below it), narrowed by ``--glob``, and a file created in it later
joins the set: :class:`FileSet` is a live :class:`~collections.abc.Mapping`
that lists its directories again when asked, at most once a second.

Names are a function of the arguments and of the directories' contents, the
same in every gunicorn worker: the named files take theirs first (in order),
then each directory's files in sorted order, a name already taken getting
``-2``, ``-3``...

The served files' directories are also the watch roots
(``PINE_WS_WATCH_ROOTS``): a served file swapped for a symlink to a file
elsewhere, or to ``/dev/zero``, is refused (close 1008) instead of streamed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

#: How long a listing of the directories is reused.
RESCAN_SECONDS = 1.0


def _safe(base: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return base.lstrip("._-")[:90] or "file"


def _unique(base: str, taken: Mapping[str, object] | set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def names_for(paths: Sequence[str]) -> dict[str, str]:
    """Name each file after its base name, made URL-safe and unique (``app.log``, ``app.log-2``)."""
    names: dict[str, str] = {}
    for path in paths:
        names[_unique(_safe(os.path.basename(os.path.normpath(path))), names)] = (
            os.path.abspath(path))
    return names


def readable_file(path: str) -> bool:
    """A regular file this user may read (symlinks followed)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK)


class FileSet(Mapping[str, str]):
    """Name -> absolute path of the served files; directories are listed again when read.

    :param files: files served by name, whether they exist yet or not.
    :param directories: directories whose readable regular files are served.
    :param glob: an fnmatch pattern the base names of directory files must
        match (``*.log``); named files are served whatever it says.
    """

    def __init__(self, files: Sequence[str] = (), directories: Sequence[str] = (),
                 glob: str | None = None) -> None:
        self.files = names_for(files)
        self.directories = [os.path.abspath(d) for d in directories]
        self.glob = glob
        #: With directories, the viewer keeps this mapping live instead of copying it.
        self.live = bool(self.directories)
        self._lock = threading.Lock()
        self._listed = dict(self.files)
        self._at = -RESCAN_SECONDS

    def roots(self) -> list[str]:
        """The directories the served files may resolve into: theirs, and their targets' now."""
        roots: list[str] = []
        for path in [*self.files.values(), *self.directories]:
            directory = path if path in self.directories else os.path.dirname(path)
            roots.append(directory)
            roots.append(os.path.realpath(directory))
            if path not in self.directories and os.path.lexists(path):
                # A file named through a symlink: where it points when started is meant.
                roots.append(os.path.dirname(os.path.realpath(path)))
        return list(dict.fromkeys(roots))

    def current(self) -> dict[str, str]:
        """The mapping now (a listing at most :data:`RESCAN_SECONDS` old)."""
        with self._lock:
            now = time.monotonic()
            if self.directories and now - self._at >= RESCAN_SECONDS:
                self._listed = self._scan()
                self._at = now
            return self._listed

    def _scan(self) -> dict[str, str]:
        listed = dict(self.files)
        named = set(self.files.values())
        for directory in self.directories:
            try:
                entries = sorted(os.listdir(directory))
            except OSError:
                continue  # gone for now: its files come back with it
            for entry in entries:
                if self.glob is not None and not fnmatch.fnmatchcase(entry, self.glob):
                    continue
                path = os.path.join(directory, entry)
                if path in named or not readable_file(path):
                    continue
                listed[_unique(_safe(entry), listed)] = path
        return listed

    def __getitem__(self, name: str) -> str:
        return self.current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.current()))

    def __len__(self) -> int:
        return len(self.current())

    def __contains__(self, name: object) -> bool:
        return name in self.current()
