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
_UNIT = r"%|[A-Za-z]{1,8}(?:/[A-Za-z]{1,8})?|\s?[A-Za-z]{1,8}/[A-Za-z]{1,8}"

_PAIR = re.compile(
    r"(?<![\w'\"])['\"]?"
    rf"(?P<key>{_WORD}(?: (?!is\b){_WORD}){{0,3}})['\"]?"
    r"(?:\s?\((?P<paren>[A-Za-z%/]{1,12})\))?"
    r"(?P<sep>\s*(?:::|=>>?|[:=\uff1a])\s*|\s+is\s+|\s+)"
    r"(?:"
    # [N] or [N/T], then perhaps [n/t]: mmcv's `Epoch [1][240/735]`, `Iter [2700/120000]`
    r"\[\s*(?P<bn>\d+)(?:\s*/\s*(?P<bt>\d+))?\s*\]"
    # a duration: `3:02:11`, `1 day, 2:03:04`, `0:00:07.5`
    r"|(?P<dur>(?P<days>\d+)\s*days?,\s*\d{1,2}:\d\d:\d\d|\d{1,3}:\d\d(?::\d\d)?(?:\.\d+)?)"
    # a number, perhaps inside tensor([...]), brackets or quotes, perhaps N/T, perhaps a unit
    rf"|(?:tensor\(\s*)?[\[(]?\s*['\"]?(?P<num>{_NUM})"
    r"(?:\s*/\s*(?P<total>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))?"
    rf"(?P<unit>{_UNIT})?"
    r")"
    # a position right after an integer value: `Epoch [1][240/735]`, `Epoch:[0/19](1600/24681)`,
    # `Train epoch: 18 [600/1000]`, fairseq's `epoch 011  1000 / 8223`
    r"(?:\s*[\[(]\s*(?P<sn>\d+)\s*/\s*(?P<st>\d+)\s*[\])]|\s+(?P<qn>\d+) ?/ ?(?P<qt>\d+)(?![\d.]))?"
)
_LEADING = re.compile(r"^\W{0,3}?(?P<n>\d+)(?:\s*/\s*(?P<t>\d+))?(?P<end>\s*(?:\||:(?!\d)|,|\s\())")
"""A line that starts with its position: ``190/446 (epoch 0), ...``, ``670 | loss 4.25``."""

_FRAME = re.compile(
    r"(?<![\w.])(?P<n>\d+)/(?P<t>\d+) ?(?:\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+)"
    r",\s*(?P<rate>[\d.?]+|\?)\s*(?P<unit>s/it|it/s|[A-Za-z]+/s|s/[A-Za-z]+)|(?P<bar>━+))"
)
"""A progress frame: tqdm's ``n/total [elapsed<left, rate unit``, Keras 3's ``n/total ━━━``."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[\s_.\-/@]+")


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


_MODES = frozenset({"train", "val", "valid", "eval", "test"})


def key_tokens(key: str) -> tuple[str, ...]:
    """Lower-case tokens of a key: split at spaces, ``_ . - / @`` and camelCase."""
    return tuple(t for t in _SPLIT.split(_CAMEL.sub(" ", key).lower()) if t)


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


def find_pairs(line: str) -> list[Pair]:
    """Every pair of ``line`` (one line, no line end), tqdm frames included, in order."""
    pairs: list[Pair] = []
    for match in _PAIR.finditer(line):
        key = match["key"]
        tokens = key_tokens(key)
        paren = match["paren"] or ""
        mode = paren.lower() if paren.lower() in _MODES else ""
        unit = "" if mode else paren
        start = match.start("key")
        position = match["sn"] or match["qn"]
        if position is not None and (match["num"] is None or match["num"].isdigit()):
            # `Epoch [1][240/735]`: the second number is the position inside the epoch
            total_text = match["st"] or match["qt"]
            at = match.start("sn") if match["sn"] is not None else match.start("qn")
            pairs.append(Pair("[n/t]", ("frame",), float(position), at, float(total_text)))
        if match["bn"] is not None:
            total = float(match["bt"]) if match["bt"] is not None else None
            pairs.append(Pair(key, tokens, float(match["bn"]), start, total, unit, mode=mode))
        elif match["dur"] is not None:
            seconds = _clock_seconds(match["dur"])
            pairs.append(Pair(key, tokens, seconds, start, None, "s", seconds, mode))
        else:
            total_text = match["total"]
            total = float(total_text) if total_text is not None else None
            value_unit = (match["unit"] or "").strip()
            pairs.append(
                Pair(
                    key,
                    tokens,
                    _number(match["num"]),
                    start,
                    total,
                    value_unit or unit,
                    mode=mode,
                )
            )
    leading = _LEADING.match(line)
    if leading is not None:
        total = float(leading["t"]) if leading["t"] is not None else None
        pairs.append(Pair("n/t", ("frame",), float(leading["n"]), leading.start("n"), total))
    if "/" in line and ("[" in line or "━" in line):
        for frame in _FRAME.finditer(line):
            left = frame["left"] or "?"
            left_seconds = _clock_seconds(left) if "?" not in left else None
            start = frame.start()
            total = float(frame["t"])
            pairs.append(
                Pair("n/t [", ("frame",), float(frame["n"]), start, total, "", left_seconds)
            )
            if frame["rate"] not in (None, "?"):
                rate = float(frame["rate"])
                pairs.append(Pair("rate", ("frame", "rate"), rate, start + 1, unit=frame["unit"]))
    pairs.sort(key=lambda pair: pair.start)
    return pairs
