"""Privacy accounting for DP-SGD: ε, δ and noise calibration under RDP, PLD and PRV.

The numbers are dptrain's (the same code as ``dptrain account`` and ``dptrain
calibrate``), checked in CI against Google's dp_accounting and Microsoft's prv_accountant.

Three ways to say what was run:

- one block of steps: ``epsilon(sample_rate, noise_multiplier, steps, delta=…)``, or
  ``epochs=…, dataset_size=…, batch_size=…`` instead of ``sample_rate`` and ``steps``;
- ``events=``: a :class:`Ledger`, an iterable of ``(sample_rate, noise_multiplier,
  steps)`` blocks, or a dp_accounting ``DpEvent`` (Gaussian, PoissonSampled, SelfComposed,
  Composed, NoOp; dp_accounting itself need not be installed);
- an :class:`Accountant` that composes steps as they happen.

Accountants (``accountant=``): ``"rdp"`` (the default, as the command line's; dp_accounting's
orders and its ε conversion, Balle et al. 2020), ``"pld"`` (privacy loss distributions,
Doroshenko et al. 2022; ``discretization_interval``) and ``"prv"`` (Gopi, Lee & Wutschitz
2021; ``eps_error``, ``delta_error``; ε is the upper bound). Every one counts "add or remove
one example" neighbours and Poisson sampling.

One difference from dp_accounting: a sample rate of 0 is refused (``ValueError``), as the
command line refuses it, where dp_accounting treats it as no event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from . import _dptrain
from ._dptrain import (
    DEFAULT_DELTA_ERROR,
    DEFAULT_DISCRETIZATION_INTERVAL,
    DEFAULT_EPS_ERROR,
    Accountant,
    Ledger,
)

__all__ = [
    "DEFAULT_DELTA_ERROR",
    "DEFAULT_DISCRETIZATION_INTERVAL",
    "DEFAULT_EPS_ERROR",
    "Accountant",
    "Calibration",
    "Ledger",
    "account",
    "calibrate",
    "delta",
    "epsilon",
    "from_dp_event",
    "to_dp_event",
]


class Calibration(NamedTuple):
    """The result of :func:`calibrate`."""

    noise_multiplier: float
    """The smallest σ found whose ε stays within the target."""
    epsilon: float
    """ε at that σ (at most the target)."""
    delta: float
    """The δ of the target."""


def _is_dp_event(value: Any) -> bool:
    return type(value).__name__.endswith("DpEvent")


def _ledger(
    sample_rate: Any,
    noise_multiplier: Any,
    steps: Any,
    events: Any,
    epochs: Any,
    dataset_size: Any,
    batch_size: Any,
    caller: str,
) -> Ledger:
    """The ledger that the arguments describe, or a TypeError naming what is missing."""
    by_epochs = epochs is not None or dataset_size is not None or batch_size is not None
    direct = sample_rate is not None or steps is not None
    if events is not None:
        if direct or by_epochs or noise_multiplier is not None:
            raise TypeError(
                f"{caller}() takes the steps from events; drop sample_rate, noise_multiplier, "
                "steps, epochs, dataset_size and batch_size"
            )
        if isinstance(events, Ledger):
            return events
        if _is_dp_event(events):
            return Ledger.from_dp_event(events)
        if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
            raise TypeError(
                "events must be a Ledger, a dp_accounting DpEvent or an iterable of "
                f"(sample_rate, noise_multiplier, steps) blocks, not {type(events).__name__}"
            )
        return Ledger(events)
    if direct and by_epochs:
        raise TypeError(
            f"{caller}() takes either sample_rate and steps, or epochs, dataset_size and "
            "batch_size, not both"
        )
    if by_epochs:
        if epochs is None or dataset_size is None or batch_size is None:
            raise TypeError(
                f"{caller}(): epochs, dataset_size and batch_size go together; give all three"
            )
        sample_rate, steps = _dptrain.epochs_to_steps(epochs, dataset_size, batch_size)
    if sample_rate is None or steps is None or noise_multiplier is None:
        raise TypeError(
            f"{caller}() needs sample_rate, noise_multiplier and steps (or epochs, "
            "dataset_size and batch_size instead of sample_rate and steps, or events=…)"
        )
    ledger = Ledger()
    ledger.add(sample_rate, noise_multiplier, steps)
    return ledger


def _account(caller: str, args: dict[str, Any]) -> dict[str, Any]:
    """The command line's account on the arguments of ``account``, ``epsilon`` or ``delta``
    (their ``locals()``); errors name ``caller``."""
    ledger = _ledger(
        args["sample_rate"],
        args["noise_multiplier"],
        args["steps"],
        args["events"],
        args["epochs"],
        args["dataset_size"],
        args["batch_size"],
        caller,
    )
    return _dptrain.account(
        ledger,
        args.get("delta"),
        args.get("epsilon"),
        args["accountant"],
        args["discretization_interval"],
        args["eps_error"],
        args["delta_error"],
        args.get("conversion", "improved"),
    )


def account(
    sample_rate: float | None = None,
    noise_multiplier: float | None = None,
    steps: int | None = None,
    *,
    delta: float | None = None,
    epsilon: float | None = None,
    events: Ledger | Iterable[tuple[float, float, int]] | Any | None = None,
    epochs: float | None = None,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    accountant: str = "rdp",
    discretization_interval: float = DEFAULT_DISCRETIZATION_INTERVAL,
    eps_error: float = DEFAULT_EPS_ERROR,
    delta_error: float = DEFAULT_DELTA_ERROR,
    conversion: str = "improved",
) -> dict[str, Any]:
    """``dptrain --json account``: ε at ``delta`` or δ at ``epsilon``, with the details.

    Returns the command line's JSON object as a dict: ``epsilon``, ``delta``,
    ``accountant``, ``steps``, and per accountant the best ``order`` (RDP), the
    ``discretization_interval`` and ``epsilon_remove``/``epsilon_add`` (PLD) or
    ``eps_low``/``eps_estimate``/``eps_upper`` (PRV).
    """
    if (delta is None) == (epsilon is None):
        raise TypeError("account() takes delta=D (ε at that δ) or epsilon=E (δ at that ε)")
    return _account("account", locals())


def epsilon(
    sample_rate: float | None = None,
    noise_multiplier: float | None = None,
    steps: int | None = None,
    *,
    delta: float,
    events: Ledger | Iterable[tuple[float, float, int]] | Any | None = None,
    epochs: float | None = None,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    accountant: str = "rdp",
    discretization_interval: float = DEFAULT_DISCRETIZATION_INTERVAL,
    eps_error: float = DEFAULT_EPS_ERROR,
    delta_error: float = DEFAULT_DELTA_ERROR,
    conversion: str = "improved",
) -> float:
    """ε at ``delta`` of DP-SGD's steps (an upper bound; PRV: its upper bound).

    >>> round(epsilon(256 / 60000, 1.1, 14063, delta=1e-5), 4)
    2.5967
    """
    return _account("epsilon", locals())["epsilon"]


def delta(
    sample_rate: float | None = None,
    noise_multiplier: float | None = None,
    steps: int | None = None,
    *,
    epsilon: float,
    events: Ledger | Iterable[tuple[float, float, int]] | Any | None = None,
    epochs: float | None = None,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    accountant: str = "rdp",
    discretization_interval: float = DEFAULT_DISCRETIZATION_INTERVAL,
    eps_error: float = DEFAULT_EPS_ERROR,
    delta_error: float = DEFAULT_DELTA_ERROR,
) -> float:
    """δ at ``epsilon`` of DP-SGD's steps (RDP or PLD; PRV gives ε only)."""
    return _account("delta", locals())["delta"]


