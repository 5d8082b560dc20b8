"""Where the trainer writes: the LoRA in models/loras, learned tokens in models/embeddings; checked up front."""
import os
import re

import folder_paths

from ..lora import files

_NAME = re.compile(r"^[A-Za-z0-9_\-. ]+$")


def lora_path(lora_name):
    """models/loras/<lora_name>.safetensors (subfolders allowed)."""
    name = lora_name.strip()
    if not name.lower().endswith(".safetensors"):
        name += ".safetensors"
    return os.path.join(folder_paths.get_folder_paths("loras")[0], name)


def embedding_path(token_name):
    return os.path.join(folder_paths.get_folder_paths("embeddings")[0], f"{token_name}.safetensors")


def _folder_problem(folder, what):
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{what} {folder!r} is a file, not a folder"
    if not os.path.isdir(folder):
        return f"{what} {folder!r} does not exist: create it first, or write the LoRA to models/loras itself"
    if not os.access(folder, os.W_OK):
        return f"{what} {folder!r} cannot be written (no permission)"
    return None


def output_problems(lora_name, resume, new_tokens):
    """Messages for an output that cannot be written or would overwrite something unasked."""
    parts = [part for part in re.split(r"[\\/]", lora_name.strip())]
    if not lora_name.strip() or any(not _NAME.match(part) or part in (".", "..") for part in parts):
        return [f"lora_name {lora_name!r} is not a usable file name (letters, digits, _ - . and spaces; "
                "subfolders with /; no '..')"]
    problems = []
    path = lora_path(lora_name)
    folder_problem = _folder_problem(os.path.dirname(path), "the LoRA output folder")
    if folder_problem:
        problems.append(folder_problem)
    if resume:
        if not os.path.isfile(path):
            problems.append(f"resume is on but {path!r} does not exist: there is no saved LoRA to continue")
        elif not files.read_training_info(path):
            problems.append(f"{path!r} was not saved by this trainer (no training settings inside): it cannot be resumed")
    elif os.path.exists(path):
        problems.append(f"a LoRA named {os.path.basename(path)!r} already exists in {os.path.dirname(path)!r}: choose "
                        "another lora_name, or turn resume on to continue training it")
    if new_tokens:
        embeddings = os.path.dirname(embedding_path(new_tokens[0].name))
        if not os.path.isdir(embeddings):
            os.makedirs(embeddings, exist_ok=True)  # the host's own folder; it simply has not been made yet
        folder_problem = _folder_problem(embeddings, "the embeddings folder")
        if folder_problem:
            problems.append(folder_problem)
    for token in new_tokens:
        if os.path.exists(embedding_path(token.name)) and not resume:
            problems.append(f"new token {token.token!r} clashes with the existing embedding "
                            f"{embedding_path(token.name)!r} (prompts say embedding:{token.name}): rename the token, "
                            "or turn resume on to continue it")
    return problems
