"""Compatibility patches for NNI 3.0 on current PyTorch (work in progress, see issue 2)."""


def apply() -> list[str]:
    """Apply every needed patch; return the names of the patches applied."""
    return []
