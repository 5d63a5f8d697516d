"""The on-disk cache: ``$JACKET_CACHE_DIR``, else ``$XDG_CACHE_HOME/jacket``, else
``~/.cache/jacket``. Files are JSON, written atomically (a temporary file, then a rename), and
read back with a reason when they can't be used (missing, unreadable, another format)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "read_json", "write_json", "device_slug", "versions"]

ENV = "JACKET_CACHE_DIR"
FORMAT = 1


def cache_dir() -> Path:
    """Where jacket keeps calibrations and autotuned plans."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jacket"


def device_slug(device) -> str:
    """``cpu``, ``gpu-nvidia-h100-80gb-hbm3``: a file-name-safe name of a device's kind."""
    kind = "".join(c if c.isalnum() else "-" for c in str(device.device_kind).lower()).strip("-")
    platform = str(device.platform)
    return platform if kind in ("", platform) else f"{platform}-{'-'.join(p for p in kind.split('-') if p)}"


def versions() -> dict:
    import jax
    import jaxlib
    return {"format": FORMAT, "jax": jax.__version__, "jaxlib": getattr(jaxlib, "__version__", "")}


def read_json(path: Path) -> tuple[dict | None, str]:
    """``(data, "")``, or ``(None, why)`` when the file is missing, corrupt or of another
    format / JAX version (``why`` says which; ``"missing"`` for no file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, "missing"
    except OSError as err:
        return None, f"unreadable ({err})"
    try:
        data = json.loads(text)
    except ValueError as err:
        return None, f"corrupt ({err})"
    if not isinstance(data, dict):
        return None, "corrupt (not a JSON object)"
    stale = {k: (data.get(k), v) for k, v in versions().items() if data.get(k) != v}
    if stale:
        return None, "stale (" + ", ".join(f"{k} {old!r}, now {new!r}" for k, (old, new) in stale.items()) + ")"
    return data, ""


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(versions(), **data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path
