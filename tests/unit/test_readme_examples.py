"""The README's rule and vocabulary files pass `rules test`, with the shipped rules and on
their own (`--no-default-rules`): a user copies them as they are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelarts_exporter.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _readme_rule_files() -> list[tuple[int, str]]:
    """(line number, text) of each ```yaml block of the README that is a whole rule file
    (starts with `rules:` or `vocabulary:`; the format's outline with '...' is not)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    blocks = []
    for found in re.finditer(r"^```yaml\n(.*?)^```", readme, re.S | re.M):
        text = found.group(1)
        if text.startswith(("rules:", "vocabulary:")) and "'...'" not in text:
            blocks.append((readme.count("\n", 0, found.start()) + 1, text))
    return blocks


BLOCKS = _readme_rule_files()


def test_the_readme_has_its_rule_and_vocabulary_examples() -> None:
    firsts = [text.split("\n", 1)[0] for _, text in BLOCKS]
    assert "vocabulary:" in firsts
    assert firsts.count("rules:") >= 2
    vocabulary = next(text for _, text in BLOCKS if text.startswith("vocabulary:"))
    assert "dev_objective=0.82" in vocabulary


@pytest.mark.parametrize("defaults", [True, False], ids=["with-shipped", "alone"])
@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"README:{n}" for n, _ in BLOCKS])
def test_a_readme_rule_file_passes_its_examples(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: int, text: str, defaults: bool
) -> None:
    path = tmp_path / f"readme_{line}.yml"
    path.write_text(text, "utf-8")
    flags = [] if defaults else ["--no-default-rules"]
    code = main(["rules", "test", *flags, str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert captured.out.startswith("ok: ")


def test_the_readme_shows_what_rules_check_and_test_print_for_my_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample session after "Adding your own metric" prints today's figures (the
    speed note varies by machine and is not compared)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    [my_rules] = [text for _, text in BLOCKS if "rank_tokens_per_second" in text]
    (tmp_path / "my_rules.yml").write_text(my_rules, "utf-8")
    monkeypatch.chdir(tmp_path)
    for command in ("check", "test"):
        prompt = f"$ modelarts-exporter rules {command} my_rules.yml\n"
        assert prompt in readme
        shown = readme.split(prompt, 1)[1].split("$ ", 1)[0].splitlines()
        assert main(["rules", command, "my_rules.yml"]) == 0
        out = capsys.readouterr().out
        assert [line for line in shown if line.startswith("ok: ")] == out.splitlines()
