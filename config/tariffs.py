"""Tariff maths per site and quarter-hour: import (fixed or dynamic, §14a module 3 grid fees) and
export (fixed remuneration or the market price, with the negative-price rule). Pure functions.

Definitions in docs/tariffs.md and docs/definitions.md "Units", "Time", "Negative prices":

- tariffs in EUR/kWh (gross, VAT included, for import), day-ahead prices in EUR/MWh;
- a period is priced by its start (Unix s, UTC); grid-fee windows are Europe/Berlin wall-clock
  times, so a window from 17:00 to 20:00 is 16:00–19:00 UTC in winter and 15:00–18:00 UTC in summer,
  and the 23- and 25-hour days of the clock changes hold the window's local hours;
- an unknown day-ahead price is NaN; a price that depends on it is then NaN too (never a guess);
- the negative-price rule is :func:`sparcs.config.grid_rules.negative_price_series`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparcs.config.grid_rules import negative_price_series
from sparcs.config.schema import (
    ExportTariff,
    FleetConfig,
    GridOperatorFees,
    ImportTariff,
    SiteConfig,
    Tariff,
    TariffConfig,
)

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True)
class SiteTariff:
    """A site's tariff resolved from the fleet file: its import and export terms and its grid
    operator's fees (None: no module 3 windows). ``name`` is the tariff's name (``inline`` for a
    site's own fixed tariff)."""

    name: str
    import_: ImportTariff
    export: ExportTariff
    grid_fees: GridOperatorFees | None = None

    @property
    def dynamic(self) -> bool:
        return self.import_.kind == "dynamic"

    @property
    def market_export(self) -> bool:
        return self.export.kind == "market"

    @property
    def needs_day_ahead(self) -> bool:
        """True when the import or export price depends on the day-ahead price."""
        return self.dynamic or self.market_export


def inline_tariff(t: Tariff) -> TariffConfig:
    """A site's inline fixed tariff as a :class:`TariffConfig` (direct marketing = market export)."""
    return TariffConfig.model_validate(
        {
            "import": ImportTariff(kind="fixed", eur_per_kwh=t.import_eur_per_kwh),
            "export": ExportTariff(kind="market" if t.direct_marketing else "fixed", eur_per_kwh=t.export_eur_per_kwh),
        }
    )


def site_tariff(cfg: FleetConfig, site: SiteConfig) -> SiteTariff:
    """The tariff of ``site``: the one its ``tariff`` names in ``cfg.tariffs``, or its inline one."""
    if isinstance(site.tariff, str):
        name, t = site.tariff, cfg.tariffs[site.tariff]
    else:
        name, t = "inline", inline_tariff(site.tariff)
    op = t.import_.grid_operator
    return SiteTariff(name, t.import_, t.export, None if op is None else cfg.grid_operators[op])


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def grid_fee_eur_per_kwh(fees: GridOperatorFees, t_s: ArrayLike) -> NDArray[np.float64]:
    """The grid fee (EUR/kWh, net of VAT) at each instant ``t_s`` (Unix s): the fee of the module 3
    window containing its Europe/Berlin wall-clock time in its calendar quarter, else the standard fee.

    A window holds minute ``m`` of the local day when ``start ≤ m < end`` (or, wrapping over midnight
    when ``end < start``, ``m ≥ start or m < end``)."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    out = np.full(t.shape, fees.standard_eur_per_kwh)
    if not fees.windows:
        return out
    local = [dt.datetime.fromtimestamp(x, BERLIN) for x in t]
    minute = np.array([x.hour * 60 + x.minute for x in local])
    quarter = np.array([(x.month - 1) // 3 + 1 for x in local])
    for w in fees.windows:
        a, b = _minute(w.start), _minute(w.end)
        inside = (minute >= a) & (minute < b) if a < b else (minute >= a) | (minute < b)
        out[inside & np.isin(quarter, w.quarters)] = w.eur_per_kwh
    return out


def import_price_eur_per_kwh(
    tariff: SiteTariff, t_s: ArrayLike, day_ahead_eur_per_mwh: ArrayLike
) -> NDArray[np.float64]:
    """Gross import price (EUR/kWh) of the periods starting at ``t_s`` (Unix s).

    fixed: ``eur_per_kwh`` + (grid fee − standard fee) × (1 + VAT) with module 3 windows;
    dynamic: (day-ahead / 1000 + fees + grid fee) × (1 + VAT), NaN where the day-ahead price is."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    imp = tariff.import_
    fee = np.zeros(t.shape) if tariff.grid_fees is None else grid_fee_eur_per_kwh(tariff.grid_fees, t)
    gross = 1.0 + imp.vat
    if imp.kind == "fixed":
        assert imp.eur_per_kwh is not None  # the schema requires it
        standard = 0.0 if tariff.grid_fees is None else tariff.grid_fees.standard_eur_per_kwh
        return imp.eur_per_kwh + (fee - standard) * gross
    da = np.broadcast_to(np.asarray(day_ahead_eur_per_mwh, dtype=float), t.shape)
    return (da / 1000.0 + imp.fees_eur_per_kwh + fee) * gross


def export_price_eur_per_kwh(
    market: ArrayLike,
    fixed_eur_per_kwh: ArrayLike,
    negative_price_rule: ArrayLike,
    day_ahead_eur_per_mwh: ArrayLike,
) -> NDArray[np.float64]:
    """``(sites, periods)``: what a kWh exported earns (EUR/kWh).

    ``market`` (one flag per site): direct marketing, the day-ahead price / 1000 (NaN where unknown);
    else ``fixed_eur_per_kwh`` (per site, or per site and period). Nothing (0) in a negative-price
    quarter-hour for a site under the negative-price rule (grid_rules.negative_price_series)."""
    mk = np.atleast_1d(np.asarray(market, dtype=bool))
    da = np.atleast_1d(np.asarray(day_ahead_eur_per_mwh, dtype=float))
    fixed = np.asarray(fixed_eur_per_kwh, dtype=float)
    fixed = np.broadcast_to(fixed[:, None] if fixed.ndim == 1 else fixed, (mk.size, da.size))
    out = np.where(mk[:, None], da[None, :] / 1000.0, fixed)
    out[negative_price_series(negative_price_rule, da)] = 0.0
    return out
