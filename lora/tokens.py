"""Learned tokens of the original training code (official.md §7.3), as plain tensor functions.

Training declares tokens as `[token, init_pattern]` pairs. A token wrapped in [...] or <...> is new:
it is appended to the vocabulary and its embedding row starts as the mean of the rows of every
vocabulary entry matching `init_pattern` (re.search; zeros when nothing matches or no pattern).
Any other token is a regex selecting existing entries. The training then learns a delta for each
selected row (ReToken); files store only those deltas and the row ids.

    new, init_rows, ids = prepare_train_tokens(vocab, embedding_weight, [("[fernando]", "^dog</w>")])
    rows = learned_rows(embedding_weight, init_rows, ids, deltas)   # {id: final row}

Used by the LoRA loader (rebuilding the tokens a file was trained with) and by training (creating
them); nothing here knows the host.
"""
import re

import torch

from .errors import LoraError


def is_new_token(token):
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))


def init_row(vocab, embedding_weight, init_pattern):
    """Mean of the rows of the vocabulary entries matching `init_pattern` (float32); zeros if none."""
    width = embedding_weight.shape[1]
    if not init_pattern:
        return torch.zeros(width)
    pattern = re.compile(init_pattern)
    ids = sorted(i for string, i in vocab.items() if pattern.search(string) and i < embedding_weight.shape[0])
    if not ids:
        return torch.zeros(width)
    return embedding_weight[ids].float().mean(dim=0)


def new_token_rows(vocab, embedding_weight, init_patterns):
    """[len(init_patterns), width]: the initial row of each new token (see init_row)."""
    if not init_patterns:
        return torch.zeros(0, embedding_weight.shape[1])
    return torch.stack([init_row(vocab, embedding_weight, pattern) for pattern in init_patterns])


def prepare_train_tokens(vocab, embedding_weight, train_tokens):
    """(new token strings, their initial rows [n_new, width], selected ids in the original's order).

    `vocab`: {string: id} of the tokenizer before adding (ids < embedding rows). New tokens get ids
    len(vocab), len(vocab)+1, ... in the order given; the selected ids go through `list(set(...))`
    exactly as the original does, so a training run stores its deltas in the same row order.
    """
    new_tokens, init_rows, selected = [], [], []
    next_id = len(vocab)
    for token, init_pattern in train_tokens:
        if is_new_token(token):
            new_tokens.append(token)
            init_rows.append(init_row(vocab, embedding_weight, init_pattern))
            selected.append(next_id)
            next_id += 1
        else:
            pattern = re.compile(token)
            selected.extend(i for string, i in vocab.items() if pattern.search(string))
    width = embedding_weight.shape[1]
    rows = torch.stack(init_rows) if init_rows else torch.zeros(0, width)
    return new_tokens, rows, list(set(selected))


def learned_rows(embedding_weight, new_token_init_rows, indices, deltas):
    """{token id: embedding row after the learned delta} (float32).

    Rows past the vocabulary come from `new_token_init_rows` (in id order); every other row of the
    embedding is unchanged, so only these need to reach the text encoder.
    """
    base = torch.cat([embedding_weight.float(), new_token_init_rows.float()])
    if deltas.shape[1] != base.shape[1]:
        raise LoraError(f"the learned token rows are {deltas.shape[1]} wide but the text encoder's token embedding "
                        f"is {base.shape[1]} wide: the LoRA was trained with another text encoder.")
    rows = {}
    for i, index in enumerate(indices):
        if not 0 <= index < base.shape[0]:
            raise LoraError(f"learned token id {index} is past the vocabulary ({embedding_weight.shape[0]} entries + "
                            f"{new_token_init_rows.shape[0]} new tokens given).")
        rows[index] = base[index] + deltas[i].float()
    return rows


def parse_token_lines(text):
    """[(token, init pattern or None)] from lines like '[fernando] ^dog</w>' (blank lines and # comments skipped)."""
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, _, pattern = line.partition(" ")
        pairs.append((token, pattern.strip() or None))
    return pairs


def new_token_ids(indices, vocab_size):
    """Ids of tokens a file's training appended (at or past the vocabulary size), ascending."""
    return sorted(i for i in set(indices) if i >= vocab_size)


def check_new_tokens(indices, vocab_size, given, source_name="the LoRA"):
    """The (token, pattern) pairs of `given` that are new tokens, checked against the file's ids.

    The file stores the new ids but not their strings nor init patterns; say what is missing.
    """
    new_ids = new_token_ids(indices, vocab_size)
    new_given = [(t, p) for t, p in given if is_new_token(t)]
    if new_ids and new_ids != list(range(vocab_size, vocab_size + len(new_ids))):
        raise LoraError(f"{source_name} stores learned tokens with ids {new_ids}, but a text encoder with "
                        f"{vocab_size} entries would have given new tokens ids from {vocab_size} on: it was trained "
                        "with another tokenizer.")
    if len(new_given) != len(new_ids):
        example = "[mytoken] ^dog</w>"
        raise LoraError(f"{source_name} learned {len(new_ids)} new token(s) (ids {new_ids}) but {len(new_given)} "
                        f"were given. The file does not store their text: give one line per new token, in training "
                        f"order, as the token and its init pattern from the training config, e.g. '{example}'.")
    return new_given
