"""Continuing a partial answer, as a deterministic model would.

A gateway that loses a stream mid-answer asks another provider to continue it: either with the
partial answer as the final assistant turn (Anthropic calls this prefill) or with that turn
followed by one user turn asking to go on. A simulator whose reply starts with that partial
answer answers with the rest of its reply. Pure; see docs/simulator.md, "Continuation".
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["continuation", "remainder"]


def remainder(reply: str, prefix: str) -> str | None:
    """``reply`` after ``prefix`` with its trailing whitespace stripped, or None unless the
    stripped prefix is a non-empty proper prefix of ``reply``.

    The rest may start with whitespace the prefix lost: ``remainder("Hello there.", "Hello ")``
    is ``" there."``.
    """
    stripped = prefix.rstrip()
    if stripped and len(stripped) < len(reply) and reply.startswith(stripped):
        return reply[len(stripped) :]
    return None


def continuation(
    reply: str, turns: Sequence[tuple[str, str]], *, assistant: str, user: str = "user"
) -> str | None:
    """The rest of ``reply`` if ``turns`` (``(role, text)``, oldest first) ask to continue it.

    They do when they end with an ``assistant`` turn whose text is a prefix of ``reply`` (see
    :func:`remainder`), or with such a turn followed by exactly one ``user`` turn, whatever
    it says.
    """
    if turns and turns[-1][0] == assistant:
        partial = turns[-1][1]
    elif len(turns) >= 2 and turns[-1][0] == user and turns[-2][0] == assistant:
        partial = turns[-2][1]
    else:
        return None
    return remainder(reply, partial)