def calibrate(
    target_epsilon: float,
    sample_rate: float | None = None,
    steps: int | None = None,
    *,
    delta: float,
    epochs: float | None = None,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    accountant: str = "rdp",
    discretization_interval: float = DEFAULT_DISCRETIZATION_INTERVAL,
    eps_error: float = DEFAULT_EPS_ERROR,
    delta_error: float = DEFAULT_DELTA_ERROR,
    conversion: str = "improved",
) -> Calibration:
    """The smallest noise multiplier σ whose ε at ``delta`` stays within ``target_epsilon``.

    As ``dptrain calibrate``: a bisection to 1e-10 relative, ε never above the target; a
    target that even σ = 1e4 cannot reach raises ``ValueError``.
    """
    by_epochs = epochs is not None or dataset_size is not None or batch_size is not None
    if by_epochs:
        if sample_rate is not None or steps is not None:
            raise TypeError(
                "calibrate() takes either sample_rate and steps, or epochs, dataset_size and "
                "batch_size, not both"
            )
        if epochs is None or dataset_size is None or batch_size is None:
            raise TypeError(
                "calibrate(): epochs, dataset_size and batch_size go together; give all three"
            )
        sample_rate, steps = _dptrain.epochs_to_steps(epochs, dataset_size, batch_size)
    if sample_rate is None or steps is None:
        raise TypeError(
            "calibrate() needs sample_rate and steps (or epochs, dataset_size and batch_size)"
        )
    out = _dptrain.calibrate(
        target_epsilon,
        delta,
        sample_rate,
        steps,
        accountant,
        discretization_interval,
        eps_error,
        delta_error,
        conversion,
    )
    return Calibration(out["noise_multiplier"], out["epsilon"], out["delta"])


def from_dp_event(event: Any) -> Ledger:
    """The ledger of a dp_accounting ``DpEvent`` (dp_accounting need not be installed)."""
    return Ledger.from_dp_event(event)


def to_dp_event(ledger: Ledger) -> Any:
    """The ledger as a dp_accounting ``DpEvent``: a ``ComposedDpEvent`` of
    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)`` blocks.

    Needs dp_accounting (``pip install dp-accounting``). Secure-mode blocks (discrete
    Gaussian noise) have no dp_accounting event and raise ``ValueError``.
    """
    import json

    try:
        import dp_accounting
    except ImportError as err:
        raise ImportError(
            "to_dp_event needs dp_accounting: pip install dp-accounting"
        ) from err
    parts = []
    for block in json.loads(ledger.to_json()):
        if block.get("mechanism", "gaussian") != "gaussian":
            raise ValueError(
                f"cannot convert a {block['mechanism']} block to a dp_accounting event: "
                "dp_accounting has no discrete Gaussian event"
            )
        gaussian = dp_accounting.GaussianDpEvent(block["noise_multiplier"])
        step = dp_accounting.PoissonSampledDpEvent(block["sample_rate"], gaussian)
        parts.append(dp_accounting.SelfComposedDpEvent(step, block["steps"]))
    return dp_accounting.ComposedDpEvent(parts)
