"""The key/value pairs of one training-log line.

Most frameworks print their numbers as a key, a separator and a value, whatever else
differs between them::

    loss: 0.3   loss=0.3   'loss': 0.3   "loss": 0.3   Loss :: 0.3   loss is 0.3
    | lm loss: 3.4E+00 |   Loss 6.98e+00 (7.08e+00)   Loss: tensor([0.3], device='cuda:0')
    Iter [2700/120000]   step 80/190   Epoch [1][240/735]   eta: 3:02:11   time: 152.34ms

and the same with a full-width colon.

:func:`find_pairs` returns them in line order, each with its key as printed and split into
lower-case tokens (``"lm loss"`` -> ``("lm", "loss")``, ``"CTCLoss"`` -> ``("ctc",
"loss")``, ``"global_step/max_steps"`` -> ``("global", "step", "max", "steps")``), its
value, the total of an ``N/T`` value, and a unit glued to the value (``ms``, ``%``,
``s/it``) or given in parentheses after the key (``elapsed time per iteration (ms)``).
A tqdm frame (``20/2839 [00:10<1:02:00, 1.50it/s, loss=2.5]``) gives a pair with the
key ``frame``: its position ``N``, total ``T``, the time left and the rate. What the keys
mean is the vocabulary's business (vocabulary.py); nothing here knows about losses.

The patterns run with Python's ``re`` on lines the RE2 prefilter picked; they are linear
in practice: keys start only after a non-word character, and every repetition that can
fail is bounded or separated by a literal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_WORD = r"[^\W\d](?:\w|[.\-/@](?=\w))*"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?i:nan|inf(?:inity)?)(?![a-zA-Z])"
_UNIT = (
    r"%|[A-Za-z]{1,8}(?:/[A-Za-z]{1,8}){0,2}|\s?[A-Za-z]{1,8}/[A-Za-z]{1,8}"
    r"|\s(?:ms|s|sec|secs|seconds|min|mins|minutes|h|hours?|days?)\b"
)

_TIME_WORD = r"(?:days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])"
_AMOUNT = rf"\d+(?:\.\d+)?\s?{_TIME_WORD}(?![a-zA-Z])"
_WORD_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_AMOUNT_PARTS = re.compile(r"(\d+(?:\.\d+)?)\s?([a-z]+)")

_PAIR = re.compile(
    r"(?<![\w'\"])['\"]?"
    rf"(?P<key>{_WORD}(?: (?!is\b){_WORD}){{0,4}})['\"]?"
    r"(?:\s?\((?P<paren>[A-Za-z%/]{1,12})\))?"
    r"(?P<sep>\s*(?:::|=>>?|[:=\uff1a])\s*|\s+is\s+|\s+|(?<=['\"]),\s*)"
    r"(?:"
    # [N] or [N/T], then perhaps [n/t]: mmcv's `Epoch [1][240/735]`, `Iter [2700/120000]`
    r"\[\s*(?P<bn>\d+)(?:\s*/\s*(?P<bt>\d+))?\s*\]"
    # a duration: `3:02:11`, `1 day, 2:03:04`, `0:00:07.5`
    r"|(?P<dur>(?P<days>\d+)\s*days?,\s*\d{1,2}:\d\d:\d\d|\d{1,3}:\d\d(?::\d\d)?(?:\.\d+)?)"
    # a duration in words, two units or more: `23 minutes and 16.79 seconds`, `1h 5m 3s`
    rf"|(?P<words>{_AMOUNT}(?:,?\s(?:and\s)?{_AMOUNT})+)(?![\w.])"
    # a number, perhaps inside tensor([...]), brackets or quotes, perhaps N/T, perhaps a unit
    # (spaces only after a bracket: a run of spaces must not be split two ways)
    rf"|(?:tensor\(\s*)?(?:[\[(]\s*)?['\"]?(?P<num>{_NUM})"
    r"(?:\s*/\s*(?P<total>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))?"
    # not the start of a date, a clock or a version: `2026-11-30`, `10:30:01`, `3.4.5`
    r"(?!\d|\.\d|[-:/]\d)"
    rf"(?P<unit>{_UNIT})?"
    r")"
    # a position right after an integer value: `Epoch [1][240/735]`, `Epoch:[0/19](1600/24681)`,
    # `Train epoch: 18 [600/1000]`, fairseq's `epoch 011  1000 / 8223`
    r"(?:\s*[\[(]\s*(?P<sn>\d+)\s*/\s*(?P<st>\d+)\s*[\])]|\s+(?P<qn>\d+) ?/ ?(?P<qt>\d+)(?![\d.]))?"
)
_LEADING = re.compile(r"^\W{0,3}?(?P<n>\d+)(?:\s*/\s*(?P<t>\d+))?(?P<end>\s*(?:\||:(?!\d)|,|\s\())")
"""A line that starts with its position: ``190/446 (epoch 0), ...``, ``670 | loss 4.25``."""

_FRAME = re.compile(
    r"(?<![\w.])(?P<n>\d+)(?:/(?P<t>\d+)|(?=[a-z]* ?\[\d+(?::\d+)*,))[a-z]* ?"
    r"(?:\[(?P<elapsed>\d+(?::\d+)*)(?:<(?P<left>\d+(?::\d+)*|\?))?"
    r",\s*(?P<rate>\d+(?:\.\d+)?|\?)\s*(?P<unit>s/it|it/s|[A-Za-z]+/s|s/[A-Za-z]+)|(?P<bar>━+))"
)
"""A progress frame: tqdm's ``n/total [elapsed<left, rate unit`` (``69it [01:18, 2.02it/s``
when tqdm knows no total), Keras 3's ``n/total ━━━``."""

