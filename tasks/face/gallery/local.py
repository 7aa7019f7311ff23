"""The embedded gallery: a folder holding SQLite metadata, the embeddings as one memory-mapped
float32 file, and a faiss index file. No server.

```
people.gallery/
  gallery.sqlite       faces (name, label, photo, path, box, score, landmarks, added),
                       photos, removed rows, history, and meta: the committed state
  vectors.<gen>.f32    (rows, D) float32, append-only, memory-mapped (rows = meta count)
  index.<gen>.faiss    IVF-PQ fast-scan codes of rows 0..indexed-1 (galleries above 50k faces)
```

**Atomic updates.** SQLite is the one commit point. An update takes SQLite's write lock,
appends embeddings past the committed row count, inserts their rows, then fsyncs the vectors
and commits (WAL journal, ``synchronous=FULL``). A kill before the commit leaves the previous
state: SQLite rolls the transaction back and the bytes past the committed count are ignored
(and cut by the next update). Index files are written whole under a new name before the meta
names them; files no update names are deleted by the next one.

**Incremental adds.** The index covers rows ``0..indexed-1``; newer rows (the delta) are
searched exactly and merged. When the delta passes 1% of the index (at least 2,000 faces) it
is added to the index (its codes are small: a rewrite of about 70 MB at 1M faces, not of the
vectors); past 4x the size it was trained for, the index is trained again. Removed faces
stay in the files, masked from every search, until they pass a quarter of the rows: then the
vectors are rewritten without them and the index rebuilt.

**Opening** reads the meta row and maps the files: nothing is loaded until searched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .ann import (
    EXACT_BELOW,
    IndexPlan,
    build_index,
    exact_search,
    extend_index,
    index_search,
    merge_results,
    read_index,
    write_index,
)
from .base import Batch, Gallery, Transaction, check_source, face_column
from .source import EmbeddingSource

FORMAT = "resvision-gallery 1"
DB = "gallery.sqlite"
MERGE_AT = (2_000, 0.01)  # the delta joins the index past max(2,000 faces, 1% of the index)
COMPACT_AT = 0.25  # the vectors are rewritten when removed rows pass this share
SQL_CHUNK = 900  # parameters per statement (SQLite's limit is 999 on old builds)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE faces (
    row INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    photo TEXT,
    path TEXT,
    face_index INTEGER,
    box BLOB,
    score REAL,
    landmarks BLOB,
    added REAL NOT NULL
);
CREATE INDEX faces_label ON faces(label);
CREATE INDEX faces_photo ON faces(photo);
CREATE TABLE photos (photo TEXT PRIMARY KEY, path TEXT, added REAL NOT NULL);
CREATE INDEX photos_path ON photos(path);
CREATE TABLE removed (row INTEGER PRIMARY KEY);
CREATE TABLE history (id INTEGER PRIMARY KEY, time REAL NOT NULL, action TEXT NOT NULL);
"""


