"""Rules: what to extract from log lines (loading, validation) and the matcher."""

from .engine import Loss, RuleSet, ScanResult, label_value
from .loader import default_rules_dir, load_rules
from .model import NUM, Rule, RuleError

__all__ = [
    "NUM",
    "Loss",
    "Rule",
    "RuleError",
    "RuleSet",
    "ScanResult",
    "default_rules_dir",
    "label_value",
    "load_rules",
]
