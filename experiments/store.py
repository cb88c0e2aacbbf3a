"""A sweep directory: where a sweep's results live, and the only code that reads or writes them.

Layout (anything else in the directory is left alone and never read):

    _manifest.json                what the sweep is: its spec, the identity of the code, the machine;
                                  written when the sweep starts, never rewritten by a running sweep
    point-NNNN.parquet            one row per seed; a valid one marks the point done
    _agents/point-NNNN.msgpack    trained weights of the point's agents
    _curves/point-NNNN.parquet    their training curves
    _chunks/*.json                one record per chunk run (points, seconds, env-steps/s, where it ran)
    _derived/discover.parquet     tables computed from the agents later (``gridsim discover``)
    _figures/                     plots
    .lock                         held by the one process writing the sweep

``pandas.read_parquet(DIR)`` reads the point files alone: pyarrow skips names that start with
``_`` or ``.``, so every other table lives in such a folder.

Guarantees: a sweep removes only files of the names above, never anything else in the
directory, and starts only in an empty directory or one holding its own manifest (``--force``
overrides this, and still removes only such files); one writer at a time (a second is refused
at once, naming the holder; the lock is an ``flock``, released by the kernel when its holder
dies, even by SIGKILL); every file is written to a temporary name, flushed to disk, then
renamed, so a reader sees a whole file or none; a point file that is unreadable or has the
wrong rows is reported and computed again; chunk records are files of their own, so no shared
file is ever rewritten.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import json
import os
import re
import socket
import tempfile
import warnings
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
AGENTS = "_agents"
CURVES = "_curves"
CHUNKS = "_chunks"
DERIVED = "_derived"
FIGURES = "_figures"
LOCK = ".lock"
POINT_FILE = re.compile(r"^point-(\d{4,})\.parquet$")
# what a sweep writes in each of its folders: the only files it ever removes
WRITTEN = {
    AGENTS: re.compile(r"^point-\d{4,}\.msgpack$"),
    CURVES: POINT_FILE,
    CHUNKS: re.compile(r"^chunk-[\w.-]+\.json$"),
    DERIVED: re.compile(r"^[\w-]+\.parquet$"),
    FIGURES: re.compile(r"^(misgeneralization|outcomes|training|seeds|visitation|discover|measure_\w+)\.(png|svg)$|"
                        r"^discover-p\d{4,}-s\d{4,}\.png$|^agent-p\d{4,}-s\d{4,}(-visits\.png|\.gif)$"),
}
REQUIRED_COLUMNS = ("point", "seed", "misgeneralization_rate", "capable")


class StoreError(ValueError):
    """A sweep directory that cannot be used as asked; the message says why and what to do."""


@functools.cache
def _file_mode() -> int:
    """What a newly created file gets under this process's umask (temporary files start at 0600).
    Read once: reading the umask means setting it, for a moment, for every thread."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)``, fsync, then rename over ``path``: readers see the old file or the new one,
    and after a crash the new one is whole or absent."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """One sweep directory. Reading needs nothing; writing happens inside ``with store.writing(...)``."""

    def __init__(self, directory):
        self.root = Path(directory)
        self._lock_fd: int | None = None

    # ---- paths ----------------------------------------------------------------------------------

    def point_path(self, index: int) -> Path:
        return self.root / f"point-{index:04d}.parquet"

    def agents_path(self, index: int) -> Path:
        return self.root / AGENTS / f"point-{index:04d}.msgpack"

    def curves_path(self, index: int) -> Path:
        return self.root / CURVES / f"point-{index:04d}.parquet"

    def derived_path(self, name: str) -> Path:
        """A table computed from the sweep's agents after the sweep (``gridsim discover``'s)."""
        return self.root / DERIVED / f"{name}.parquet"

    def figures(self, out_dir=None) -> Path:
        """Where pictures go: ``out_dir``, else ``_figures``; never the directory the table is read from."""
        out_dir = Path(out_dir or self.root / FIGURES)
        if out_dir.resolve() == self.root.resolve():
            raise StoreError(f"--out {out_dir} is the sweep directory, where results are read; figures go to "
                             f"{self.root / FIGURES} by default, or anywhere else")
        if out_dir.exists() and not out_dir.is_dir():
            raise StoreError(f"{out_dir} exists and is not a folder; figures need a folder")
        return out_dir

    # ---- reading --------------------------------------------------------------------------------

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            raise StoreError(f"{self.root} is not a sweep directory (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"{path} is unreadable ({err}); rerun the sweep with --force to start over") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
            raise StoreError(f"{path} is not a gridsim manifest; rerun the sweep with --force to start over")
        return manifest

    def finished_points(self, doing: str) -> dict[int, Path]:
        """``point_files``, or a StoreError saying there is nothing to ``doing`` yet."""
        found = self.point_files()
        if not found:
            raise StoreError(f"{self.root} has no finished sweep points yet: nothing to {doing}")
        return found

    def point_files(self) -> dict[int, Path]:
        """Result files by point index: ``point-NNNN.parquet`` only (copies and other files are ignored)."""
        if not self.root.is_dir():
            return {}
        found = {}
        for path in self.root.iterdir():
            match = POINT_FILE.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
        return dict(sorted(found.items()))

    def read_point(self, index: int, seeds: int) -> pa.Table | None:
        """The point's table, or None with a warning when the file is unreadable or incomplete."""
        path = self.point_path(index)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as err:
            warnings.warn(f"{path.name} is unreadable ({err}); it will be computed again", stacklevel=2)
            return None
        if "converged" in table.column_names and "capable" not in table.column_names:  # its name in gridsim 0.1.0
            table = table.rename_columns(["capable" if c == "converged" else c for c in table.column_names])
        problem = None
        if any(c not in table.column_names for c in REQUIRED_COLUMNS):
            problem = f"columns {sorted(set(REQUIRED_COLUMNS) - set(table.column_names))} are missing"
        elif table.num_rows != seeds:
            problem = f"{table.num_rows} rows, not one per seed ({seeds})"
        elif set(table.column("point").to_pylist()) != {index}:
            problem = "its rows belong to another point"
        if problem:
            warnings.warn(f"{path.name} is incomplete ({problem}); it will be computed again", stacklevel=2)
            return None
        return table

    def results(self):
        """``(table, manifest)``: every finished point's rows as one DataFrame, sorted by point and seed."""
        import pandas as pd

        manifest = self.manifest()
        seeds = int(manifest["seeds"])
        tables = [t for i in self.point_files() if i < len(manifest["points"])
                  for t in [self.read_point(i, seeds)] if t is not None]
        if not tables:
            raise StoreError(f"{self.root} has no finished sweep points yet")
        table = pd.concat([t.to_pandas() for t in tables]).sort_values(["point", "seed"]).reset_index(drop=True)
        return table, manifest

    def curves(self):
        import pandas as pd

        done = set(self.point_files())
        files = sorted(f for f in (self.root / CURVES).glob("point-*.parquet")
                       if (match := POINT_FILE.match(f.name)) and int(match.group(1)) in done)
        frames = [pd.read_parquet(f) for f in files]
        return pd.concat(frames) if frames else None

    def chunks(self) -> list[dict]:
        """Records of the chunks run so far, in the order they finished."""
        records = []
        for path in sorted((self.root / CHUNKS).glob("*.json")):
            with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
                records.append(json.loads(path.read_text(encoding="utf-8")))
        return sorted(records, key=lambda r: r.get("finished", ""))

    def load_agents(self, index: int):
        """Trained weights of one sweep point, leaves ``[seeds, ...]``."""
        path = self.agents_path(index)
        if not path.exists():
            raise StoreError(f"no saved agents for sweep point {index} in {self.root}")
        return flax.serialization.msgpack_restore(path.read_bytes())

    # ---- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, manifest: dict, force: bool = False):
        """Hold the lock, check or create the manifest, and yield the set of points already done.

        A directory with another sweep's results (``manifest["identity"]`` differs) is refused unless
        ``force``, which deletes them; one with no results yet is simply taken over.
        """
        self._create_root()
        if not force:
            self._refuse_a_foreign_directory()  # before the lock file, so that a refusal leaves no trace
        self._lock()
        try:
            yield self._start(manifest, force)
        finally:
            self._unlock()

    def _create_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"out: {self.root} exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"out: cannot create {self.root}: {err.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"out: {self.root} is not writable")

    def _lock(self) -> None:
        import fcntl

        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreError(f"{self.root} is being written by another gridsim sweep ({holder}); "
                                 "wait for it to finish, or choose another out") from None
            raise
        previous = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        stale = re.match(r"pid (\d+) on ([^,\s]+)", previous)
        if stale and stale.group(2) == socket.gethostname() and not _process_alive(int(stale.group(1))):
            warnings.warn(f"taking over {path.name} from a sweep that ended without releasing it ({previous})",
                          stacklevel=3)
        since = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # no holder; a file still naming one was left by a process that died
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _start(self, manifest: dict, force: bool) -> set[int]:
        seeds = int(manifest["seeds"])
        path = self.root / MANIFEST
        if not force:
            if path.exists():
                try:
                    before = self.manifest()
                except StoreError:
                    if self.point_files():
                        raise
                    before = None  # a broken manifest and no results: nothing to protect
                if before is not None:
                    changed = _changed(before, manifest)
                    if not changed:
                        self._tidy()
                        return self._done(len(manifest["points"]), seeds)
                    if self._results_present():
                        what = "a different sweep" if "spec" in changed else "this sweep, run by other code"
                        raise StoreError(
                            f"{self.root} holds results of {what} (changed: {', '.join(changed)}); resuming would "
                            "mix the two in one table. Choose another out, or pass --force to delete them and "
                            "start again")
            else:
                self._refuse_a_foreign_directory()
        self._clear()
        self._tidy()
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)))
        return set()

    def _refuse_a_foreign_directory(self) -> None:
        """A directory without a manifest may hold only a lock file: anything else is the user's, or
        results whose manifest is gone, and a new sweep there would mix or remove them."""
        if (self.root / MANIFEST).exists():
            return
        others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            kind = "sweep results but no manifest" if self._results_present() else "files"
            raise StoreError(f"{self.root} holds {kind} ({shown}) and is not a sweep directory; choose an empty "
                             "or new out, or pass --force (it removes only files a sweep writes)")

    def _results_present(self) -> bool:
        return bool(self.point_files()) or any(self._written(folder) for folder in (AGENTS, CURVES))

    def _written(self, folder: str) -> list[Path]:
        """The files in ``folder`` that a sweep writes (by name); the user's own files are not among them."""
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return [p for p in directory.iterdir() if p.is_file() and WRITTEN[folder].match(p.name)]

    def _tidy(self) -> None:
        """Under the lock: remove temporaries of writes that a killed process never finished, and
        (re)make the folders results go to."""
        for derived in (AGENTS, CURVES, CHUNKS):
            (self.root / derived).mkdir(exist_ok=True)
        for folder in (self.root, *(self.root / d for d in (AGENTS, CURVES, CHUNKS, DERIVED))):
            for tmp in folder.glob(".tmp-*"):
                tmp.unlink(missing_ok=True)

    def _clear(self) -> None:
        """Remove every file a sweep writes, and the folders it made if they are left empty; nothing else."""
        for path in self.point_files().values():
            path.unlink()
        for folder in WRITTEN:
            for path in self._written(folder):
                path.unlink()
            with contextlib.suppress(OSError):  # not empty: it holds the user's files
                (self.root / folder).rmdir()
        (self.root / MANIFEST).unlink(missing_ok=True)

    def _done(self, points: int, seeds: int) -> set[int]:
        done = set()
        for index, path in self.point_files().items():
            if index < points and self.read_point(index, seeds) is not None:
                done.add(index)
            else:
                path.unlink()  # computed again
        return done

    def write_point(self, index: int, table: pa.Table, curves: pa.Table, agents) -> None:
        """A finished point: weights and curves first, its table last (its presence marks it done)."""
        data = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, agents))
        atomic_write(self.agents_path(index), lambda tmp: Path(tmp).write_bytes(data))
        atomic_write(self.curves_path(index), lambda tmp: pq.write_table(curves, tmp))
        atomic_write(self.point_path(index), lambda tmp: pq.write_table(table, tmp))

    def record_chunk(self, record: dict) -> None:
        record = {**record, "finished": datetime.datetime.now().isoformat(timespec="milliseconds")}
        name = f"chunk-{record['finished'].replace(':', '')}-{os.getpid()}-{min(record['points']):04d}.json"
        atomic_write(self.root / CHUNKS / name, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))


def _changed(before: dict, after: dict) -> list[str]:
    old = before.get("identity") or {"spec": before.get("digest")}
    new = after["identity"]
    return [name for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
