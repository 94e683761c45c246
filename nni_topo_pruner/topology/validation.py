"""The package's parameter checks, in one place, with one message form.

Every check takes the value and the *parameter's name* and either returns the value in its
canonical form or raises :class:`InvalidParameterError` with the message
``"<name> must be <constraint>, got <value>"`` (plus, where it helps, what to do). In the
spirit of scikit-learn's declared parameter constraints, the error is both a ``ValueError``
and a ``TypeError``, so callers that catch either keep working whether the value had the
wrong type or the wrong range.

Numpy only; the rest of the package (topology/, the metric calculator, the GA, the engine,
the Betti code) validates through these functions instead of writing its own.

Example:
    >>> check_int(3, "num_images", minimum=3)
    3
    >>> check_choice("Median", "scale_reference", ("diameter", "median", "absolute"))
    'median'
    >>> check_number(-1.0, "scale", minimum=0)
    Traceback (most recent call last):
    ...
    nni_topo_pruner.topology.validation.InvalidParameterError: scale must be a finite number >= 0, got -1.0
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Rows per block when scanning a large cloud for non-finite values (bounds the temporary).
_BLOCK = 256


class InvalidParameterError(ValueError, TypeError):
    """A parameter or input failed its check (a ``ValueError`` and a ``TypeError``)."""


def _fail(name: str, constraint: str, value: object, hint: str = "") -> InvalidParameterError:
    return InvalidParameterError(f"{name} must be {constraint}, got {value!r}" + (f"; {hint}" if hint else ""))


def _is_real(value: object) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_int(value: object, name: str, minimum: int | None = None, *, allow_none: bool = False) -> int | None:
    """``value`` as an int (``bool`` is not an int here), at least ``minimum`` when given.

    Example:
        >>> check_int(None, "max_feature_dim", 1, allow_none=True) is None
        True
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
            minimum is not None and value < minimum):
        constraint = "an int" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if allow_none else "")
        raise _fail(name, constraint, value)
    return int(value)


def check_number(value: object, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a finite float in ``[minimum, maximum]`` (either bound optional).

    Example:
        >>> check_number(2, "wasserstein_order", minimum=1)
        2.0
    """
    if not _is_real(value) or not math.isfinite(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        bounds = (f" >= {minimum:g}" if minimum is not None else "") + (
            f"{' and' if minimum is not None else ''} <= {maximum:g}" if maximum is not None else "")
        raise _fail(name, "a finite number" + bounds, value)
    return float(value)


def check_probability(value: object, name: str) -> float:
    """``value`` as a float in ``[0, 1]``."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise _fail(name, "a probability in [0, 1]", value)
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """``value`` as a bool (``True``/``False``, numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, "True or False", value)
    return bool(value)


def check_choice(value: object, name: str, options: Sequence[str]) -> str:
    """``value`` (a string, case-insensitive) as one of ``options``, in lower case.

    Example:
        >>> check_choice("pca", "feature_reduction", ("avgpool", "none"))
        Traceback (most recent call last):
        ...
        nni_topo_pruner.topology.validation.InvalidParameterError: feature_reduction must be one of ('avgpool', 'none'), got 'pca'
    """
    if not isinstance(value, str) or value.lower() not in options:
        raise _fail(name, f"one of {tuple(options)}", value)
    return value.lower()


def check_homology_dims(homology_dims: Sequence[int] | int, name: str = "homology_dims", *,
                        sort: bool = True, allow_int: bool = True) -> tuple[int, ...]:
    """Homology dimensions: a non-empty sequence of distinct non-negative ints (or one int,
    unless ``allow_int=False``).

    ``sort=False`` keeps the caller's order (where it orders an output, e.g. Betti numbers
    per dimension).

    Example:
        >>> check_homology_dims(1), check_homology_dims([1, 0]), check_homology_dims([1, 0], sort=False)
        ((1,), (0, 1), (1, 0))
    """
    constraint = "a non-empty sequence of distinct non-negative ints such as (0,) or (0, 1)"
    hint = "use (0,) (the default) for connected components"
    if allow_int and isinstance(homology_dims, (int, np.integer)) and not isinstance(homology_dims, (bool, np.bool_)):
        homology_dims = (homology_dims,)
    if homology_dims is None or isinstance(homology_dims, (str, bytes)):
        raise _fail(name, constraint, homology_dims, hint)
    try:
        dims = tuple(homology_dims)
    except TypeError:
        raise _fail(name, constraint, homology_dims, hint) from None
    if not dims or len(set(dims)) != len(dims) or any(
            isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise _fail(name, constraint, homology_dims, hint)
    dims = tuple(int(d) for d in dims)
    return tuple(sorted(dims)) if sort else dims


def check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """``points`` as a real (n, d) array with n, d >= 1 and finite values (no copy when it
    already is one); a non-finite value is reported with its rows.

    Example:
        >>> check_points([[0.0, 1.0]]).shape
        (1, 2)
    """
    arr = np.asarray(points)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.issubdtype(
            arr.dtype, np.complexfloating):
        raise InvalidParameterError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidParameterError(
            f"{name} must be a 2-D array (n points x d coordinates), got shape {arr.shape}; "
            "reshape a weight tensor to (out_features, -1) first")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidParameterError(f"{name} must be a non-empty (n_points, dim) array (at least one point with at "
                                    f"least one coordinate), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        bad_rows = np.concatenate([start + np.flatnonzero(~np.isfinite(arr[start:start + _BLOCK]).all(axis=1))
                                   for start in range(0, len(arr), _BLOCK)])
        if len(bad_rows):
            bad = arr[bad_rows]
            kinds = [k for k, f in (("NaN", np.isnan), ("Inf", np.isinf)) if f(bad).any()]
            shown = ", ".join(str(i) for i in bad_rows[:10]) + (" ..." if len(bad_rows) > 10 else "")
            raise InvalidParameterError(
                f"{name} must hold finite coordinates, got {' and '.join(kinds)} values in {len(bad_rows)} point(s) "
                f"(rows {shown}); persistent homology needs finite coordinates: fix or exclude this layer")
    return arr


def check_distance_matrix(dist: np.ndarray, name: str = "dist", *, min_points: int = 0) -> np.ndarray:
    """``dist`` as a float64 square array of finite, non-negative distances with at least
    ``min_points`` rows.

    Example:
        >>> check_distance_matrix([[0.0, 1.0], [1.0, 0.0]]).dtype
        dtype('float64')
    """
    arr = np.asarray(dist, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < min_points:
        size = "a non-empty " if min_points > 0 else "a "
        raise InvalidParameterError(f"{name} must be {size}square (n, n) distance matrix, got shape {arr.shape}")
    if arr.size:
        # min and max propagate NaN and show Inf: two passes over the matrix, no n x n temporary
        low, high = arr.min(), arr.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise InvalidParameterError(f"{name} must hold finite distances, got NaN or Inf; compute it from finite points")
        if low < 0:
            raise InvalidParameterError(f"{name} must hold non-negative distances, got negative entries (min {low:g})")
    return arr
