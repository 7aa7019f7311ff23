"""The gallery on a Milvus server (``milvus://HOST:PORT/COLLECTION``, or
``milvus://USER:PASSWORD@HOST:PORT/COLLECTION``) or in milvus-lite, Milvus's engine in-process
(``milvus:PATH.db/COLLECTION``), through pymilvus: the same API as the embedded gallery.

Milvus keeps the vectors, the faces' fields and the index (``index_type``: Milvus's
``AUTOINDEX`` by default, ``FLAT`` for exact search, or any index the server offers, with its
``index_params``); a second collection, ``COLLECTION__photos``, remembers every photo added.
The gallery's state lives in the collection's properties (``resvision.*``): its format, width,
source, next row and the last committed update.

**Updates.** Milvus has no multi-request transactions, so each face carries the id of the
update that added it and every read filters ``update <= committed``: the rows of an update
become visible together when its id is committed (one request), and the rows of a killed
update, never committed, stay invisible until the next update deletes them. Removal is one
delete request; a relabel rewrites the faces concerned in one upsert request. One writer at a
time (nothing locks a collection against a second one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Batch, Gallery, Transaction, check_source, face_column
from .source import EmbeddingSource

FORMAT = "resvision-gallery 1"
BATCH = 1000  # rows per request
KEY = "resvision."


def parse(path: str) -> tuple[str, str | None, str]:
    """``(uri, token, collection)`` of ``milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION`` or
    ``milvus:PATH.db/COLLECTION``."""
    server = re.fullmatch(r"milvus://(?:([^@/]+)@)?([^/@]+)/(\w+)", path)
    if server:
        return f"http://{server.group(2)}", server.group(1), server.group(3)
    lite = re.fullmatch(r"milvus:(?!//)(.+\.db)/(\w+)", path)
    if lite:
        return lite.group(1), None, lite.group(2)
    raise ValueError(
        f"{path!r} is not a Milvus gallery: give milvus://HOST:PORT/COLLECTION (a server) or "
        "milvus:PATH.db/COLLECTION (milvus-lite); collection names are letters, digits and _"
    )


def _client(uri: str, token: str | None):
    try:
        from pymilvus import MilvusClient
    except ModuleNotFoundError:
        raise ValueError(
            "Milvus galleries need pymilvus (and milvus-lite for milvus:PATH.db): "
            "pip install 'resvision[milvus]'"
        ) from None
    return MilvusClient(uri=uri, token=token or "")


@contextlib.contextmanager
def _quiet_index_creation():
    """pymilvus 3 asks milvus-lite's in-process server for a timestamp it does not serve while
    an index is created; the server logs that refusal (a traceback) and pymilvus carries on."""
    logger = logging.getLogger("grpc._server")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quote(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


class MilvusGallery(Gallery):
    """A face gallery in a Milvus collection (see the module's notes)."""

    def __init__(self, path: str, client, collection: str) -> None:
        self.path = path
        self.client = client
        self.collection = collection
        self.photos_collection = f"{collection}__photos"
        props = self._props()
        if props.get("format") != FORMAT:
            raise ValueError(
                f"{path!r}: collection {collection!r} is not a resvision gallery (no "
                f"{KEY}format property)"
            )
        self.dim = int(props["dim"])

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def _create(
        cls,
        path: str,
        dim: int,
        *,
        source: EmbeddingSource | None = None,
        index_type: str = "AUTOINDEX",
        index_params: dict | None = None,
    ) -> MilvusGallery:
        from pymilvus import DataType, MilvusClient

        uri, token, name = parse(path)
        client = _client(uri, token)
        if client.has_collection(name):
            raise FileExistsError(f"{path!r}: the collection {name!r} already exists")
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=int(dim))
        for field, length in (("name", 4096), ("label", 1024), ("photo", 4096), ("path", 4096)):
            schema.add_field(field, DataType.VARCHAR, max_length=length)
        schema.add_field("update", DataType.INT64)
        schema.add_field("added", DataType.DOUBLE)
        schema.add_field("meta", DataType.JSON)  # face_index, box, score, landmarks
        index = client.prepare_index_params()
        index.add_index(
            "embedding", index_type=index_type, metric_type="IP", params=index_params or {}
        )
        with _quiet_index_creation():
            client.create_collection(
                name, schema=schema, index_params=index, consistency_level="Strong"
            )
        photos = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        photos.add_field("id", DataType.INT64, is_primary=True)
        photos.add_field("photo", DataType.VARCHAR, max_length=4096)
        photos.add_field("path", DataType.VARCHAR, max_length=4096)
        photos.add_field("update", DataType.INT64)
        photos.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
        index = client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        with _quiet_index_creation():
            client.create_collection(
                f"{name}__photos", schema=photos, index_params=index, consistency_level="Strong"
            )
        props = {
            "format": FORMAT,
            "dim": str(int(dim)),
            "committed": "0",
            "next_row": "0",
            "next_photo": "0",
            "source": source.to_json() if source else "",
            "created": repr(time.time()),
        }
        client.alter_collection_properties(name, {KEY + k: v for k, v in props.items()})
        return cls(path, client, name)

    @classmethod
    def _open(cls, path: str) -> MilvusGallery:
        uri, token, name = parse(path)
        client = _client(uri, token)
        if not client.has_collection(name):
            raise FileNotFoundError(
                f"no gallery at {path!r} (no collection {name!r}): make one with `resvision "
                f"face gallery import FILE.npz {path}` or Gallery.create(path, dim)"
            )
        for collection in (name, f"{name}__photos"):
            client.load_collection(collection)  # a server keeps collections released
        return cls(path, client, name)

    def close(self) -> None:
        self.client.close()

    # -- state -----------------------------------------------------------------------------
    def _props(self) -> dict[str, str]:
        found = self.client.describe_collection(self.collection).get("properties", {})
        return {k[len(KEY) :]: v for k, v in found.items() if k.startswith(KEY)}

    def _set(self, **values: Any) -> None:
        props = {KEY + k: str(v) for k, v in values.items()}
        self.client.alter_collection_properties(self.collection, props)

    def _visible(self, extra: str = "") -> str:
        committed = int(self._props()["committed"])
        return f"update <= {committed}" + (f" and ({extra})" if extra else "")

    def _scan(self, collection: str, expr: str, fields: list[str]) -> list[dict]:
        """Every committed row of ``collection`` matching ``expr``, read in primary-key ranges
        of :data:`BATCH` (the gallery numbers rows and photos from 0; Milvus's query iterator
        needs a timestamp service that milvus-lite lacks)."""
        key, counter = (
            ("row", "next_row") if collection == self.collection else ("id", "next_photo")
        )
        rows: list[dict] = []
        for start in range(0, int(self._props()[counter]), BATCH):
            where = f"{key} >= {start} and {key} < {start + BATCH} and ({expr})"
            rows += self.client.query(collection, filter=where, output_fields=fields, limit=BATCH)
        return rows

    def _query(self, collection: str, expr: str, fields: list[str]) -> list[dict]:
        """The rows matching a selective ``expr`` (at most :data:`BATCH` values in it)."""
        return self.client.query(collection, filter=expr, output_fields=fields, limit=16384)

    def _rows(self, expr: str = "", fields: Sequence[str] = ()) -> list[dict]:
        """Every visible face matching ``expr``, in the gallery's order (by row)."""
        found = self._scan(self.collection, self._visible(expr), ["row", *fields])
        return sorted(found, key=lambda r: r["row"])

    @property
    def source(self) -> EmbeddingSource | None:
        return EmbeddingSource.from_json(self._props().get("source"))

    def __len__(self) -> int:
        found = self.client.query(
            self.collection, filter=self._visible(), output_fields=["count(*)"]
        )
        return int(found[0]["count(*)"])

    def faces(self, names=None, *, columns=None) -> dict[str, np.ndarray]:
        columns = list(columns or ("name", "label", "added", *_FIELDS))
        if names is None:
            rows = self._rows(fields=["name", "label", "added", "photo", "path", "meta"])
        else:
            names = [str(n) for n in names]
            found: dict[str, dict] = {}
            for start in range(0, len(names), BATCH):
                part = names[start : start + BATCH]
                fields = ["name", "label", "added", "photo", "path", "meta"]
                expr = self._visible(f"name in {_quote(part)}")
                for r in self._query(self.collection, expr, fields):
                    found[r["name"]] = r
            missing = [n for n in names if n not in found]
            if missing:
                raise KeyError(f"{self.path}: no face named {missing[0]!r}")
            rows = [found[n] for n in names]
        values = {
            "name": [r["name"] for r in rows],
            "label": [r["label"] for r in rows],
            "added": [r["added"] for r in rows],
            "photos": [r["photo"] or None for r in rows],
            "paths": [r["path"] or None for r in rows],
            "face_index": [r["meta"].get("face_index") for r in rows],
            "boxes": [_blob(r["meta"].get("box")) for r in rows],
            "scores": [r["meta"].get("score") for r in rows],
            "landmarks": [_blob(r["meta"].get("landmarks")) for r in rows],
        }
        unknown = sorted(set(columns) - set(values))
        if unknown:
            raise ValueError(f"unknown face columns {unknown}")
        return {c: face_column(c, values[c]) for c in columns}

    def embeddings(self) -> np.ndarray:
        rows = self._rows(fields=["embedding"])
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.array([r["embedding"] for r in rows], np.float32)

    def photos(self) -> dict[str, np.ndarray]:
        rows = self._scan(self.photos_collection, self._visible(), ["photo", "path"])
        rows.sort(key=lambda r: r["photo"])
        return {
            "photo": np.array([r["photo"] for r in rows], dtype=str),
            "path": np.array([r["path"] for r in rows], dtype=str),
        }

    def info(self) -> dict[str, Any]:
        props = self._props()
        labels = {r["label"] for r in self._rows(fields=["label"])}
        index = self.client.describe_index(self.collection, "embedding")
        source = self.source
        return {
            "path": self.path,
            "kind": "Milvus (pymilvus)",
            "faces": len(self),
            "dim": self.dim,
            "people": len(labels - {""}),
            "photos": len(self.photos()["photo"]),
            "source": source.describe() if source else "unknown",
            "search": f"Milvus index {index.get('index_type')} (metric IP)",
            "last_update": f"update {props['committed']}",
        }

    # -- updates -----------------------------------------------------------------------------
    def _forget_uncommitted(self, committed: int) -> None:
        """Delete the rows of updates that never committed (a killed writer's)."""
        for collection in (self.collection, self.photos_collection):
            self.client.delete(collection, filter=f"update > {committed}")

    @contextlib.contextmanager
    def transaction(self, *, source: EmbeddingSource | None = None):
        props = self._props()
        committed = int(props["committed"])
        self._forget_uncommitted(committed)
        new_source = check_source(
            EmbeddingSource.from_json(props.get("source")),
            source,
            empty=len(self) == 0,
            where=f"gallery {self.path!r}",
        )
        t = MilvusTransaction(self, committed + 1, int(props["next_row"]), int(props["next_photo"]))
        try:
            yield t
        except BaseException:
            with contextlib.suppress(Exception):
                self._forget_uncommitted(committed)
            raise
        self.client.flush(self.collection)
        self.client.flush(self.photos_collection)
        self._set(  # the commit: one request
            next_row=t.next_row,
            next_photo=t.next_photo,
            source=new_source.to_json() if new_source else "",
            committed=committed + 1,
        )

    def remove(self, *, names=None, labels=None, photos=None) -> int:
        if names is None and labels is None and photos is None:
            raise ValueError("say what to remove: names, labels or photos")
        terms = [
            f"{field} in {_quote(values)}"
            for field, values in (("name", names), ("label", labels), ("photo", photos))
            if values
        ]
        if not terms:
            return 0
        expr = self._visible(" or ".join(terms))
        count = len(self._scan(self.collection, expr, ["row"]))
        self.client.delete(self.collection, filter=expr)
        if photos:
            self.client.delete(self.photos_collection, filter=f"photo in {_quote(photos)}")
        return count

    def relabel(self, old, new: str) -> int:
        olds = [old] if isinstance(old, str) else [str(o) for o in old]
        if not olds:
            raise ValueError("name the label(s) to change")
        fields = ["embedding", "name", "label", "photo", "path", "update", "added", "meta"]
        rows = self._rows(f"label in {_quote(olds)}", fields)
        for r in rows:
            r["label"] = str(new)
        if rows:
            self.client.upsert(self.collection, rows)
        return len(rows)

    # -- search ------------------------------------------------------------------------------
    def _search_rows(self, queries, k, *, labels=None, nprobe=None):
        expr = self._visible(f"label in {_quote(labels)}" if labels is not None else "")
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        params = {"metric_type": "IP", "params": {"nprobe": int(nprobe)} if nprobe else {}}
        for start in range(0, len(queries), BATCH):
            found = self.client.search(
                self.collection,
                data=queries[start : start + BATCH].tolist(),
                limit=k,
                filter=expr,
                search_params=params,
                anns_field="embedding",
            )
            for i, hits in enumerate(found):
                for j, hit in enumerate(hits[:k]):
                    scores[start + i, j] = hit["distance"]
                    rows[start + i, j] = hit["id"] if "id" in hit else hit["row"]
        return scores, rows

    def _names_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        wanted = np.unique(rows[rows >= 0]).tolist()
        found: dict[int, str] = {}
        for start in range(0, len(wanted), BATCH):
            part = wanted[start : start + BATCH]
            for r in self._query(self.collection, f"row in {part}", ["row", "name"]):
                found[int(r["row"])] = r["name"]
        out = np.array([found.get(int(r), "") for r in rows.ravel()], dtype=object)
        return out.astype(str).reshape(rows.shape) if out.size else np.zeros(rows.shape, str)

    def knn(self, k: int, *, nprobe: int | None = None, progress=None):
        from resvision.tasks.face.clustering import drop_self

        found = self._rows(fields=["embedding"])
        order = np.array([r["row"] for r in found], np.int64)
        vectors = np.array([r["embedding"] for r in found], np.float32).reshape(-1, self.dim)
        n = len(order)
        scores, rows = self._search_rows(vectors, min(k + 1, max(n, 1)), nprobe=nprobe)
        scores, rows = drop_self(scores, rows, order, k)
        positions = np.searchsorted(order, np.maximum(rows, 0))
        return scores, np.where(rows < 0, -1, positions)


