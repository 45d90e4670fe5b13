"""The shipped rule files: their examples, their coverage, and golden logs.

The golden logs in tests/fixtures/logs/ were written for these tests in the formats of
the real formats (window-cut first lines, CRLF, ANSI, CR-redrawn and glued tqdm frames);
each NAME.expected.json states what the rules must extract from NAME.log.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from contract import ERROR_MARKERS, WARNING_MARKERS
from hypothesis import given, settings
from hypothesis import strategies as st

from modelarts_exporter.cli import main
from modelarts_exporter.rules import Rule, RuleSet, ScanResult, load_rules
from modelarts_exporter.rules import engine as engine_module
from modelarts_exporter.rules.telemetry import GAUGES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
GOLDEN = sorted(FIXTURES.glob("*.log"))


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return load_rules()


@pytest.fixture(scope="module")
def ruleset(rules: list[Rule]) -> RuleSet:
    return RuleSet(rules)


def test_every_example_of_the_shipped_rules_passes(ruleset: RuleSet) -> None:
    assert ruleset.check_examples() == []


def test_rules_test_command_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert " examples of " in out


def test_the_marker_vocabulary_is_exactly_covered(rules: list[Rule]) -> None:
    errors = {r.marker for r in rules if r.kind == "error"}
    warnings = {r.marker for r in rules if r.kind == "warning"}
    assert errors == ERROR_MARKERS
    assert warnings == WARNING_MARKERS


def test_every_rule_shows_a_match_and_a_look_alike(rules: list[Rule]) -> None:
    for rule in rules:
        positive = [e for e in rule.examples if e.match]
        negative = [e for e in rule.examples if not e.match]
        assert positive, f"{rule.name}: no example it must match"
        assert negative, f"{rule.name}: no look-alike it must not match"
        if rule.kind in ("exit_code", "loss"):
            assert all(e.value is not None for e in positive), f"{rule.name}: value unchecked"


def test_the_shipped_files_are_organised_by_purpose(rules: list[Rule]) -> None:
    kinds_by_file: dict[str, set[str]] = {}
    for rule in rules:
        kinds_by_file.setdefault(Path(rule.source.split(": rules[")[0]).name, set()).add(rule.kind)
    assert kinds_by_file == {
        "errors.yml": {"error"},
        "exit_codes.yml": {"exit_code"},
        "loss.yml": {"loss", "context"},
        "warnings.yml": {"warning"},
        "vocabulary": {"loss", "error", "warning", "gauge"},
    }


def test_the_vocabulary_comes_after_every_specific_rule(rules: list[Rule]) -> None:
    made = [r.name for r in rules if r.source == "vocabulary"]
    assert made[:2] == ["kv_loss", "kv_nan_loss"]
    assert {r.metric for r in rules if r.source == "vocabulary" and r.kind == "gauge"} == {
        gauge.metric for gauge in GAUGES
    }
    assert [r.source for r in rules[-len(made) :]] == ["vocabulary"] * len(made)


# --- golden logs --------------------------------------------------------------------------


def _expected(log: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(log.with_name(log.stem + ".expected.json").read_text())
    return data


def _same(want: Any, got: float | None) -> bool:
    if want is None or got is None:
        return want is None and got is None
    want = float(want)
    return math.isnan(got) if math.isnan(want) else math.isclose(want, got, rel_tol=1e-9)


def _check(result: ScanResult, expected: dict[str, Any]) -> None:
    assert _same(expected["exit_code"], result.exit_code), result.exit_code
    want_loss = expected["loss"]
    if want_loss is None:
        assert result.loss is None
    else:
        assert result.loss is not None
        assert _same(want_loss["value"], result.loss.value), result.loss
        assert _same(want_loss["step"], result.loss.step), result.loss
        assert _same(want_loss["epoch"], result.loss.epoch), result.loss
    assert result.errors == expected["errors"]
    assert result.warnings == expected["warnings"]


def test_there_are_golden_logs() -> None:
    assert len(GOLDEN) >= 8
    for log in GOLDEN:
        assert log.with_name(log.stem + ".expected.json").is_file(), log


@pytest.mark.parametrize("log", GOLDEN, ids=[log.stem for log in GOLDEN])
def test_golden_log(ruleset: RuleSet, log: Path) -> None:
    _check(ruleset.scan(log.read_bytes()), _expected(log))


@pytest.mark.parametrize("log", GOLDEN, ids=[log.stem for log in GOLDEN])
def test_golden_log_in_tiny_chunks(
    ruleset: RuleSet, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefilter chunks are an optimisation: 200-byte chunks find the same."""
    monkeypatch.setattr(engine_module, "CHUNK_BYTES", 200)
    _check(ruleset.scan(log.read_bytes()), _expected(log))


