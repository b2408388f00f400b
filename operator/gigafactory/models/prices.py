"""Model prices and the estimated cost of tokens: pure arithmetic, shared by the operator (which records
each attempt's cost when it folds the report) and the runner's model gateway (which enforces
`spec.agent.limits.cost`), so both reach the same figure from the same prices.

Prices are per million tokens, input and output, in whatever currency the platform writes them in (the
providers list US dollars). They are estimates: input counts cache reads and writes at the input price
(an upper bound for cached prompts), and a provider's bill is the only exact figure.
"""

from collections.abc import Iterable, Mapping
from typing import Any

PER = 1_000_000
DIGITS = 6  # costs are recorded rounded to a millionth of the currency unit


def find(prices: Iterable[Mapping[str, Any]], model: str) -> Mapping[str, Any] | None:
    """The price of `model`: an entry naming it exactly, else the longest `prefix*` entry that matches
    it (APIs answer with dated names such as claude-sonnet-4-20250514), else a `*` entry, else None."""
    best: Mapping[str, Any] | None = None
    best_length = -1
    for entry in prices:
        name = str(entry.get("model") or "")
        if name == model:
            return entry
        if name.endswith("*") and model.startswith(name[:-1]) and len(name) > best_length:
            best, best_length = entry, len(name)
    return best


def cost(*, input_tokens: int, output_tokens: int, price: Mapping[str, Any]) -> float:
    """The estimated cost of these tokens at this price (per million input and output tokens)."""
    return (max(0, input_tokens) * float(price.get("inputPerMillion") or 0)
            + max(0, output_tokens) * float(price.get("outputPerMillion") or 0)) / PER


def estimate(tokens: Iterable[Mapping[str, Any]], prices: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], float | None]:
    """Cost per model of a `tokens` list (status.attempts[].tokens entries) and their total; models with
    no price are left out of both, and the total is None when no model had a price."""
    prices = list(prices)
    per_model: dict[str, float] = {}
    for used in tokens:
        model = str(used.get("model") or "")
        price = find(prices, model)
        if price is None:
            continue
        per_model[model] = round(per_model.get(model, 0.0) + cost(
            input_tokens=token_count(used.get("inputTokens")), output_tokens=token_count(used.get("outputTokens")), price=price), DIGITS)
    return per_model, (round(sum(per_model.values()), DIGITS) if per_model else None)


def token_count(value: Any) -> int:
    """A token count read from untrusted JSON (a report, an API's usage): a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
