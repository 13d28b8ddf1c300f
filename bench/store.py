"""The record store: one JSON record per run, written atomically, verified when read.

Layout: `<root>/runs/<dataset>/<method>/<run_id>.json` (the user's data under a short folder
name, `npz-<stem>-<hash>`, datasets/registry.py). A record is published with
`os.replace` of a fully written and fsynced temporary file, so a crash leaves either the old
state or the new record, never half of one. When read, a record must parse, carry a checksum
that matches its content, and hold the config whose hash is its name; otherwise it is reported,
moved aside to `<name>.corrupt` (its bytes are kept) and its run is redone. A record computed
by other code (bench/provenance.py) is moved aside to `<name>.stale` when its run is redone.

Beside each record, `<run_id>.log.jsonl` is its live log, appended while it computes
(bench/monitor.py).

Several `bench run` processes (or cluster nodes) may share one results folder: a run is claimed
(`<run_id>.claim`, created exclusively) by the process that computes it, and the others wait for
its record instead of computing it again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .config import RunConfig
from .datasets.files import HOST, atomic_write
from .datasets.registry import folder_name
from .methods.checkpoints import SUFFIX as CHECKPOINT_SUFFIX
from .records import Record

DEFAULT_ROOT = "results"


def _checksum(body: dict) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_png(f, image) -> None:
    from PIL import Image

    Image.fromarray(image).save(f, format="PNG")


def process_alive(host: str, pid: int) -> bool | None:
    """Whether process `pid` of `host` runs; None when it is another host's (unknowable)."""
    if host != HOST:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_orphan_files(folder: Path) -> int:
    """Delete the temporary files of `atomic_write` under `folder`
    (`.<name>.<host>.<pid>.<random>.tmp`) left by dead processes of this host."""
    removed = 0
    for tmp in folder.rglob(f".*.{HOST}.*.tmp"):
        parts = tmp.name.split(".")
        try:
            pid = int(parts[parts.index(HOST) + 1])
        except (ValueError, IndexError):
            continue
        if process_alive(HOST, pid) is False:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class CorruptRecord(Exception):
    pass


CLAIM_SUFFIX = ".claim"
LOG_SUFFIX = ".log.jsonl"