class MilvusTransaction(Transaction):
    """Inserts rows tagged with the update's id; nothing is visible before the commit. (The
    rows of killed updates were deleted when this one began: every row there is committed or
    this update's.)"""

    def __init__(self, gallery: MilvusGallery, update: int, next_row: int, next_photo: int):
        self.gallery = gallery
        self.update = update
        self.next_row = next_row
        self.next_photo = next_photo

    def _taken(self, names: list[str]) -> list[str]:
        g = self.gallery
        taken = []
        for start in range(0, len(names), BATCH):
            expr = f"name in {_quote(names[start : start + BATCH])}"
            taken += [r["name"] for r in g._query(g.collection, expr, ["name"])]
        return taken

    def _write(self, batch: Batch) -> None:
        g = self.gallery
        rows = list(_face_rows(batch, self.next_row, self.update, time.time()))
        for start in range(0, len(rows), BATCH):
            g.client.insert(g.collection, rows[start : start + BATCH])
        self.next_row += len(rows)
        photos = _photo_rows(batch, self.update)
        for start in range(0, len(photos), BATCH):
            part = photos[start : start + BATCH]
            expr = f"photo in {_quote([p['photo'] for p in part])}"
            known = {r["photo"] for r in g._query(g.photos_collection, expr, ["photo"])}
            part = [p for p in part if p["photo"] not in known]
            for p in part:
                p["id"] = self.next_photo
                self.next_photo += 1
            if part:
                g.client.insert(g.photos_collection, part)


