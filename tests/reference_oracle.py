"""The official reference files, when they are at hand: an OPTIONAL test oracle, never part of the project.

Nemotron-Cascade-2 keeps the chat template and the architecture of Nemotron-3-Nano-30B-A3B. Their published
files (the chat template and `config.json`) are not copied into this repository: `cascade_lab.chat` writes the
format's rules in Python, and `nbs/07_model.ipynb` writes down the architecture. Tests and notebook test cells
that compare against the official files get them from `find_reference`, the one place that knows where to look,
and SKIP, giving its `reason`, when it finds nothing. Nothing else in the repository may point to these places.

`find_reference(kind)` (kind `"chat_template"` or `"config"`) looks, in order, in:

1. `$CASCADE_REFERENCE_DIR`, a folder holding `nemotron-3-nano.chat_template.jinja` /
   `nemotron-3-nano-30b-a3b.config.json`, or a checkpoint or tokenizer folder (`chat_template.jinja`,
   `tokenizer_config.json` with a `chat_template`, `config.json`);
2. `../shared/reference/` beside the checkout: the reference folder the project's developers keep next to
   their clone (the same two file names). Users do not have it;
3. the local Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`): the snapshot
   folders of `nvidia/Nemotron-Cascade-2-30B-A3B` and of the Nemotron-3-Nano-30B-A3B checkpoints (`chat_template.jinja`,
   else the `chat_template` of `tokenizer_config.json`; `config.json`). Offline only: it reads the cache with
   `huggingface_hub.try_to_load_from_cache` when that is importable, then looks through the snapshot folders
   itself; it never downloads.

To have the oracle without the developers' folder: `hf download nvidia/Nemotron-Cascade-2-30B-A3B
tokenizer_config.json config.json` (a few kilobytes) where there is network, or point `CASCADE_REFERENCE_DIR` at
a folder holding the files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = "CASCADE_REFERENCE_DIR"
SHARED_REFERENCE = REPO.parent / "shared" / "reference"   # the developers' folder beside the checkout
KINDS = ("chat_template", "config")
# the names of the published files in a reference folder, then the names a checkpoint folder uses
REFERENCE_NAMES = {"chat_template": "nemotron-3-nano.chat_template.jinja",
                   "config": "nemotron-3-nano-30b-a3b.config.json"}
CHECKPOINT_NAMES = {"chat_template": ("chat_template.jinja", "tokenizer_config.json"), "config": ("config.json",)}
# hub repositories, in order of preference: the model itself, then the checkpoints whose template and
# architecture it keeps
HUB_REPOS = ("nvidia/Nemotron-Cascade-2-30B-A3B", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
             "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8")
HUB_FOLDER_GLOBS = ("models--nvidia--Nemotron-Cascade-2-30B-A3B*", "models--nvidia--NVIDIA-Nemotron-3-Nano-30B-A3B*")


class Reference(NamedTuple):
    "An official file: its text and where it came from, or (text None) the reason it was not found."
    kind: str
    text: str | None
    where: str
    reason: str = ""

    def __bool__(self) -> bool: return self.text is not None

    def json(self) -> dict: return json.loads(self.text)


def _template_of(path: Path) -> str | None:
    "The chat template in `path`: a Jinja file, or the `chat_template` of a tokenizer_config.json."
    if path.suffix != ".json": return path.read_text(encoding="utf-8")
    t = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(t, list):   # named templates: [{"name": "default", "template": "..."}, ...]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default", next(iter(named.values()), None))
    return t if isinstance(t, str) and t else None


def _read(kind: str, path: Path) -> str | None:
    try:
        if kind == "chat_template": return _template_of(path)
        text = path.read_text(encoding="utf-8")
        return text if isinstance(json.loads(text), dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _in_folder(kind: str, folder: Path, names) -> Reference | None:
    for name in names:
        f = folder / name
        if f.is_file() and (text := _read(kind, f)) is not None:
            return Reference(kind, text, str(f) + (" (its chat_template)" if f.suffix == ".json" and kind == "chat_template" else ""))
    return None


def hub_caches() -> list[Path]:
    "The Hugging Face hub cache folders to look in (existing ones, no duplicates)."
    dirs = []
    try:
        import huggingface_hub.constants as c
        dirs.append(Path(c.HF_HUB_CACHE))
    except ImportError: pass
    if os.environ.get("HF_HUB_CACHE"): dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"): dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    out = []
    for d in dirs:
        d = d.expanduser()
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]: out.append(d)
    return out


def _repo_folders(cache: Path) -> list[tuple[str, Path]]:
    "(repo id, cache folder) of the model's hub repositories held in `cache`, preferred ones first."
    found = {}
    for pattern in HUB_FOLDER_GLOBS:
        for folder in sorted(cache.glob(pattern)):
            if folder.is_dir(): found[folder.name] = folder
    order = ["models--" + r.replace("/", "--") for r in HUB_REPOS]
    names = sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))
    return [(n[len("models--"):].replace("--", "/", 1), found[n]) for n in names]


def _in_hub_cache(kind: str, cache: Path) -> Reference | None:
    try: from huggingface_hub import try_to_load_from_cache
    except ImportError: try_to_load_from_cache = None
    for repo_id, folder in _repo_folders(cache):
        for name in CHECKPOINT_NAMES[kind]:
            if try_to_load_from_cache is not None:   # the snapshot `main` points to: a local lookup, no network
                try: hit = try_to_load_from_cache(repo_id, name, cache_dir=cache)
                except Exception: hit = None
                if isinstance(hit, str) and (text := _read(kind, Path(hit))) is not None:
                    return Reference(kind, text, f"Hugging Face cache: {repo_id}, {hit}")
            snapshots = sorted((folder / "snapshots").glob(f"*/{name}"), key=lambda p: p.stat().st_mtime, reverse=True)
            for f in snapshots:                      # any other snapshot (downloaded by revision)
                if (text := _read(kind, f)) is not None:
                    return Reference(kind, text, f"Hugging Face cache: {repo_id}, {f}")
    return None


def find_reference(kind: str) -> Reference:
    """The official `kind` ("chat_template" or "config") from the first place that has it (see the module's
    docstring), or a `Reference` whose `text` is None and whose `reason` says where it looked and how to get it."""
    if kind not in KINDS: raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    looked = []
    env = os.environ.get(ENV_DIR)
    if env:
        folder = Path(env).expanduser()
        if hit := _in_folder(kind, folder, (REFERENCE_NAMES[kind], *CHECKPOINT_NAMES[kind])): return hit
        looked.append(f"${ENV_DIR} ({folder}) has no {' / '.join((REFERENCE_NAMES[kind], *CHECKPOINT_NAMES[kind]))}")
    else:
        looked.append(f"${ENV_DIR} is not set")
    if hit := _in_folder(kind, SHARED_REFERENCE, (REFERENCE_NAMES[kind],)): return hit
    looked.append(f"no developers' reference folder beside the checkout ({SHARED_REFERENCE / REFERENCE_NAMES[kind]})")
    caches = hub_caches()
    for cache in caches:
        if hit := _in_hub_cache(kind, cache): return hit
    files = " or ".join(CHECKPOINT_NAMES[kind])
    looked.append(f"no {files} of {' / '.join(HUB_REPOS)} in the Hugging Face cache "
                  f"({', '.join(map(str, caches)) or 'no cache folder exists'})")
    what = {"chat_template": "chat template", "config": "config.json"}[kind]
    return Reference(kind, None, "", f"the official {what} (an optional test oracle, not part of the repository) is "
                     f"not here: " + "; ".join(looked) + f". To use it: `hf download {HUB_REPOS[0]} "
                     f"{' '.join(CHECKPOINT_NAMES[kind][-1:])}` where there is network, or set {ENV_DIR} to a folder "
                     f"that holds it.")


if __name__ == "__main__":
    for k in KINDS:
        r = find_reference(k)
        print(f"{k}: {r.where if r else 'MISSING: ' + r.reason}")
