"""Non-finite features stop the run: a diverged checkpoint (NaN or inf weights) or an overflow in half
precision would otherwise score like a weak model (top-1 0.0, plausible-looking top-5)."""

from __future__ import annotations

import torch

from clipbench.errors import DataError
from clipbench.models.weights import model_label


def require_finite(values: torch.Tensor, what: str, loaded, sample_overflow: bool = False) -> torch.Tensor:
    """``values`` unchanged when every entry is finite; else one DataError naming ``what`` and its cause.

    ``sample_overflow``: with finite fp32 weights, only an extreme input can overflow (a point cloud with
    coordinates of 1e30); those values go back to the task, which skips and counts the sample."""
    if bool(torch.isfinite(values).all()):
        return values
    bad = [name for name, p in loaded.model.named_parameters() if not bool(torch.isfinite(p).all())]
    precision = getattr(loaded, "precision", "")
    if not bad and sample_overflow and precision == "fp32":
        return values
    model = model_label(getattr(loaded, "arch", "the model"), getattr(loaded, "pretrained", None),
                        getattr(loaded, "source", "open_clip"))
    raise DataError(f"non-finite values (NaN or inf) in the {what} of {model}: {_cause(bad, precision)}")


def _cause(bad: list[str], precision: str) -> str:
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"weights {', '.join(bad[:3])}{more} hold NaN or inf; the checkpoint has diverged or is damaged"
    hint = "" if precision == "fp32" else "; try model.precision=fp32"
    return f"the weights are finite, so the forward pass overflowed (model.precision={precision}{hint})"
