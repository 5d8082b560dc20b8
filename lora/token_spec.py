"""New prompt tokens to train, written one per line as `<token> [init pattern]`, e.g.

    [fernando] ^dog</w>

The token must be wrapped in [...] or <...> (a word the vocabulary does not have, as in the
original's `train_tokens`); the optional init pattern is a regular expression over vocabulary
strings whose embeddings' mean is the token's starting point (none matching, or no pattern: zeros).
A learned token is used in prompts as `embedding:<name>`, name = the token without its brackets.
"""
import re
from collections import namedtuple

NewToken = namedtuple("NewToken", "token name init_pattern")
_WRAPPED = re.compile(r"^(\[([A-Za-z0-9_\-]+)\]|<([A-Za-z0-9_\-]+)>)$")


def parse_new_tokens(text):
    """[NewToken] from the node's text; raises ValueError naming every bad line."""
    tokens, problems = [], []
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        match = _WRAPPED.match(parts[0])
        if match is None:
            problems.append(f"line {number} {parts[0]!r}: a new token must be a word of letters, digits, _ or - wrapped in "
                            "[...] or <...>, e.g. [fernando]")
            continue
        pattern = parts[1].strip() if len(parts) > 1 else None
        if pattern:
            try:
                re.compile(pattern)
            except re.error as error:
                problems.append(f"line {number}: init pattern {pattern!r} is not a valid regular expression ({error})")
                continue
        name = match.group(2) or match.group(3)
        if any(t.name.lower() == name.lower() for t in tokens):
            problems.append(f"line {number}: token {parts[0]!r} is listed twice (names compare without brackets and case)")
            continue
        tokens.append(NewToken(parts[0], name, pattern or None))
    if problems:
        raise ValueError("new tokens: " + "; ".join(problems))
    return tokens


def prompt_with_embeddings(caption, tokens):
    """The caption with each new token written as the host's ` embedding:<name> `."""
    for token in tokens:
        caption = caption.replace(token.token, f" embedding:{token.name} ")
    return caption
