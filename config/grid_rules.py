"""The grid rules in watts: curtailment stages, the installer ceiling, feed-in caps, the negative-price
rule and §14a dimming. Every package that applies one of these rules calls it from here: the
optimizer's bounds and caps, the export guard, the setpoint writer, the API, the simulators.

Definitions are in docs/definitions.md ("Reference bases", "Grid rules", "Negative prices"):
- stages and the installer ceiling are fractions of the PV inverters' AC rating (``pv.rating_w``);
- the feed-in cap is a fraction of the DC peak power (``feed_in_cap_pct`` × kWp) at the meter;
- powers in W, export ``≥ 0``; prices in EUR/MWh (day-ahead).

The export rules come in two forms that share one implementation: per site and quarter-hour now
(:func:`export_cap_w`, :func:`export_ceiling_w`, for the export guard and the API) and as arrays
over sites and periods (:func:`export_cap_series`, :func:`export_ceiling_series`, for the
optimizer), where a missing feed-in cap is ``inf`` and an unknown price ``NaN`` (not negative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparcs.config.schema import SiteConfig

QUARTER_S = 900
"""The settlement period of the day-ahead market and of every plan, schedule and cap check (s)."""

Stage = Literal["K1", "K2", "K3", "K4"]
STAGE_OUTPUT: dict[str, float] = {"K1": 0.0, "K2": 0.3, "K3": 0.6, "K4": 1.0}
"""Output ceiling of each grid-operator curtailment stage as a fraction of the PV rating.