_FIELDS = ("photos", "paths", "face_index", "boxes", "scores", "landmarks")


def _blob(value) -> bytes | None:
    return None if value is None else np.asarray(value, np.float32).tobytes()


def _face_rows(batch: Batch, first: int, update: int, now: float):
    m = batch.metadata
    for i in range(len(batch.names)):
        meta = {}
        if "face_index" in m:
            meta["face_index"] = int(m["face_index"][i])
        if "boxes" in m:
            meta["box"] = m["boxes"][i].tolist()
        if "scores" in m:
            meta["score"] = float(m["scores"][i])
        if "landmarks" in m:
            meta["landmarks"] = m["landmarks"][i].tolist()
        yield {
            "row": first + i,
            "embedding": batch.embeddings[i].tolist(),
            "name": str(batch.names[i]),
            "label": str(batch.labels[i]),
            "photo": str(m["photos"][i]) if "photos" in m else "",
            "path": str(m["paths"][i]) if "paths" in m else "",
            "update": update,
            "added": now,
            "meta": meta,
        }


def _photo_rows(batch: Batch, update: int) -> list[dict]:
    m = batch.metadata
    out: dict[str, dict] = {}
    if "photos" in m:
        paths = m.get("paths")
        for i, photo in enumerate(m["photos"].tolist()):
            path = str(paths[i]) if paths is not None else ""
            out.setdefault(photo, {"photo": photo, "path": path})
    for photo, path in zip(batch.photos_without_faces.tolist(), batch.paths_without_faces.tolist()):
        out.setdefault(photo, {"photo": photo, "path": path})
    return [r | {"update": update, "unused": [0.0, 0.0]} for r in out.values()]