def _chunks(values: Sequence, size: int = SQL_CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
    db.execute("PRAGMA synchronous=FULL")
    return db


class LocalGallery(Gallery):
    """The embedded gallery in the folder ``path`` (see the module's notes)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.folder = Path(path)
        self.path = str(path)
        self.db = db
        self._cache: dict[str, Any] = {}
        self.dim = int(self._meta()["dim"])

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def _create(
        cls,
        path: str,
        dim: int,
        *,
        source: EmbeddingSource | None = None,
        exact_below: int = EXACT_BELOW,
    ) -> LocalGallery:
        folder = Path(path)
        if folder.suffix == ".npz":
            raise ValueError(
                f"{path!r}: a gallery is a folder (e.g. people.gallery), not an .npz file"
            )
        if (folder / DB).exists():
            raise FileExistsError(f"{path!r} already holds a gallery: open it instead")
        if folder.is_file():
            raise FileExistsError(f"{path!r} is a file: a gallery is a folder")
        if folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"folder {path!r} already holds other files: choose a new or empty folder"
            )
        if dim < 1:
            raise ValueError(f"dim={dim}: embeddings have at least one dimension")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{DB}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            meta = {
                "format": FORMAT,
                "dim": str(dim),
                "count": "0",
                "version": "0",
                "vectors": "vectors.0.f32",
                "index": "",
                "indexed": "0",
                "plan": IndexPlan().to_json(),
                "exact_below": str(int(exact_below)),
                "overrides": "{}",
                "source": source.to_json() if source else "",
                "created": repr(time.time()),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        finally:
            db.close()
        os.replace(tmp, folder / DB)  # the gallery exists once its database is complete
        return cls._open(path)

    @classmethod
    def _open(cls, path: str) -> LocalGallery:
        folder = Path(path)
        if not (folder / DB).is_file():
            if folder.suffix == ".npz" and folder.is_file():
                raise ValueError(
                    f"{path!r} is an .npz of embeddings, not a gallery: import it with "
                    f"`resvision face gallery import {path} GALLERY`"
                )
            raise FileNotFoundError(
                f"no gallery at {path!r}: make one with `resvision face gallery import FILE.npz "
                f"{path}`, `resvision face embed PHOTOS ... --gallery {path}` or "
                "Gallery.create(path, dim)"
            )
        db = _connect(folder / DB)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            fmt = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError as e:
            db.close()
            raise ValueError(f"{path!r} does not hold a readable gallery database ({e})") from None
        if not fmt or fmt[0] != FORMAT:
            db.close()
            raise ValueError(f"{path!r}: gallery format {fmt[0] if fmt else None!r}, not {FORMAT}")
        return cls(folder, db)

    def close(self) -> None:
        self._cache.clear()
        self.db.close()

    # -- state -----------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def _set(self, **values: Any) -> None:
        self.db.executemany(
            "UPDATE meta SET value = ? WHERE key = ?", [(str(v), k) for k, v in values.items()]
        )

    @contextlib.contextmanager
    def _snapshot(self):
        """Reads that see one committed state (a read transaction: WAL keeps it while writers
        commit), unless already inside an update."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _state(self) -> dict[str, Any]:
        """The committed state, its files mapped (cached until the next commit)."""
        with self._snapshot():
            meta = self._meta()
            key = (meta["version"], meta["vectors"], meta["index"])
            if self._cache.get("key") == key:
                return self._cache["state"]
            rows = self.db.execute("SELECT row FROM removed")
            removed = np.array([r for (r,) in rows], np.int64)
        count = int(meta["count"])
        state = {
            "count": count,
            "indexed": int(meta["indexed"]),
            "plan": IndexPlan.from_json(meta["plan"]),
            "vectors": self._map(meta["vectors"], count),
            "removed": np.sort(removed),
            "index": read_index(self.folder / meta["index"]) if meta["index"] else None,
            "source": EmbeddingSource.from_json(meta["source"]),
        }
        self._cache = {"key": key, "state": state}
        return state

    def _map(self, name: str, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.memmap(self.folder / name, np.float32, "r", shape=(count, self.dim))

    def _alive(self, state: dict[str, Any]) -> np.ndarray:
        """Rows holding faces, ascending (the gallery's order)."""
        rows = np.arange(state["count"], dtype=np.int64)
        if len(state["removed"]):
            rows = np.setdiff1d(rows, state["removed"], assume_unique=True)
        return rows

    @property
    def source(self) -> EmbeddingSource | None:
        return EmbeddingSource.from_json(self._meta()["source"])

    def __len__(self) -> int:
        meta = self._meta()
        return int(meta["count"]) - self.db.execute("SELECT COUNT(*) FROM removed").fetchone()[0]

    def embeddings(self) -> np.ndarray:
        state = self._state()
        if len(state["removed"]) == 0:
            return state["vectors"]
        return np.asarray(state["vectors"][self._alive(state)])

    def faces(
        self, names: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        columns = list(columns or ("name", "label", "added", *_METADATA_COLUMNS))
        unknown = sorted(set(columns) - {"name", "label", "added", *_METADATA_COLUMNS})
        if unknown:
            raise ValueError(f"unknown face columns {unknown}")
        sql = ", ".join(_SQL_COLUMN[c] for c in columns)
        if names is None:
            rows = self.db.execute(f"SELECT {sql} FROM faces ORDER BY row").fetchall()
        else:
            names = [str(n) for n in names]
            found: dict[str, tuple] = {}
            for part in _chunks(names):
                marks = ",".join("?" * len(part))
                for r in self.db.execute(
                    f"SELECT name, {sql} FROM faces WHERE name IN ({marks})", part
                ):
                    found[r[0]] = r[1:]
            missing = [n for n in names if n not in found]
            if missing:
                raise KeyError(f"{self.path}: no face named {missing[0]!r}")
            rows = [found[n] for n in names]
        return {c: face_column(c, [r[i] for r in rows]) for i, c in enumerate(columns)}

    def photos(self) -> dict[str, np.ndarray]:
        """Every photo added (with faces or without): ``photo`` names and ``path`` files."""
        rows = self.db.execute("SELECT photo, COALESCE(path, '') FROM photos ORDER BY photo")
        rows = rows.fetchall()
        return {
            "photo": np.array([r[0] for r in rows], dtype=str),
            "path": np.array([r[1] for r in rows], dtype=str),
        }

    def info(self) -> dict[str, Any]:
        meta = self._meta()
        state = self._state()
        count = state["count"]
        files = [p for p in self.folder.iterdir() if p.is_file()]
        last = self.db.execute("SELECT time, action FROM history ORDER BY id DESC LIMIT 1")
        last = last.fetchone()
        return {
            "path": self.path,
            "kind": "embedded (SQLite + memory-mapped vectors + faiss)",
            "faces": count - len(state["removed"]),
            "dim": self.dim,
            "people": self.db.execute(
                "SELECT COUNT(DISTINCT label) FROM faces WHERE label != ''"
            ).fetchone()[0],
            "unlabelled": self.db.execute("SELECT COUNT(*) FROM faces WHERE label = ''").fetchone()[
                0
            ],
            "photos": self.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0],
            "source": state["source"].describe() if state["source"] else "unknown",
            "search": state["plan"].describe(),
            "indexed": state["indexed"],
            "not_indexed": count - state["indexed"] if state["index"] is not None else 0,
            "removed_rows": len(state["removed"]),
            "exact_below": int(meta["exact_below"]),
            "bytes": sum(p.stat().st_size for p in files),
            "last_update": f"{time.ctime(last[0])}: {last[1]}" if last else "never",
        }

    # -- updates -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self, action: str = ""):
        """SQLite's write lock (one update at a time, readers unaffected): the block's changes
        commit together when it ends, with the version counter bumped and ``action`` logged;
        an exception rolls them back."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            self._set(version=int(self._meta()["version"]) + 1)
            if action:
                db.execute(
                    "INSERT INTO history (time, action) VALUES (?, ?)", (time.time(), action)
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def transaction(self, *, source: EmbeddingSource | None = None):
        with self._write() as db:
            meta = self._meta()
            self._collect_garbage(meta)
            count = int(meta["count"])
            alive = count - db.execute("SELECT COUNT(*) FROM removed").fetchone()[0]
            new_source = check_source(
                EmbeddingSource.from_json(meta["source"]),
                source,
                empty=alive == 0,
                where=f"gallery {self.path!r}",
            )
            path = self.folder / meta["vectors"]
            with open(path, "r+b" if path.exists() else "w+b") as handle:
                handle.truncate(count * self.dim * 4)  # bytes of a killed update go
                handle.seek(count * self.dim * 4)
                t = LocalTransaction(self, handle, count)
                yield t
                handle.flush()
                os.fsync(handle.fileno())
            self._set(count=t.count, source=new_source.to_json() if new_source else "")
            db.execute(
                "INSERT INTO history (time, action) VALUES (?, ?)",
                (time.time(), f"added {t.count - count} faces"),
            )
        self.maintain()

    def _collect_garbage(self, meta: dict[str, str]) -> None:
        """Delete the files no committed state names (left by killed updates or replaced)."""
        keep = {DB, meta["vectors"], meta["index"]}
        for p in self.folder.iterdir():
            if p.name in keep or p.name.startswith(DB):
                continue
            if re.fullmatch(r"vectors\.\d+\.f32|index\.[\d.]+\.faiss", p.name):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _rows_where(self, column: str, values: Sequence[str]) -> np.ndarray:
        rows: list[int] = []
        for part in _chunks([str(v) for v in values]):
            marks = ",".join("?" * len(part))
            rows += [
                r
                for (r,) in self.db.execute(
                    f"SELECT row FROM faces WHERE {column} IN ({marks})", part
                )
            ]
        return np.unique(np.array(rows, np.int64))

    def remove(
        self,
        *,
        names: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        photos: Sequence[str] | None = None,
    ) -> int:
        if names is None and labels is None and photos is None:
            raise ValueError("say what to remove: names, labels or photos")
        asked = (("name", names), ("label", labels), ("photo", photos))
        with self._write() as db:
            rows = [self._rows_where(column, v) for column, v in asked if v is not None]
            rows = np.unique(np.concatenate(rows)).tolist()
            for part in _chunks(rows):
                db.execute(f"DELETE FROM faces WHERE row IN ({','.join('?' * len(part))})", part)
            db.executemany("INSERT INTO removed VALUES (?)", [(r,) for r in rows])
            for part in _chunks([str(p) for p in photos or []]):
                db.execute(f"DELETE FROM photos WHERE photo IN ({','.join('?' * len(part))})", part)
            db.execute(
                "INSERT INTO history (time, action) VALUES (?, ?)",
                (time.time(), f"removed {len(rows)} faces"),
            )
        self.maintain()
        return len(rows)

    def relabel(self, old: str | Sequence[str], new: str) -> int:
        olds = [old] if isinstance(old, str) else [str(o) for o in old]
        if not olds:
            raise ValueError("name the label(s) to change")
        changed = 0
        with self._write() as db:
            for part in _chunks(olds):
                marks = ",".join("?" * len(part))
                changed += db.execute(
                    f"UPDATE faces SET label = ? WHERE label IN ({marks})", [str(new), *part]
                ).rowcount
            db.execute(
                "INSERT INTO history (time, action) VALUES (?, ?)",
                (time.time(), f"relabelled {changed} faces {olds} -> {new!r}"),
            )
        return changed

    # -- the index -----------------------------------------------------------------------------
    def set_search(self, *, exact_below: int | None = None, **overrides: Any) -> None:
        """Record search settings: ``exact_below`` (faces) and index parameters
        (``nlist``, ``pq``, ``nprobe``, ``rerank``; ``None`` clears one back to the rule of
        :meth:`IndexPlan.for_size`), then rebuild or re-plan the index as they require."""
        import json

        IndexPlan().with_overrides(**{k: v for k, v in overrides.items() if v is not None})
        with self._write("search settings changed"):
            meta = self._meta()
            current = json.loads(meta["overrides"])
            for key, value in overrides.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = int(value)
            values: dict[str, Any] = {"overrides": json.dumps(current, sort_keys=True)}
            if exact_below is not None:
                values["exact_below"] = int(exact_below)
            self._set(**values)
        self.maintain()

    def maintain(self, *, progress=None) -> str:
        """Bring the index in line with the gallery (after every update): compact removed rows
        past a quarter, build the index when the size calls for one (or train it again past
        4x the size it was trained for, or for new ``nlist``/``pq``), add the delta past 1%,
        record new search settings, or nothing. Each step commits on its own: a kill leaves a
        searchable state. Returns what was done."""
        import json

        from resvision.tasks.engine.progress import progress as show

        progress = progress or show
        meta = self._meta()
        count = int(meta["count"])
        removed = self.db.execute("SELECT COUNT(*) FROM removed").fetchone()[0]
        if removed and removed > COMPACT_AT * count:
            self._compact()
            meta, removed = self._meta(), 0
            count = int(meta["count"])
        alive = count - removed
        overrides = json.loads(meta["overrides"])
        current = IndexPlan.from_json(meta["plan"])
        wanted = IndexPlan.for_size(alive, self.dim, exact_below=int(meta["exact_below"]))
        if wanted.kind == "exact":
            if meta["index"] or current.kind != "exact":
                self._commit_index(None, 0, wanted)
                return "index dropped: exact search"
            return "exact search"
        keep = None
        if meta["index"]:
            keep = IndexPlan.ivf(current.nlist, self.dim, trained_for=current.trained_for)
            keep = keep.with_overrides(**overrides)
            if alive > 4 * current.trained_for or (keep.nlist, keep.pq) != (
                current.nlist,
                current.pq,
            ):
                keep = None
        if keep is None:
            plan = wanted.with_overrides(**overrides)
            if self.dim % plan.pq:
                raise ValueError(f"pq={plan.pq} does not divide the {self.dim} dimensions")
            index = build_index(self._map(meta["vectors"], count), plan, progress=progress)
            self._commit_index(index, count, plan, meta["vectors"])
            return f"index built: {plan.describe()}"
        indexed = int(meta["indexed"])
        if count - indexed > max(MERGE_AT[0], MERGE_AT[1] * indexed):
            index = read_index(self.folder / meta["index"], writable=True)
            extend_index(
                index, self._map(meta["vectors"], count), indexed, count, progress=progress
            )
            self._commit_index(index, count, keep, meta["vectors"])
            return f"index extended by {count - indexed} faces"
        if keep != current:
            self._commit_index("keep", indexed, keep)
            return f"search settings recorded: {keep.describe()}"
        return "index up to date"

    def _commit_index(self, index, indexed: int, plan: IndexPlan, vectors: str = "") -> None:
        """Name a new index built from ``vectors`` (``None``: none; ``"keep"``: the current
        one with a new plan). The file is written whole before the lock is taken; under it,
        an index whose vectors were rewritten meanwhile (or whose file another update removed)
        is dropped: the next update builds again."""
        name = None
        if index is not None and not isinstance(index, str):
            name = f"index.{int(self._meta()['version']) + 1}.{os.getpid()}.faiss"
            write_index(index, self.folder / name)
        with self._write():
            meta = self._meta()
            if name and (meta["vectors"] != vectors or not (self.folder / name).is_file()):
                return
            values: dict[str, Any] = {"plan": plan.to_json()}
            if not isinstance(index, str):
                values.update(index=name or "", indexed=indexed if name else 0)
            self._set(**values)
        with self._write():  # the replaced file goes once the new one is committed
            self._collect_garbage(self._meta())

    def _compact(self) -> None:
        """Rewrite the vectors without removed rows and renumber the faces (one commit)."""
        with self._write() as db:
            meta = self._meta()
            count = int(meta["count"])
            old = self._map(meta["vectors"], count)
            removed = np.array([r for (r,) in db.execute("SELECT row FROM removed")], np.int64)
            alive = np.setdiff1d(np.arange(count, dtype=np.int64), removed)
            name = f"vectors.{int(meta['version']) + 1}.f32"
            with open(self.folder / name, "wb") as f:
                for start in range(0, len(alive), 65536):
                    f.write(np.ascontiguousarray(old[alive[start : start + 65536]]).tobytes())
                f.flush()
                os.fsync(f.fileno())
            # ascending, and every new row <= its old one: each target row is free
            moved = [(int(n), int(o)) for n, o in enumerate(alive) if n != o]
            db.executemany("UPDATE faces SET row = ? WHERE row = ?", moved)
            db.execute("DELETE FROM removed")
            self._set(
                vectors=name, count=len(alive), index="", indexed=0, plan=IndexPlan().to_json()
            )
            db.execute(
                "INSERT INTO history (time, action) VALUES (?, ?)",
                (time.time(), f"compacted: {len(removed)} removed rows dropped"),
            )
        self._cache.clear()

    # -- search --------------------------------------------------------------------------------
    def _search_rows(self, queries, k, *, labels=None, nprobe=None, rerank=None, state=None):
        state = state or self._state()
        vectors, count, indexed = state["vectors"], state["count"], state["indexed"]
        index = state["index"]
        plan = state["plan"].with_overrides(nprobe=nprobe, rerank=rerank)
        if labels is not None:
            rows = self._rows_where("label", list(labels))
        elif len(state["removed"]):
            rows = self._alive(state)
        else:
            rows = None
        empty = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1))
        if (rows is not None and len(rows) == 0) or count == 0:
            return empty
        small = rows is not None and len(rows) < int(self._meta()["exact_below"])
        if index is None or small:
            return exact_search(vectors, queries, k, rows)
        allowed = None
        if rows is not None:
            mask = np.zeros(indexed, bool)
            mask[rows[rows < indexed]] = True
            allowed = np.packbits(mask, bitorder="little")
        parts = [index_search(index, vectors, queries, k, plan, allowed=allowed)]
        if count > indexed:
            delta = np.arange(indexed, count) if rows is None else rows[rows >= indexed]
            if len(delta):
                parts.append(exact_search(vectors, queries, k, delta))
        return merge_results(parts, k)

    def _names_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        wanted = np.unique(rows[rows >= 0]).tolist()
        found: dict[int, str] = {}
        for part in _chunks(wanted):
            marks = ",".join("?" * len(part))
            found.update(
                self.db.execute(f"SELECT row, name FROM faces WHERE row IN ({marks})", part)
            )
        out = np.array([found.get(int(r), "") for r in rows.ravel()], dtype=object)
        return out.astype(str).reshape(rows.shape) if out.size else np.zeros(rows.shape, str)

    def knn(self, k: int, *, nprobe: int | None = None, rerank: int | None = None, progress=None):
        """The graph through the index: by default a quarter of the search's ``nprobe`` and
        ``2 k`` candidates re-scored (clustering needs the links above a threshold, not every
        exact top face: at 100k faces this halved the time and moved the BCubed F of either
        method by under 0.002); exact below the index's size."""
        from resvision.tasks.engine.progress import progress as show
        from resvision.tasks.face.clustering import drop_self

        state = self._state()
        if state["index"] is not None:
            nprobe = nprobe or max(1, state["plan"].nprobe // 4)
            rerank = rerank or 2 * k
        progress = progress or show
        alive = self._alive(state)
        n = len(alive)
        scores = np.full((n, k), -np.inf, np.float32)
        neighbours = np.full((n, k), -1, np.int64)
        starts = list(range(0, n, 4096))
        for start in progress(starts, total=len(starts), desc="neighbours"):
            rows = alive[start : start + 4096]
            q = np.ascontiguousarray(state["vectors"][rows], np.float32)
            s, r = self._search_rows(q, min(k + 1, n), nprobe=nprobe, rerank=rerank, state=state)
            s, r = drop_self(s, r, rows, k)
            pos = np.searchsorted(alive, np.maximum(r, 0))
            scores[start : start + len(rows)] = s
            neighbours[start : start + len(rows)] = np.where(r < 0, -1, pos)
        return scores, neighbours


class LocalTransaction(Transaction):
    """Appends to the vectors file and inserts rows, inside the gallery's SQLite transaction."""

    def __init__(self, gallery: LocalGallery, handle, count: int) -> None:
        self.gallery = gallery
        self.handle = handle
        self.count = count

    def _taken(self, names: list[str]) -> list[str]:
        taken = []
        for part in _chunks(names):
            marks = ",".join("?" * len(part))
            sql = f"SELECT name FROM faces WHERE name IN ({marks})"
            taken += [n for (n,) in self.gallery.db.execute(sql, part)]
        return taken

    def _write(self, batch: Batch) -> None:
        db = self.gallery.db
        self.handle.write(batch.embeddings.tobytes())
        rows = range(self.count, self.count + len(batch.names))
        now = time.time()
        db.executemany(
            "INSERT INTO faces (row, name, label, photo, path, face_index, box, score, landmarks, "
            "added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _face_rows(rows, batch, now),
        )
        db.executemany("INSERT OR IGNORE INTO photos VALUES (?, ?, ?)", _photo_rows(batch, now))
        self.count += len(batch.names)


_METADATA_COLUMNS = ("photos", "paths", "face_index", "boxes", "scores", "landmarks")
_SQL_COLUMN = {
    "name": "name",
    "label": "label",
    "added": "added",
    "photos": "photo",
    "paths": "path",
    "face_index": "face_index",
    "boxes": "box",
    "scores": "score",
    "landmarks": "landmarks",
}


def _face_rows(rows, batch: Batch, now: float):
    m = batch.metadata
    for i, row in enumerate(rows):
        yield (
            row,
            str(batch.names[i]),
            str(batch.labels[i]),
            str(m["photos"][i]) if "photos" in m else None,
            str(m["paths"][i]) if "paths" in m else None,
            int(m["face_index"][i]) if "face_index" in m else None,
            m["boxes"][i].tobytes() if "boxes" in m else None,
            float(m["scores"][i]) if "scores" in m else None,
            m["landmarks"][i].tobytes() if "landmarks" in m else None,
            now,
        )


def _photo_rows(batch: Batch, now: float) -> list[tuple]:
    m = batch.metadata
    out = {}
    if "photos" in m:
        paths = m.get("paths")
        for i, photo in enumerate(m["photos"].tolist()):
            out.setdefault(photo, (photo, str(paths[i]) if paths is not None else None, now))
    for photo, path in zip(batch.photos_without_faces.tolist(), batch.paths_without_faces.tolist()):
        out.setdefault(photo, (photo, path or None, now))
    return list(out.values())
