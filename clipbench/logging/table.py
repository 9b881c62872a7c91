"""A readable results table for the terminal."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(v) -> str:
        if isinstance(v, float) and v != v:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", line]
    out += ["| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    out.append(line)
    return "\n".join(out)


def with_intervals(rows: Sequence[dict]) -> list[dict]:
    """Rows whose ``value`` reads ``value [ci_low, ci_high]`` where the interval is known."""
    out = []
    for row in rows:
        low, high = row.get("ci_low"), row.get("ci_high")
        if _known(low) and _known(high):
            row = {**row, "value": f"{float(row['value']):.4f} [{float(low):.4f}, {float(high):.4f}]"}
        out.append(row)
    return out


def _known(v) -> bool:
    try:
        return v is not None and v == v and float(v) == float(v)
    except (TypeError, ValueError):
        return False


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


SUMMARY_COLUMNS = ["task", "dataset", "split", "model_arch", "method", "metric", "value", "n", "items_per_s", "peak_mem_mb"]