class RecordStore:
    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, warn=print):
        self.root = Path(root)
        self.warn = warn

    def path(self, config: RunConfig) -> Path:
        return self.root / "runs" / folder_name(config.dataset) / config.method / \
            f"{config.run_id}.json"

    def log_path(self, config: RunConfig, part=None) -> Path:
        """The live log of a run (bench/monitor.py), or of one of its parts (a generator; a
        methods.base.Part)."""
        stem = config.run_id if part is None else \
            f"{config.run_id}.part-{hashlib.sha256(str(part).encode()).hexdigest()[:8]}"
        return self.path(config).with_name(f"{stem}{LOG_SUFFIX}")

    def logs(self) -> list[Path]:
        """Every live log under the root."""
        return sorted((self.root / "runs").glob(f"*/*/*{LOG_SUFFIX}"))

    def checkpoint_path(self, config: RunConfig) -> Path:
        """The folder of the run's checkpoints (methods/checkpoints.py), beside its record."""
        return self.path(config).with_suffix(CHECKPOINT_SUFFIX)

    def artifact_path(self, config: RunConfig, name: str) -> Path:
        return self.path(config).with_name(f"{config.run_id}.{name}.png")

    def write(self, record: Record, artifacts: dict | None = None) -> Path:
        """Store the record's images first (PNG), then the record that names them."""
        config = record.config
        names = dict(record.artifacts)
        for name, image in (artifacts or {}).items():
            target = self.artifact_path(config, name)
            atomic_write(target, lambda f, image=image: _write_png(f, image))
            names[name] = target.name
        body = record.replace(artifacts=names).to_dict()
        full = {**body, "checksum": _checksum(body)}
        path = self.path(config)
        atomic_write(path, lambda f: f.write(
            json.dumps(full, indent=1, sort_keys=True, allow_nan=False).encode()))
        return path

    @staticmethod
    def read(path: Path) -> Record:
        """Parse and verify one record (of any schema `Record.from_dict` migrates); raises
        CorruptRecord with the reason."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptRecord(f"unreadable JSON ({e})") from None
        if not isinstance(raw, dict) or "checksum" not in raw:
            raise CorruptRecord("no checksum (not a complete record)")
        body = {k: v for k, v in raw.items() if k != "checksum"}
        if _checksum(body) != raw["checksum"]:
            raise CorruptRecord("checksum mismatch (content changed or truncated)")
        try:
            record = Record.from_dict(body)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptRecord(f"not a record this version reads: {e}") from None
        if record.config.run_id != path.stem:
            raise CorruptRecord(f"config hash {record.config.run_id} does not match the file "
                                f"name")
        return record

    @staticmethod
    def _set_aside(path: Path, suffix: str) -> Path | None:
        """Move `path` to `<name>.<suffix>` (or `.<suffix>N`), keeping its bytes; None when
        another process moved it first."""
        target = path.with_name(f"{path.name}.{suffix}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{suffix}{n}")
            n += 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return target

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self._set_aside(path, "corrupt")
        if target is not None:
            self.warn(f"warning: record {path} is corrupt: {reason}; moved to {target.name}, "
                      f"its run will be redone")

    # --- claims: several processes (or nodes) share one grid ---------------------------
    def claim_path(self, config: RunConfig) -> Path:
        return self.path(config).with_suffix(CLAIM_SUFFIX)

    def claim(self, config: RunConfig) -> bool:
        """Take the run for this process (a `<run_id>.claim` file created exclusively, naming
        the host and pid). False when a live process holds it; a claim left by a dead process
        of this host is taken over. Release it with `release` once the record is written."""
        path = self.claim_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self.claim_alive(config):
                    return False
                path.unlink(missing_ok=True)  # its process died: take it over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{HOST} {os.getpid()}\n")
            return True
        return False

    def claim_alive(self, config: RunConfig) -> bool:
        """Whether a live process holds the run's claim (another host's counts as live)."""
        try:
            host, pid = self.claim_path(config).read_text().split()
        except FileNotFoundError:
            return False
        except ValueError:  # being written right now
            return True
        return process_alive(host, int(pid)) is not False

    def release(self, config: RunConfig) -> None:
        self.claim_path(config).unlink(missing_ok=True)

    def remove_orphans(self) -> int:
        """Temporary files and claims left under the root by killed processes of this host."""
        removed = remove_orphan_files(self.root)
        for claim in (self.root / "runs").glob(f"*/*/*{CLAIM_SUFFIX}"):
            try:
                host, pid = claim.read_text().split()
            except (OSError, ValueError):
                continue
            if process_alive(host, int(pid)) is False:
                claim.unlink(missing_ok=True)
                removed += 1
        return removed

    def retire(self, config: RunConfig) -> Path | None:
        """Set a stale record aside (`<run_id>.json.stale`) before its run is recomputed."""
        path = self.path(config)
        return self._set_aside(path, "stale") if path.exists() else None

    def load(self, config: RunConfig) -> Record | None:
        """The finished record of `config`, or None (missing, or corrupt and set aside)."""
        return self.load_id(config.dataset, config.method, config.run_id)

    def load_id(self, dataset: str, method: str, run_id: str) -> Record | None:
        """The finished record of run `run_id`, or None (missing, or corrupt and set aside)."""
        path = self.root / "runs" / folder_name(dataset) / method / f"{run_id}.json"
        if not path.exists():
            return None
        try:
            return self.read(path)
        except CorruptRecord as e:
            self._quarantine(path, str(e))
            return None

    def find(self, run_id: str) -> Record:
        """The record of `run_id` (a unique prefix is enough)."""
        matches = sorted((self.root / "runs").glob(f"*/*/{run_id}*.json"))
        if len(matches) != 1:
            what = "no stored run" if not matches else f"{len(matches)} stored runs"
            raise CorruptRecord(f"{what} with id {run_id!r} under {self.root}; "
                                f"`python -m bench table` lists the stored runs")
        return self.read(matches[0])

    def all_records(self) -> list[Record]:
        """Every valid record under the root; corrupt ones are reported and skipped."""
        out = []
        for path in sorted((self.root / "runs").glob("*/*/*.json")):
            try:
                out.append(self.read(path))
            except CorruptRecord as e:
                self.warn(f"warning: skipping corrupt record {path}: {e}")
        return out