_RATE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(us|µs|ms|s)/(step|iter|batch)\b")
"""A time per step without a key: Keras' ``454ms/step``."""
_PER_SECOND = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)([kKM]?)\s?((?:tokens?|toks?|samples?|imgs?|images?|examples?"
    r"|seqs?|sequences?|words?)/(?:s|sec))\b"
)
"""A throughput without a key: llm.c's ``53120 tok/s``."""
_BAR_GLYPHS = "█▏▎▍▌▋▊▉━─╸╺ |:"
_BAR = re.compile(r"\d{1,3}%\s*\|[^|]*\|\s*$")  # no leading \s*: quadratic in a run of spaces
"""A tqdm bar before its frame: what is left before it describes the bar."""
_BAR_LOOK = 1024
"""How far before a frame its bar and description are looked for, in characters."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z]{2})")
_SPLIT = re.compile(r"[\s_.\-@]+|(/)")


@dataclass(frozen=True, slots=True)
class Pair:
    """One ``key SEP value`` of a line.

    ``start`` is the offset of the key in the line (pairs are in line order). ``value``
    is a float (NaN and +-Inf as printed); ``total`` the ``T`` of ``N/T``; ``unit`` the
    unit printed after the value or in parentheses after the key (``""`` if none);
    ``seconds`` is set for a duration value (``3:02:11``).
    """

    key: str
    tokens: tuple[str, ...]
    value: float
    start: int
    total: float | None = None
    unit: str = ""
    seconds: float | None = None
    mode: str = ""
    """A ``(train)``/``(val)`` written after the key, as mmengine does: ``Epoch(val)``."""
    context: str = ""
    """A progress frame: what the line says of its bar (``Epoch 3:``, ``Map:``, ``""``)."""
    at: int = -1
    """Where the value's number starts in the line (-1 for a frame)."""


_MODES = frozenset({"train", "val", "valid", "eval", "test"})


_TOKENS: dict[str, tuple[str, ...]] = {}
_CACHED_KEY_CHARS = 128


def key_tokens(key: str) -> tuple[str, ...]:
    """Lower-case tokens of a key: split at spaces, ``_ . - @`` and camelCase; a ``/``
    stays a token of its own (``actor/pg_loss`` -> ``actor / pg loss``: a namespace)."""
    tokens = _TOKENS.get(key)
    if tokens is None:
        tokens = tuple(t for t in _SPLIT.split(_CAMEL.sub(" ", key).lower()) if t)
        while tokens and tokens[0] == "/":
            tokens = tokens[1:]
        if len(key) <= _CACHED_KEY_CHARS:  # a hostile 64 KiB key is not kept
            if len(_TOKENS) > 16384:
                _TOKENS.clear()
            _TOKENS[key] = tokens
    return tokens


def _word_seconds(text: str) -> float:
    """``23 minutes and 16.79 seconds``, ``1h 5m 3s`` in seconds."""
    total = 0.0
    for amount, unit in _AMOUNT_PARTS.findall(text):
        total += float(amount) * _WORD_SECONDS[unit[0]]
    return total


def _clock_seconds(text: str) -> float:
    """``[D day(s), ]H:MM:SS`` or ``MM:SS`` (as tqdm prints it) in seconds."""
    days = 0.0
    if "day" in text:
        head, _, text = text.partition(",")
        days = float(head.split()[0])
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return days * 86400 + seconds


def _number(text: str) -> float:
    value = float(text)
    return math.nan if math.isnan(value) else value


_G = dict(_PAIR.groupindex)


def find_pairs(line: str) -> list[Pair]:
    """Every pair of ``line`` (one line, no line end), tqdm frames included, in order."""
    pairs: list[Pair] = []
    g = _G
    for match in _PAIR.finditer(line):
        groups = match.groups()
        key = groups[g["key"] - 1]
        paren = groups[g["paren"] - 1] or ""
        mode = paren.lower() if paren and paren.lower() in _MODES else ""
        unit = "" if mode else paren
        start = match.start(g["key"])
        number = groups[g["num"] - 1]
        position = groups[g["sn"] - 1] or groups[g["qn"] - 1]
        if position is not None and (number is None or number.isdigit()):
            # `Epoch [1][240/735]`: the second number is the position inside the epoch
            total_text = groups[g["st"] - 1] or groups[g["qt"] - 1]
            at = match.start(g["sn"]) if groups[g["sn"] - 1] is not None else match.start(g["qn"])
            pairs.append(Pair("[n/t]", ("frame",), float(position), at, float(total_text)))
        tokens = key_tokens(key)
        if not tokens:  # a key of separators only (`_: 1`, `__ = 3`): no key
            continue
        if groups[g["bn"] - 1] is not None:
            bt = groups[g["bt"] - 1]
            total = float(bt) if bt is not None else None
            value = float(groups[g["bn"] - 1])
            pairs.append(Pair(key, tokens, value, start, total, unit, mode=mode))
        elif groups[g["dur"] - 1] is not None:
            seconds = _clock_seconds(groups[g["dur"] - 1])
            pairs.append(Pair(key, tokens, seconds, start, None, "s", seconds, mode))
        elif groups[g["words"] - 1] is not None:
            seconds = _word_seconds(groups[g["words"] - 1])
            pairs.append(Pair(key, tokens, seconds, start, None, "s", seconds, mode))
        else:
            total_text = groups[g["total"] - 1]
            total = float(total_text) if total_text is not None else None
            value_unit = (groups[g["unit"] - 1] or "").strip()
            at = match.start(g["num"])
            value = _number(number)
            pairs.append(
                Pair(key, tokens, value, start, total, value_unit or unit, mode=mode, at=at)
            )
    leading = _LEADING.match(line)
    if leading is not None:
        total = float(leading["t"]) if leading["t"] is not None else None
        pairs.append(Pair("n/t", ("frame",), float(leading["n"]), leading.start("n"), total))
    frame_spans: list[tuple[int, int]] = []
    if "/" in line and ("[" in line or "━" in line):
        for frame in _FRAME.finditer(line):
            frame_spans.append(frame.span())
            left = frame["left"] or "?"
            left_seconds = _clock_seconds(left) if "?" not in left else None
            start = frame.start()
            total = float(frame["t"]) if frame["t"] is not None else None
            # what describes the bar is just before it (a bounded look: one line can
            # hold thousands of frames)
            context = _BAR.sub("", line[max(0, start - _BAR_LOOK) : start])[-60:]
            context = context.strip(_BAR_GLYPHS)
            pairs.append(
                Pair(
                    "n/t [",
                    ("frame",),
                    float(frame["n"]),
                    start,
                    total,
                    "",
                    left_seconds,
                    context=context,
                )
            )
            if frame["rate"] not in (None, "?"):
                rate = float(frame["rate"])
                pairs.append(
                    Pair(
                        "rate",
                        ("frame", "rate"),
                        rate,
                        start + 1,
                        unit=frame["unit"],
                        context=context,
                    )
                )
    if "s/" in line:
        for rate_match in _RATE.finditer(line):
            amount, unit, per = rate_match.groups()
            pairs.append(
                Pair(
                    "rate",
                    ("frame", "rate"),
                    float(amount),
                    rate_match.start(),
                    unit=f"{unit}/{per}",
                )
            )
    if "/s" in line:
        for rate_match in _PER_SECOND.finditer(line):
            at = rate_match.start()
            if any(begin <= at < end for begin, end in frame_spans):
                continue  # a progress bar's rate: the bar decides what it counts
            scale = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6}[rate_match.group(2)]
            unit = rate_match.group(3)
            amount = float(rate_match.group(1)) * scale
            pairs.append(Pair(unit, key_tokens(unit), amount, at, unit=unit))
    pairs.sort(key=lambda pair: pair.start)
    return pairs