K1 = 0 %, K2 = 30 %, K3 = 60 %, K4 = 100 % of rated power (VDE-AR-N 4105 ripple-control relays).
They are the output the plant may still deliver; an undefined relay state means 0 %, the most
restrictive one."""

CURTAILING_SHARE = 0.99
"""A PV limit in force below this share of the installer ceiling curtails the site."""


def stage_ceiling_w(stage: str, rating_w: float) -> float:
    """PV output ceiling in W while ``stage`` (K1..K4) is active; an unknown stage is an undefined
    relay state: 0 W."""
    return STAGE_OUTPUT.get(stage, 0.0) * rating_w


def most_restrictive_stage(stages: Iterable[str]) -> str | None:
    """The stage with the lowest output ceiling among ``stages`` (overlapping commands), or None."""
    found = list(stages)
    return min(found, key=lambda s: STAGE_OUTPUT.get(s, 0.0)) if found else None


def installer_ceiling_w(site: SiteConfig, rating_w: float | None = None) -> float:
    """The installer's ceiling on PV output in W: ``pv.installer_limit_pct`` of the rating, never
    lifted by the controller. ``rating_w``: the rating of one inverter (default: the site's)."""
    return (site.pv.rating_w if rating_w is None else rating_w) * site.pv.installer_limit_pct / 100.0


def is_curtailing(limit_w: float | None, ceiling_w: float) -> bool:
    """True when a PV limit in force (W; None = none) lies below the installer ceiling
    (:data:`CURTAILING_SHARE`)."""
    return limit_w is not None and limit_w < CURTAILING_SHARE * ceiling_w


def feed_in_cap_w(site: SiteConfig) -> float | None:
    """The site's feed-in cap at the meter in W (≥ 0): ``feed_in_cap_pct`` of its kWp; None without one."""
    pct = site.grid.feed_in_cap_pct
    return None if pct is None else pct / 100.0 * site.pv.kwp * 1000.0


def negative_price_series(negative_price_rule: ArrayLike, price_eur_per_mwh: ArrayLike) -> NDArray[np.bool_]:
    """``(sites, periods)``: True where a site may not export, i.e. it is under the negative-price
    rule (``negative_price_rule``, one flag per site) and the day-ahead price of the period
    (``price_eur_per_mwh``, one per period; NaN = unknown) is below 0 EUR/MWh."""
    rule = np.atleast_1d(np.asarray(negative_price_rule, dtype=bool))
    negative = np.atleast_1d(np.asarray(price_eur_per_mwh, dtype=float)) < 0
    return rule[:, None] & negative[None, :]


def _no_export_at_negative_prices(
    per_site_w: ArrayLike, negative_price_rule: ArrayLike, price_eur_per_mwh: ArrayLike
) -> NDArray[np.float64]:
    """``(sites, periods)``: ``per_site_w`` (one W ≥ 0 per site), 0 where :func:`negative_price_series` holds."""
    w = np.atleast_1d(np.asarray(per_site_w, dtype=float))
    return np.where(negative_price_series(negative_price_rule, price_eur_per_mwh), 0.0, w[:, None])


def export_cap_series(
    feed_in_cap_w: ArrayLike, negative_price_rule: ArrayLike, price_eur_per_mwh: ArrayLike
) -> NDArray[np.float64]:
    """``(sites, periods)``: the export cap at the meter (W ≥ 0) per site and period: 0 where the
    negative-price rule applies (:func:`negative_price_series`), else the site's feed-in cap
    (``feed_in_cap_w``, one per site; ``inf`` = no cap)."""
    return _no_export_at_negative_prices(feed_in_cap_w, negative_price_rule, price_eur_per_mwh)


def export_ceiling_series(
    feed_in_cap_w: ArrayLike,
    connection_limit_w: ArrayLike,
    negative_price_rule: ArrayLike,
    price_eur_per_mwh: ArrayLike,
) -> NDArray[np.float64]:
    """``(sites, periods)``: the most each site may export at the meter per period (W ≥ 0): its export
    cap (:func:`export_cap_series`), never more than its connection limit (one per site, > 0)."""
    # min(export cap, connection) with the connection taken per site first: the same values
    # (0 stays 0 below a positive limit), one (sites, periods) array fewer.
    per_site = np.minimum(np.asarray(feed_in_cap_w, dtype=float), np.asarray(connection_limit_w, dtype=float))
    return _no_export_at_negative_prices(per_site, negative_price_rule, price_eur_per_mwh)


def _cap_or_inf(site: SiteConfig) -> float:
    cap = feed_in_cap_w(site)
    return math.inf if cap is None else cap


def _price_or_nan(price_eur_per_mwh: float | None) -> float:
    return math.nan if price_eur_per_mwh is None else price_eur_per_mwh


def negative_price_applies(site: SiteConfig, price_eur_per_mwh: float | None) -> bool:
    """True when the site may not export now: it is under the negative-price rule and the day-ahead
    price of the quarter-hour is below 0 EUR/MWh (None = unknown: not negative)."""
    return bool(negative_price_series(site.grid.negative_price_rule, _price_or_nan(price_eur_per_mwh))[0, 0])


def export_cap_w(site: SiteConfig, price_eur_per_mwh: float | None, pool_limit_w: float | None = None) -> float | None:
    """The export cap at the meter now (W ≥ 0): 0 in a negative-price quarter-hour for sites under
    that rule, else the feed-in cap, and never above a pool limit in force (``pool_limit_w``, the
    site's share from :func:`pool_share_w`); None when none applies. The export guard holds it on
    every poll; a violation is a meter sample above it + 1 % of it (docs/definitions.md "Caps and
    violations")."""
    rule, price = site.grid.negative_price_rule, _price_or_nan(price_eur_per_mwh)
    cap = float(export_cap_series(_cap_or_inf(site), rule, price)[0, 0])
    if pool_limit_w is not None:
        cap = min(cap, max(0.0, pool_limit_w))
    return None if math.isinf(cap) else cap


def pool_share_w(limit_pct: float, rating_w: float) -> float:
    """A site's export limit at its meter (W ≥ 0) while its pool (the fleet or a group, see
    docs/interfaces.md) is limited to ``limit_pct`` % of the pool's rating: the same share of the
    site's own PV rating (``pv.rating_w``). The pool's rating is the sum of its sites' PV ratings, so
    the pool's export, the sum of its sites' ``export_w``, stays within ``limit_pct`` % of it."""
    return max(0.0, min(100.0, limit_pct)) / 100.0 * rating_w


def export_ceiling_w(site: SiteConfig, price_eur_per_mwh: float | None) -> float:
    """The most a site may export at the meter now (W ≥ 0): its export cap, and never more than its
    connection limit."""
    rule, price = site.grid.negative_price_rule, _price_or_nan(price_eur_per_mwh)
    conn = site.grid.connection_limit_w
    return float(export_ceiling_series(_cap_or_inf(site), conn, rule, price)[0, 0])
