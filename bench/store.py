"""The record store: one JSON record per run, written atomically, verified when read.

Layout: `<root>/runs/<dataset>/<method>/<run_id>.json`. A record is published with
`os.replace` of a fully written and fsynced temporary file, so a crash leaves either the old
state or the new record, never half of one. When read, a record must parse, carry a checksum
that matches its content, and hold the config whose hash is its name; otherwise it is reported,
moved aside to `<name>.corrupt` (its bytes are kept) and its run is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .config import SCHEMA, RunConfig

DEFAULT_ROOT = "results"


def _checksum(body: dict) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_png(f, image) -> None:
    from PIL import Image

    Image.fromarray(image).save(f, format="PNG")


class CorruptRecord(Exception):
    pass


class RecordStore:
    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, warn=print):
        self.root = Path(root)
        self.warn = warn

    def path(self, config: RunConfig) -> Path:
        return self.root / "runs" / config.dataset / config.method / f"{config.run_id}.json"

    def artifact_path(self, config: RunConfig, name: str) -> Path:
        return self.path(config).with_name(f"{config.run_id}.{name}.png")

    def write(self, record: dict, artifacts: dict | None = None) -> Path:
        """Store the record's images first (PNG), then the record that names them."""
        config = RunConfig.from_dict(record["config"])
        names = {}
        for name, image in (artifacts or {}).items():
            target = self.artifact_path(config, name)
            _atomic(target, lambda f, image=image: _write_png(f, image))
            names[name] = target.name
        body = {k: v for k, v in record.items() if k != "checksum"}
        if names:
            body["artifacts"] = names
        body["schema"] = SCHEMA
        full = {**body, "checksum": _checksum(body)}
        path = self.path(config)
        _atomic(path, lambda f: f.write(
            json.dumps(full, indent=1, sort_keys=True, allow_nan=False).encode()))
        return path

    @staticmethod
    def read(path: Path) -> dict:
        """Parse and verify one record; raises CorruptRecord with the reason."""
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptRecord(f"unreadable JSON ({e})") from None
        if not isinstance(record, dict) or "checksum" not in record:
            raise CorruptRecord("no checksum (not a complete record)")
        body = {k: v for k, v in record.items() if k != "checksum"}
        if _checksum(body) != record["checksum"]:
            raise CorruptRecord("checksum mismatch (content changed or truncated)")
        if record.get("schema") != SCHEMA:
            raise CorruptRecord(f"schema {record.get('schema')} (this version reads {SCHEMA})")
        try:
            config = RunConfig.from_dict(record["config"])
        except (KeyError, TypeError) as e:
            raise CorruptRecord(f"bad config ({e})") from None
        if config.run_id != path.stem:
            raise CorruptRecord(f"config hash {config.run_id} does not match the file name")
        return record

    def _quarantine(self, path: Path, reason: str) -> None:
        target = path.with_name(path.name + ".corrupt")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt{n}")
            n += 1
        os.replace(path, target)
        self.warn(f"warning: record {path} is corrupt: {reason}; moved to {target.name}, "
                  f"its run will be redone")

    def load(self, config: RunConfig) -> dict | None:
        """The finished record of `config`, or None (missing, or corrupt and set aside)."""
        path = self.path(config)
        if not path.exists():
            return None
        try:
            return self.read(path)
        except CorruptRecord as e:
            self._quarantine(path, str(e))
            return None

    def find(self, run_id: str) -> dict:
        """The record of `run_id` (a unique prefix is enough)."""
        matches = sorted((self.root / "runs").glob(f"*/*/{run_id}*.json"))
        if len(matches) != 1:
            what = "no stored run" if not matches else f"{len(matches)} stored runs"
            raise CorruptRecord(f"{what} with id {run_id!r} under {self.root}; "
                                f"`python -m bench table` lists the stored runs")
        return self.read(matches[0])

    def all_records(self) -> list[dict]:
        """Every valid record under the root; corrupt ones are reported and skipped."""
        out = []
        for path in sorted((self.root / "runs").glob("*/*/*.json")):
            try:
                out.append(self.read(path))
            except CorruptRecord as e:
                self.warn(f"warning: skipping corrupt record {path}: {e}")
        return out
