"""New prompt tokens to train, written one per line as `<token> [init pattern]`, e.g.

    [fernando] ^dog</w>

The token must be wrapped in [...] or <...> (a word the vocabulary does not have, as in the
original's `train_tokens`); the optional init pattern is a regular expression over vocabulary
strings whose embeddings' mean is the token's starting point (none matching, or no pattern: zeros).
A learned token is used in prompts as `embedding:<name>`, name = the token without its brackets.
"""
import re
from collections import namedtuple

from .tokens import is_new_token, parse_token_lines

NewToken = namedtuple("NewToken", "token name init_pattern")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def parse_new_tokens(text):
    """[NewToken] from the node's text (lora.tokens' `[token] init-pattern` lines); ValueError names every bad one."""
    tokens, problems = [], []
    for token, pattern in parse_token_lines(text or ""):
        name = token[1:-1]
        if not is_new_token(token) or not _NAME.match(name):
            problems.append(f"{token!r}: a new token must be a word of letters, digits, _ or - wrapped in "
                            "[...] or <...>, e.g. [fernando] (training existing vocabulary entries is not offered)")
            continue
        if pattern:
            try:
                re.compile(pattern)
            except re.error as error:
                problems.append(f"{token!r}: init pattern {pattern!r} is not a valid regular expression ({error})")
                continue
        if any(t.name.lower() == name.lower() for t in tokens):
            problems.append(f"{token!r} is listed twice (names compare without brackets and case)")
            continue
        tokens.append(NewToken(token, name, pattern or None))
    if problems:
        raise ValueError("new tokens: " + "; ".join(problems))
    return tokens


def prompt_with_embeddings(caption, tokens):
    """The caption with each new token written as the host's ` embedding:<name> `."""
    for token in tokens:
        caption = caption.replace(token.token, f" embedding:{token.name} ")
    return caption
