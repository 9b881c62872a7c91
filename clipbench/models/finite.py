"""Non-finite features stop the run: a diverged checkpoint (NaN or inf weights) or an overflow in half
precision would otherwise score like a weak model (top-1 0.0, plausible-looking top-5)."""

from __future__ import annotations

import torch

from clipbench.errors import DataError


def require_finite(values: torch.Tensor, what: str, loaded) -> torch.Tensor:
    """``values`` unchanged when every entry is finite; else one DataError naming ``what`` and its likely cause."""
    if bool(torch.isfinite(values).all()):
        return values
    weights = getattr(loaded, "pretrained", None) or "random init"
    raise DataError(f"non-finite values (NaN or inf) in the {what} of {getattr(loaded, 'arch', 'the model')} "
                    f"({weights}): {_cause(loaded)}")


def _cause(loaded) -> str:
    """The weights holding NaN or inf (looked up only once something is wrong), else an overflow."""
    bad = [name for name, p in loaded.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"weights {', '.join(bad[:3])}{more} hold NaN or inf; the checkpoint has diverged or is damaged"
    precision = getattr(loaded, "precision", "")
    return f"the weights are finite, so the forward pass overflowed (model.precision={precision}; try fp32)"
