"""What each file offered by a loader is, from its safetensors header alone (no weights read).

Loader nodes declare their file inputs as `FILE_INPUTS = {input name: (host folders, wanted kind)}`.
From that, this module orders a loader's choices (files that hold the wanted network first) and
answers the web route that shows, in the editor, what the chosen file is and whether it fits.
Headers are cached by (path, size, mtime): a folder of 14 GB checkpoints is read in milliseconds.
"""
import os

import folder_paths

from ..stages.checkpoint import FILE_KINDS, CheckpointError, describe, file_kind, identify, locate, read_safetensors_header

_SAFETENSORS = (".safetensors", ".sft")
_cache = {}  # path -> ((size, mtime_ns), report)


def _full_path(name, folders):
    """The file's path if `name` is one of these host folders' files; None otherwise. Only names the
    host itself lists are resolved, so no request can reach outside the model folders."""
    for folder in folders:
        if name in folder_paths.get_filename_list(folder):
            return folder_paths.get_full_path(folder, name)
    return None


def _read(path):
    """{summary, fits_kinds} of the file: one line for people, and which loader kinds it can serve."""
    name = os.path.basename(path)
    if not path.lower().endswith(_SAFETENSORS):
        return {"summary": "not a .safetensors file: its contents are only checked when it is loaded", "kinds": None}
    try:
        header = read_safetensors_header(path)
    except CheckpointError as error:
        return {"summary": str(error), "kinds": []}
    try:
        info = identify(header)
    except CheckpointError as error:
        return {"summary": f"{name}: {error}", "kinds": []}
    kinds = []
    for want in (kind for kind, record in FILE_KINDS.items() if record.wanted_file):
        try:
            locate(header, want, name)
            kinds.append(want)
        except CheckpointError:
            pass
    summary = describe(info)
    if info.kind == "lora":
        summary, for_stage_c = _lora_details(header, name, summary)
        if not for_stage_c:
            kinds.remove("lora")
    return {"summary": summary, "kinds": kinds}


def _lora_details(header, name, summary):
    """(summary with what the LoRA was trained for, its rank and learned tokens; whether it is for Stage C)."""
    from ..lora.read import identify_lora

    try:
        found = identify_lora(header, name)
    except ValueError:  # a LoRA-like file whose weights do not fit together: said when it is loaded
        found = None
    if found is None:
        return summary, False
    _format, trained_for = found
    ranks = sorted({shape[0] for key, (_dtype, shape) in header.items()
                    if key.endswith(("lora_down", "lora_down.weight")) and shape})
    tokens = header.get("embeddings.indices", (None, (0,)))[1][0] if "embeddings.indices" in header else 0
    details = [f"for {trained_for}"]
    if ranks:
        details.append(f"rank {'/'.join(map(str, ranks))}")
    if tokens:
        details.append(f"{tokens} learned token row(s)")
    return f"{summary}; {', '.join(details)}", "Stage C" in trained_for


def file_report(path):
    """The cached _read(path), re-read when the file changes."""
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _cache.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _read(path))
        _cache[path] = cached
    return cached[1]


def fits(report, want):
    """True (holds the wanted network), False (holds something else), None (cannot tell before loading)."""
    if report["kinds"] is None:
        return None
    return want in report["kinds"]


def describe_choice(name, folders, want):
    """What the route answers for one file choice of a loader input."""
    if name == "none":
        return {"name": name, "fits": True, "summary": "no file"}
    path = _full_path(name, folders)
    if path is None:
        return {"name": name, "fits": False, "missing": True,
                "summary": f"{name} is not in {', '.join('models/' + f for f in folders)}"}
    try:
        report = file_report(path)
    except OSError as error:
        return {"name": name, "fits": False, "summary": f"{name} cannot be read: {error}"}
    return {"name": name, "fits": fits(report, want), "summary": report["summary"],
            "wanted": file_kind(want).wanted_file or want}


def ordered_choices(names, folders, want):
    """`names` with the files that hold `want` first, then those that cannot be told, then the rest;
    otherwise in the host's order. A file that cannot be read moves to the end, it never fails the schema."""
    def rank(name):
        path = _full_path(name, folders)
        if path is None:
            return 1
        try:
            verdict = fits(file_report(path), want)
        except OSError:
            return 2
        return {True: 0, None: 1, False: 2}[verdict]

    return sorted(names, key=rank)  # sorted() is stable: the host's order within each rank