def test_golden_logs_cover_every_normalisation_case() -> None:
    raw = b"".join(log.read_bytes() for log in GOLDEN)
    assert b"\r\n" in raw  # CRLF
    assert b"\x1b[" in raw  # ANSI
    assert b"\x1b]" in raw  # OSC
    assert b"s/it]{'loss'" in raw  # a dict glued to its tqdm frame
    assert b"s/it][rank0]" in raw  # an error glued to a tqdm frame
    assert b"\r" in raw.replace(b"\r\n", b"")  # CR-redrawn frames
    assert any(not log.read_bytes().endswith(b"\n") for log in GOLDEN)  # unfinished last line


def test_sidecar_exit_never_hides_the_training_exit_code(ruleset: RuleSet) -> None:
    block = (
        b"[Modelarts Service Log]Training end with return code: 1\n"
        b"[Modelarts Service Log]exit with 1\n"
        b"[Modelarts Service Log][sidecar] exiting at 2025-11-26-14:28:14\n"
        b"[Modelarts Service Log][sidecar] exit with 0\n"
    )
    result = ruleset.scan(block)
    assert result.exit_code == 1
    assert result.errors["training_failed"] == 2


def test_keras_epoch_survives_a_poll_boundary(ruleset: RuleSet) -> None:
    """The epoch header came in an earlier poll; its context is handed on."""
    first = ruleset.scan(b"Epoch 7/10\n 12/200 [>....] - ETA: 40s - loss: 1.1002\n")
    second = ruleset.scan(
        b"200/200 [==============================] - 31s 150ms/step - loss: 0.9044\n",
        context=first.context,
    )
    assert second.loss is not None
    assert (second.loss.value, second.loss.step, second.loss.epoch) == (0.9044, None, 7.0)
    alone = ruleset.scan(b"200/200 [==============================] - 31s 150ms/step - loss: 0.9\n")
    assert alone.loss is not None
    assert alone.loss.epoch is None


_MEGATRON_WORDS = ["loss", "lm loss", "z_loss", "lossy", "los", "l", "xloss", "iteration"]
_MEGATRON_WORDS += ["loss:", ":", " ", "lr", "loss::", "loss:x", "losses", "é", "\uff1a", "\t"]
_MEGATRON_WORDS += ["lo"]


@settings(max_examples=500, deadline=None)
@given(
    head=st.lists(st.sampled_from(_MEGATRON_WORDS), max_size=3),
    fields=st.lists(
        st.tuples(
            st.sampled_from([*_MEGATRON_WORDS, "global batch size", "learning rate"]),
            st.sampled_from([": ", ":", "=", " : "]),
            st.sampled_from(["1.0E+00", "3", "nan", "", "x"]),
        ),
        max_size=5,
    ),
    tail=st.lists(st.sampled_from(_MEGATRON_WORDS), max_size=4),
)
def test_megatron_loss_missing_is_its_old_pattern_with_unless(
    ruleset: RuleSet, head: list[str], fields: list[tuple[str, str, str]], tail: list[str]
) -> None:
    """The rule was `iteration ... | loss scale: ` with `unless: '\\bloss: '`; written as one
    pattern (so the prefilter skips Megatron's ordinary lines), it matches the same lines."""
    body = "".join(f" {key}{sep}{value} |" for key, sep, value in fields)
    line = f"{''.join(head)}iteration 12/ 100 |{body} loss scale: 1.0 |{''.join(tail)}"
    raw = line.encode()
    old = re.search(rb"iteration\s+\d+/\s*\d+ \|.*\| loss scale: ", raw) and not re.search(
        rb"\bloss: ", raw
    )
    found = ruleset.scan(raw + b"\n").warnings.get("nan_loss_suspected", 0)
    assert found == (1 if old else 0), line
