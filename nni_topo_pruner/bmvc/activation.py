"""The many-to-one activation of the BMVC paper (seed 000, section 3.4.1, Eq. (1)).

The paper builds it from "a portion of a single half cycle of a sine function" cut off at
``x = c = 3*pi/4``, "superimposed on a ReLU function", and writes

    y = k sin(c) + sin(x - c),     k = floor(x / c)                            (1)

Read literally, (1) starts every piece at ``sin(-c) = -0.71`` instead of 0, jumps by
``sin(c)`` at every multiple of ``c`` and jumps to -0.71 at ``x = 0``: it does not contain
"a portion of a half cycle" starting at the ReLU's kink. The reading implemented by
default (``form="continuous"``) shifts the sine by the start of the current piece:

    y = k sin(c) + sin(x - k c),   k = floor(x / c),   for x >= 0;   y = 0 for x < 0.

On each piece ``[k c, (k+1) c)`` this is the sine's first ``c`` radians (rising from 0 to 1
at ``pi/2``, falling back to ``sin(c) = 0.71`` at ``c``) lifted by ``k sin(c)``, so the pieces
join continuously and the whole curve follows a ReLU of slope ``sin(c)/c ~ 0.30`` with a
sine ripple on top. Every value in ``((k+1) sin c, k sin c + 1)`` has three pre-images
(many-to-one regions); the derivative jumps from ``cos(c) = -0.71`` to ``1`` at every
``k c`` (the "discontinuities" the paper means, as it calls ReLU discontinuous). The literal
formula is available as ``form="literal"`` for comparison.

Gradients are those of the composition ``g(relu(x))`` (``floor`` has zero gradient), i.e.
``cos(x - k c)`` for ``x > 0`` and 0 for ``x <= 0``; the code is device-agnostic (CPU, CUDA).

Example:
    >>> import torch
    >>> act = ManyToOne()
    >>> act(torch.tensor([-1.0, 0.0, 3 * math.pi / 4])).tolist()   # doctest: +ELLIPSIS
    [0.0, 0.0, 0.707...]
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: The paper's cut-off, ``3*pi/4``.
DEFAULT_CUTOFF = 3.0 * math.pi / 4.0
FORMS = ("continuous", "literal")


def many_to_one(x: torch.Tensor, cutoff: float = DEFAULT_CUTOFF, form: str = "continuous") -> torch.Tensor:
    """Functional form of :class:`ManyToOne` (Eq. (1) of the BMVC paper, see module doc).

    Example:
        >>> round(many_to_one(torch.tensor(math.pi / 2)).item(), 6)   # top of the first hump
        1.0
    """
    if cutoff <= 0.0:
        raise ValueError("cutoff must be > 0, got " + str(cutoff))
    xp = torch.relu(x)
    k = torch.floor(xp / cutoff)
    step = math.sin(cutoff)
    if form == "continuous":
        return k * step + torch.sin(xp - k * cutoff)
    if form == "literal":
        # Eq. (1) as printed, on the ReLU base (0 for x <= 0)
        return torch.where(x > 0, k * step + torch.sin(xp - cutoff), torch.zeros_like(x))
    # plain concatenation: TorchScript cannot compile f-string conversions
    raise ValueError("form must be 'continuous' or 'literal', got '" + form + "'")


class ManyToOne(nn.Module):
    """The BMVC paper's many-to-one activation as a module (see the module doc).

    Args:
        cutoff: where the sine portion is cut (the paper: ``3*pi/4``).
        form: ``"continuous"`` (default, the reading documented above) or ``"literal"``.

    Example:
        >>> mlp = nn.Sequential(nn.Linear(3, 25), ManyToOne(), nn.Linear(25, 2))
        >>> mlp(torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """

    __constants__ = ["cutoff", "form"]

    def __init__(self, cutoff: float = DEFAULT_CUTOFF, form: str = "continuous") -> None:
        super().__init__()
        if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a finite number > 0, got {cutoff!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.cutoff = float(cutoff)
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return many_to_one(x, self.cutoff, self.form)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff:.6g}, form={self.form!r}"
