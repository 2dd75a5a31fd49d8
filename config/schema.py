"""The one configuration schema every SPARCS command validates a fleet file against.

A fleet file has a ``sites`` section (what exists in the field), a ``simulation`` section (how the
simulated fleet behaves: seed, speed, device variants, faults) and the controller's sections
(``dispatch``, ``market``, ``grid``, ``api``, ``storage``). Every model forbids unknown keys, so a
typo is an error that names its path, never a silently ignored setting.

Units and signs follow docs/definitions.md "Units" and "Signs": SI inside (W, Wh, s), SoC as a fraction 0..1,
names carry the unit where it is not SI (``kwp``, ``capacity_kwh``, ``annual_kwh``,
``*_eur_per_kwh``, ``*_deg``). Timestamps must carry a UTC offset (docs/definitions.md "Time").
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

DeviceKind = Literal["pv_inverter", "battery", "meter", "hybrid"]
"""``hybrid``: one device (one unit id) with a PV and a battery role, e.g. a hybrid inverter."""
PV_KINDS = ("pv_inverter", "hybrid")
"""Device kinds that take PV limits."""
BATTERY_KINDS = ("battery", "hybrid")
"""Device kinds that take battery setpoints."""
FaultMode = Literal[
    "offline",  # port closed: connections are refused
    "no_reply",  # requests are swallowed: the client times out
    "slow",  # replies arrive after ``delay_s``
    "exception",  # every request answered with Modbus exception ``code``
    "frozen",  # measurements stop changing (energy counters flat while power > 0)
    "sentinel",  # measurements read as SunSpec not-implemented values
    "garbage",  # measurements read as out-of-range values
    "reboot",  # controls reset to defaults once, device unavailable for ``duration_s``
    # writes are acknowledged but not applied: the registers keep their old values, so a read-back
    # shows the mismatch (a battery that silently ignored its setpoints while reporting Ok)
    "ignore_writes",
]


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-06-21T12:00:00+02:00")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-12:00 lies past the calendar's end in UTC
        raise ValueError("timestamp lies outside the years 1..9999 in UTC") from None


AwareDatetime = Annotated[dt.datetime, AfterValidator(_aware)]
"""A timestamp that carried an offset at the edge; converted to UTC inside."""


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Location(Strict):
    """Where a site is; degrees north/east, metres above sea level."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    altitude_m: float = Field(default=110.0, ge=-500, le=9000)


class PvConfig(Strict):
    """The site's PV array. ``azimuth_deg`` uses pvlib's convention: 180 = south, 90 = east."""

    kwp: float = Field(gt=0, le=1000, description="DC peak power in kWp")
    tilt_deg: float = Field(default=30.0, ge=0, le=90)
    azimuth_deg: float = Field(default=180.0, ge=0, lt=360)
    inverter_w: float | None = Field(
        default=None, gt=0, description="AC rating of the inverter in W; default: 1000 W per kWp"
    )
    installer_limit_pct: float = Field(
        default=100.0,
        gt=0,
        le=100,
        description="Installer's output ceiling in % of the rating (WMax); the controller never lifts it",
    )

    @property
    def rating_w(self) -> float:
        return self.inverter_w if self.inverter_w is not None else self.kwp * 1000.0


class BatteryConfig(Strict):
    """A home battery. SoC values are fractions 0..1 of ``capacity_kwh``."""

    capacity_kwh: float = Field(gt=0, le=10_000)
    max_charge_w: float = Field(gt=0)
    max_discharge_w: float = Field(gt=0)
    eta_charge: float = Field(default=0.95, gt=0, le=1)
    eta_discharge: float = Field(default=0.95, gt=0, le=1)
    soc_min: float = Field(default=0.05, ge=0, le=1)
    soc_max: float = Field(default=0.95, ge=0, le=1)
    soc_initial: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _soc_order(self) -> BatteryConfig:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max}); swap or correct them")
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError(
                f"soc_initial ({self.soc_initial}) must lie within soc_min..soc_max ({self.soc_min}..{self.soc_max})"
            )
        return self


class LoadConfig(Strict):
    """Household consumption: BDEW H0 standard profile scaled to ``annual_kwh``."""

    annual_kwh: float = Field(default=3500.0, gt=0, le=1_000_000)


class GridConnection(Strict):
    """The site's grid connection point and the rules that apply to it."""

    connection_limit_w: float = Field(default=30_000.0, gt=0, description="fuse limit, import and export")
    feed_in_cap_pct: Literal[60, 70] | None = Field(
        default=None, description="feed-in cap at the meter in % of PV kWp (60, 70) or none"
    )
    negative_price_rule: bool = Field(
        default=False, description="plant from 25 Feb 2025: no export in negative-price quarter-hours"
    )


class Tariff(Strict):
    """What the site pays for import and earns for export, EUR/kWh."""

    import_eur_per_kwh: float = Field(default=0.32, ge=0, le=10)
    export_eur_per_kwh: float = Field(default=0.08, ge=-1, le=10)
    direct_marketing: bool = Field(
        default=False, description="export earns the day-ahead price instead of a fixed remuneration"
    )


# -- tariffs (docs/tariffs.md) ---------------------------------------------------------------------
# A site's tariff is inline (the fixed ``Tariff`` above) or the name of one in the fleet's ``tariffs``
# section; §14a module 3 grid fees are a schedule per grid operator in ``grid_operators``. The
# maths lives in config/tariffs.py.

LocalTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
"""A wall-clock time of day in Europe/Berlin, ``HH:MM`` (``24:00`` = the end of the day)."""


class GridFeeWindow(Strict):
    """One time window of a §14a module 3 grid fee: from ``start`` to ``end`` local time (Europe/Berlin;
    ``end`` before ``start`` wraps over midnight), in the calendar quarters listed, at ``eur_per_kwh``
    (net of VAT)."""

    start: LocalTime
    end: LocalTime
    eur_per_kwh: float = Field(ge=0, le=2)
    quarters: list[Literal[1, 2, 3, 4]] = Field(default=[1, 2, 3, 4], min_length=1)
    name: str = Field(default="", description="e.g. NT (low) or HT (high)")

    @model_validator(mode="after")
    def _not_empty(self) -> GridFeeWindow:
        if self.start == self.end or (self.start == "00:00" and self.end == "24:00"):
            raise ValueError("a window from start to end must not be empty or the whole day; use standard_eur_per_kwh")
        return self


class GridOperatorFees(Strict):
    """A grid operator's per-kWh grid fee (net of VAT): the standard fee, and the §14a module 3 windows
    in which it differs. Windows of one quarter must not overlap."""

    standard_eur_per_kwh: float = Field(ge=0, le=2)
    windows: list[GridFeeWindow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> GridOperatorFees:
        for q in (1, 2, 3, 4):
            taken = [0] * 1440
            for w in self.windows:
                if q not in w.quarters:
                    continue
                a, b = _minute(w.start), _minute(w.end)
                for m in range(a, b) if a < b else [*range(a, 1440), *range(0, b)]:
                    if taken[m]:
                        raise ValueError(f"windows overlap at {m // 60:02d}:{m % 60:02d} in quarter {q}")
                    taken[m] = 1
        return self


def _minute(hhmm: str) -> int:
    """Minutes since midnight of a :data:`LocalTime`."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class ImportTariff(Strict):
    """What a kWh imported costs, EUR/kWh gross (VAT included).

    ``fixed``: ``eur_per_kwh`` all-in; with ``grid_operator`` its module 3 windows shift it by
    (window fee − standard fee) × (1 + VAT). ``dynamic``: (day-ahead price / 1000 + ``fees_eur_per_kwh``
    + the grid fee of the quarter-hour) × (1 + ``vat``), the grid fee the operator's (standard outside
    its windows) or none without ``grid_operator`` (then ``fees_eur_per_kwh`` includes it)."""

    kind: Literal["fixed", "dynamic"] = "fixed"
    eur_per_kwh: float | None = Field(default=None, ge=0, le=10, description="fixed: the all-in price")
    fees_eur_per_kwh: float = Field(
        default=0.0, ge=0, le=2, description="dynamic: supplier margin, levies, taxes per kWh, net of VAT"
    )
    vat: float = Field(default=0.19, ge=0, le=1, description="VAT as a fraction (0.19 = 19 %)")
    grid_operator: str | None = Field(default=None, description="a name in the fleet's grid_operators section")

    @model_validator(mode="after")
    def _priced(self) -> ImportTariff:
        if self.kind == "fixed" and self.eur_per_kwh is None:
            raise ValueError("a fixed import tariff needs eur_per_kwh")
        if self.kind == "dynamic" and self.eur_per_kwh is not None:
            raise ValueError("a dynamic import tariff takes fees_eur_per_kwh and vat, not eur_per_kwh")
        return self


class ExportTariff(Strict):
    """What a kWh exported earns, EUR/kWh: ``fixed`` = the feed-in remuneration ``eur_per_kwh``;
    ``market`` = direct marketing at the day-ahead price (/ 1000). Either way nothing in a
    negative-price quarter-hour for a site under the negative-price rule."""

    kind: Literal["fixed", "market"] = "fixed"
    eur_per_kwh: float = Field(default=0.08, ge=-1, le=10, description="fixed: the remuneration")


class TariffConfig(Strict):
    """A named tariff: import and export (see :class:`ImportTariff`, :class:`ExportTariff`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    import_: ImportTariff = Field(alias="import")
    export: ExportTariff = ExportTariff()


class DeviceConfig(Strict):
    """One device of a site: its endpoint, unit id and the protocol that reads and writes it.

    The config does not know the protocols: the drivers' registry checks ``protocol`` where it
    builds the devices (the poller, ``sparcs check-config``)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: DeviceKind
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    unit: int = Field(default=1, ge=1, le=247)
    protocol: str = Field(
        default="sunspec",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="a registered device protocol: sunspec, profile, or one a plug-in registers (docs/devices.md)",
    )
    profile: str | None = Field(
        default=None, description="name of a register map in the fleet's profiles_dir or config/profiles/"
    )
    control: bool = Field(default=True, description="false = monitor only: read, never write")
    invert_sign: bool = Field(default=False, description="the device reports power with the opposite sign")
    accept_no_fail_safe: bool = Field(
        default=False,
        description="write setpoints although the device has no revert timer or watchdog: a limit then stays "
        'in force if the controller stops (docs/devices.md "Fail-safes"); without it such a device is monitor-only',
    )
    watchdog_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="the watchdog interval set on this device, where it differs from its profile's "
        "fail_safe.interval_s (SMA and KOSTAL timeouts are set by the installer)",
    )
    _profile_dirs: tuple[Path, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _profile_named(self) -> DeviceConfig:
        if self.protocol == "profile" and not self.profile:
            raise ValueError("protocol 'profile' needs 'profile': the name of a file in config/profiles/")
        return self

    @property
    def profile_dirs(self) -> tuple[Path, ...]:
        """Where the device's profile is looked up first (the fleet's ``profiles_dir``); then config/profiles/."""
        return self._profile_dirs

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.host, self.port)


class SiteConfig(Strict):
    """A home or small business with PV, maybe a battery, and one grid connection point."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str | None = None
    location: Location
    district: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the city district the site lies in: the open data aggregate it counts in (docs/open-data.md)",
    )
    pv: PvConfig
    battery: BatteryConfig | None = None
    load: LoadConfig = LoadConfig()
    grid: GridConnection = GridConnection()
    tariff: Tariff | str = Field(
        default=Tariff(), description="a fixed tariff inline, or the name of one in the fleet's tariffs section"
    )
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _devices_fit(self) -> SiteConfig:
        kinds = [d.kind for d in self.devices]
        if kinds.count("meter") > 1:
            raise ValueError("a site has at most one meter at its grid connection point")
        if any(k in BATTERY_KINDS for k in kinds) and self.battery is None:
            raise ValueError("a battery or hybrid device needs the site's 'battery' section (capacity, power limits)")
        return self


class DeviceVariant(Strict):
    """How a simulated device presents itself on the wire."""

    models: Literal["classic", "der", "float", "802"] = Field(
        default="classic",
        description="classic = 10x/120/121/122/123(/124); der = 701/702/704(/713); float = 11x instead of 10x; "
        "802 = a battery serving only the SunSpec 2 battery model 802 (no inverter or control model)",
    )
    mppt_strings: int = Field(
        default=0, ge=0, le=8, description="PV inverters: serve model 160 (MPPT) with this many strings; 0 = none"
    )
    base_address: Literal[0, 40000, 50000] = 40000
    common_len: Literal[65, 66] = 66
    phases: Literal[1, 2, 3] = Field(
        default=3,
        description="inverter phases: 101/102/103 (classic) or 111/112/113 (float); der models ignore it",
    )
    meter_model: Literal[201, 202, 203, 204] = Field(
        default=203,
        description="meter model: 201 single phase, 202 split phase, 203 three-phase wye, 204 three-phase delta",
    )
    clock_offset_s: float = Field(
        default=0.0, ge=-1e9, le=1e9, description="the device clock (SunSpec 122 Tms) this far ahead of true time"
    )
    clock_rate: float = Field(
        default=1.0, gt=0, le=100, description="device seconds per true second: its clock and revert timers run so"
    )


class FaultSpec(Strict):
    """A fault of one simulated device, active from ``start`` (or from start-up) until ``end``."""

    device: str
    mode: FaultMode
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    delay_s: float = Field(default=2.0, gt=0, le=60, description="reply delay for mode 'slow'")
    code: int = Field(default=4, ge=1, le=11, description="Modbus exception code for mode 'exception'")
    duration_s: float = Field(default=5.0, ge=0, le=3600, description="unavailability for mode 'reboot'")


class WeatherConfig(Strict):
    """The seeded cloud process that multiplies clear-sky irradiance."""

    cloudiness: float = Field(default=0.3, ge=0, le=1, description="0 = clear sky all day, 1 = overcast")
    irradiance_csv: Path | None = Field(default=None, description="CSV of timestamp,clearness (0..1.2)")


class SimulationConfig(Strict):
    """The simulated fleet: used by `sparcs simulate`, `sparcs run` (demo) and `sparcs twin`."""

    seed: int = 42
    speed: float = Field(default=1.0, gt=0, le=10_000, description="sim seconds per wall second")
    start: AwareDatetime | None = Field(default=None, description="sim clock start; default: now")
    host: str = "127.0.0.1"
    control_port: int | None = Field(default=None, ge=1, le=65535, description="control channel HTTP port")
    weather: WeatherConfig = WeatherConfig()
    load_noise: float = Field(default=0.1, ge=0, le=1, description="relative std-dev of load noise")
    recorded_dir: Path | None = Field(
        default=None,
        description="folder of <site id>.csv files timestamp,clearness,load_w (a recorded day, written by "
        "`sparcs twin --history`): each site's clearness and load in place of the seeded weather and load",
    )
    variants: dict[str, DeviceVariant] = Field(default_factory=dict, description="device id -> variant")
    faults: list[FaultSpec] = Field(default_factory=list)


class DispatchConfig(Strict):
    """Control cadence and solver bounds."""

    poll_interval_s: float = Field(default=10.0, gt=0, le=3600)
    dispatch_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    min_replan_interval_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="operator commands re-plan at most this often after a dispatch; later ones are planned together",
    )
    horizon_h: int = Field(default=24, ge=1, le=72)
    solve_timeout_s: float = Field(default=30.0, gt=0, le=600)
    stale_after_polls: int = Field(default=3, ge=1, le=100)
    max_backoff_s: float = Field(
        default=60.0,
        gt=0,
        le=60,
        description="a failing device is still probed at least this often (its back-off never skips longer); "
        "at most 60 s, so a device that answers again is back within a minute",
    )
    revert_timeout_s: int = Field(default=600, ge=10, le=65_535, description="revert timer written with limits")
    max_device_clock_skew_s: float = Field(
        default=60.0, gt=0, le=86_400, description="a device clock (SunSpec 122) further off ours than this is an alarm"
    )
    modbus_timeout_s: float = Field(default=1.0, gt=0, le=30)
    max_concurrency: int = Field(default=256, ge=1, le=10_000)
    min_pv_limit_pct: float = Field(
        default=1.0, ge=0, le=100, description="floor for PV limits: some inverters go to standby at 0 %"
    )
    battery_throughput_eur_per_kwh: float = Field(default=0.02, ge=0)
    curtailment_penalty_eur_per_kwh: float = Field(default=0.001, ge=0)
    schedule_penalty_eur_per_kwh: float = Field(default=1.0, ge=0)
    device_poll_interval_s: dict[
        Literal["pv_inverter", "battery", "hybrid"], Annotated[float, Field(gt=0, le=3600)]
    ] = Field(
        default_factory=dict,
        description="tiered polling: devices of these kinds are read at most this often (s): every n-th poll, "
        "n the whole polls that fit in it (at least 1), and at the poll after every write to them; meters and "
        "kinds not named are read at every poll, the export guard's rate (docs/devices.md 'Tiered polling')",
    )

    def polls_between_reads(self, kind: str) -> int:
        """How many polls apart devices of ``kind`` are read: the whole polls within its
        ``device_poll_interval_s`` (at least 1; 1 = every poll, also for a kind not named)."""
        interval = next((v for k, v in self.device_poll_interval_s.items() if k == kind), None)
        return 1 if interval is None else max(1, math.floor(interval / self.poll_interval_s + 1e-9))


class EntsoeConfig(Strict):
    """The ENTSO-E transparency platform's REST API (day-ahead prices, documentType A44)."""

    token: str = Field(min_length=1, description="the platform's security token")
    bidding_zone: str = Field(default="10Y1001A1001A82H", description="EIC of the bidding zone (DE-LU)")
    url: str = Field(default="https://web-api.tp.entsoe.eu/api")
    timeout_s: float = Field(default=20.0, gt=0, le=120)


class MarketConfig(Strict):
    """Day-ahead prices (EUR/MWh, quarter-hourly) from one source: a CSV file (``prices_csv``), a CSV at
    a URL (``prices_url``) or ENTSO-E (``entsoe``); a flat price only when no source is configured.
    Periods a configured source has no price for are never filled with a flat price (docs/tariffs.md)."""

    prices_csv: Path | None = Field(default=None, description="CSV with columns timestamp,eur_per_mwh")
    prices_url: str | None = Field(default=None, description="http(s) URL of such a CSV, fetched again when due")
    entsoe: EntsoeConfig | None = None
    refresh_interval_s: float = Field(default=900.0, ge=10, le=86_400, description="how often a URL is fetched")
    tomorrow_expected_by: LocalTime = Field(
        default="14:00", description="Europe/Berlin time by which tomorrow's prices must be known, else an alarm"
    )
    flat_price_eur_per_mwh: float = Field(default=80.0, ge=-500, le=4000)

    @model_validator(mode="after")
    def _one_source(self) -> MarketConfig:
        given = [k for k in ("prices_csv", "prices_url", "entsoe") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one price source, not {' and '.join(given)}")
        if self.prices_url is not None and not self.prices_url.startswith(("http://", "https://")):
            raise ValueError("prices_url must start with http:// or https://")
        return self

    @property
    def has_source(self) -> bool:
        """True when a day-ahead series is configured (then the flat price is never used)."""
        return self.prices_csv is not None or self.prices_url is not None or self.entsoe is not None


class WeatherSourceConfig(Strict):
    """Where the PV forecast's weather comes from (docs/forecasts.md)."""

    provider: Literal["none", "open-meteo", "csv"] = Field(
        default="none", description="none: clear sky × typical clearness, corrected by the fleet's measurements"
    )
    url: str = Field(default="https://api.open-meteo.com/v1/forecast", description="Open-Meteo forecast endpoint")
    csv: Path | None = Field(default=None, description="CSV timestamp,ghi_w_m2,temp_air_c[,dni_w_m2,dhi_w_m2,...]")
    refresh_s: float = Field(default=900.0, ge=60, le=86_400, description="how often the forecast is fetched again")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    cell_deg: float = Field(default=0.05, gt=0, le=1, description="sites share a forecast point on this grid")

    @model_validator(mode="after")
    def _csv_named(self) -> WeatherSourceConfig:
        if self.provider == "csv" and self.csv is None:
            raise ValueError("provider csv needs the file: set forecast.weather.csv")
        return self


class ForecastConfig(Strict):
    """Forecasts of PV and load that the plan rests on."""

    weather: WeatherSourceConfig = WeatherSourceConfig()
    nowcast_radius_km: float = Field(
        default=3.0, gt=0, le=50, description="neighbours within this distance share clouds"
    )


class GridRules(Strict):
    """Fleet-wide grid-operator rules."""

    para14a_limit_w: float = Field(default=4200.0, gt=0, description="§14a EnWG dimming of grid charging")
    export_guard: bool = Field(default=True, description="tighten PV limits at once when a meter exceeds its cap")


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_kib: int = Field(default=64, ge=1, le=10_240, description="largest request body taken, KiB")
    body_timeout_s: float = Field(default=10.0, gt=0, le=300, description="time a request has to send its body")
    keep_alive_s: float = Field(
        default=5.0, gt=0, le=300, description="an idle kept-alive connection is closed after this many seconds"
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="connections (or requests in progress) beyond which new requests get 503; bounds the API's memory",
    )
    nice: int = Field(
        default=10, ge=0, le=19, description="niceness of the API process: the control process is served first"
    )
    # Security of the API (docs/security.md): TLS from certificate files, and failed sign-ins limited
    # per client address.
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain) to serve HTTPS with")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file")
    signin_max_failures: int = Field(
        default=10, ge=1, le=10_000, description="failed sign-ins a client address may make per signin_window_s"
    )
    signin_window_s: float = Field(default=60.0, gt=0, le=86_400, description="window of signin_max_failures")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both (HTTPS) or neither (HTTP)")
        return self


class LoggingConfig(Strict):
    """The log of the long-running commands (docs/operations.md "Logs"); --log-level and --log-format
    override it."""

    level: Literal["debug", "info", "warning", "error"] = "warning"
    format: Literal["text", "json"] = Field(default="text", description="json: one JSON object per line")


class TableRetention(Strict):
    """Days each history table keeps its rows; unset: ``storage.retention_days`` (docs/storage.md "Retention")."""

    telemetry: int | None = Field(default=None, ge=1, le=3650, description="device readings")
    fleet: int | None = Field(default=None, ge=1, le=3650, description="fleet totals")
    site_history: int | None = Field(default=None, ge=1, le=3650, description="site totals")
    plans: int | None = Field(default=None, ge=1, le=3650, description="plans (the latest is always kept)")
    setpoints: int | None = Field(default=None, ge=1, le=3650, description="setpoints written and read back")
    alarms: int | None = Field(default=None, ge=1, le=3650, description="cleared alarms")
    history_gaps: int | None = Field(default=None, ge=1, le=3650, description="spans not stored")


class StorageConfig(Strict):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db; default: SQLite in the data directory",
    )
    retention_days: int = Field(default=90, ge=1, le=3650)
    retention: TableRetention = TableRetention()
    telemetry_resolution_s: int = Field(default=60, ge=1, le=3600)
    write_queue: int = Field(
        default=100_000,
        ge=100,
        le=10_000_000,
        description="history rows held in memory while the store fails; beyond it the oldest are dropped as a gap",
    )
    write_retry_s: float = Field(default=5.0, gt=0, le=600, description="seconds between tries of a failed write")


class EdgeConfig(Strict):
    """One edge gateway: the sites it polls and the broker credential it connects with (docs/edges.md)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the edge's id and its broker username")
    sites: list[str] = Field(min_length=1, description="ids of the sites this edge polls")
    password_file: Path | None = Field(
        default=None, description="file holding the edge's broker password (one line); default: none"
    )


class BrokerConfig(Strict):
    """The MQTT broker between edges and the central (docs/edges.md); sites of an edge are polled by it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    tls: bool = Field(default=True, description="TLS to the broker; off only on a trusted loopback")
    ca_file: Path | None = Field(default=None, description="CA certificate that signed the broker's certificate")
    username: str = Field(default="central", description="the central's broker username")
    password_file: Path | None = Field(default=None, description="file holding the central's broker password")
    plan_hours: float = Field(
        default=6.0, gt=0, le=72, description="hours of the plan sent to an edge; it is valid until their end"
    )
    max_clock_skew_s: float = Field(
        default=5.0, gt=0, le=3600, description="an edge clock further off the central's than this is an alarm"
    )
    edges: list[EdgeConfig] = Field(default_factory=list)

    def edge_of(self, site_id: str) -> EdgeConfig | None:
        """The edge that polls ``site_id``, or None when the central polls it directly."""
        return next((e for e in self.edges if site_id in e.sites), None)

    def edge(self, edge_id: str) -> EdgeConfig:
        for e in self.edges:
            if e.id == edge_id:
                return e
        raise KeyError(f"unknown edge '{edge_id}'; broker.edges lists the edges")


# --- groups, the SunSpec pool interface, control-box relay inputs (docs/interfaces.md) -------------

GroupKind = Literal["grid_area", "feeder", "transformer", "portfolio", "other"]
RelayAction = Literal["K1", "K2", "K3", "K4", "para14a", "none"]
FNN_CONTACTS: tuple[RelayAction, ...] = ("K1", "K2", "K3", "K4")
"""The control box's four relays in input order: stages K1..K4 (docs/definitions.md "Grid rules")."""


class GroupConfig(Strict):
    """A named group of sites (a grid area, feeder, transformer station or a direct marketer's
    portfolio); a site may belong to several. Commands, reads, metrics and the pool interface can
    address it by ``id``."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str | None = None
    kind: GroupKind = "other"
    sites: list[str] = Field(min_length=1, max_length=10_000)
    pool_unit: int | None = Field(
        default=None, ge=1, le=247, description="serve the group as a SunSpec device on this unit id of the pool"
    )


class PoolConfig(Strict):
    """The SunSpec pool interface: the fleet (unit ``fleet_unit``) and each group with a
    ``pool_unit`` served as one SunSpec device on Modbus TCP."""

    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=1502, ge=0, le=65535, description="TCP port; 0 = a free port")
    fleet_unit: int | None = Field(default=1, ge=1, le=247, description="unit id of the whole fleet; null = not served")
    allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="client addresses allowed to connect; others are refused",
    )
    read_only: bool = Field(default=False, description="refuse every write (Modbus exception 1)")
    manufacturer: str = "SPARCS"
    serial: str = "pool"


class RelayInputConfig(Strict):
    """A control box's relay contacts (FNN Steuerbox, ripple-control receiver) read as discrete
    inputs of a Modbus I/O module; each contact maps to a stage, §14a dimming or no limit."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    unit: int = Field(default=1, ge=1, le=247)
    address: int = Field(default=0, ge=0, le=65_535, description="first discrete input of the contacts")
    contacts: list[RelayAction] = Field(
        default_factory=lambda: list(FNN_CONTACTS),
        min_length=1,
        max_length=16,
        description="action of each contact, in input order from ``address``: K1..K4, para14a, none",
    )
    group: str | None = Field(default=None, description="the group it acts on; null = the whole fleet")


def external_problems(
    groups: list[GroupConfig], pool: PoolConfig | None, relay_inputs: list[RelayInputConfig], site_ids: set[str]
) -> list[str]:
    """One line per group, pool or relay-input reference that does not resolve or id used twice."""
    out: list[str] = []
    group_ids = [g.id for g in groups]
    for what, ids in (("group id", group_ids), ("relay input id", [r.id for r in relay_inputs])):
        out += [f"{what} '{i}' is used twice; ids must be unique" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for g in groups:
        out += [f"groups[{g.id}].sites: unknown site '{s}'" for s in g.sites if s not in site_ids]
        if len(set(g.sites)) != len(g.sites):
            out.append(f"groups[{g.id}].sites: a site is listed twice")
    for r in relay_inputs:
        if r.group is not None and r.group not in group_ids:
            out.append(f"relay_inputs[{r.id}].group: unknown group '{r.group}'")
    units = [u for u in [pool.fleet_unit if pool else None] + [g.pool_unit for g in groups] if u]
    if len(set(units)) != len(units):
        out.append("pool: a unit id is used twice (pool.fleet_unit and groups[].pool_unit must differ)")
    return out


class DistrictConfig(Strict):
    """A city district as open data shows it: its name and its centroid (never a site's place)."""

    name: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90, description="the district's centroid, degrees north")
    lon: float = Field(ge=-180, le=180, description="the district's centroid, degrees east")


class OpenDataConfig(Strict):
    """The aggregated, privacy-safe publication of what the swarm does (docs/open-data.md): served as an
    OGC SensorThings API under /sta/v1.1 and written as files by ``sparcs opendata export``."""

    enabled: bool = Field(default=False, description="serve /sta/v1.1 without a token; false: not served")
    k: int = Field(default=5, ge=2, le=10_000, description="fewest sites in any published aggregate")
    delay_s: int = Field(
        default=3600, ge=0, le=30 * 86_400, description="a quarter-hour is published once it ended this long ago"
    )
    aggregate_by: Literal["district", "group"] = Field(
        default="district", description="district: the sites' `district`; group: the fleet file's groups"
    )
    districts: dict[str, DistrictConfig] = Field(
        default_factory=dict, description="name and centroid per district id (the Locations published)"
    )
    publisher: str = Field(default="SPARCS", min_length=1, max_length=200, description="dct:publisher of the files")
    base_url: str | None = Field(
        default=None, max_length=500, description="where the files are published (dcat:downloadURL); null: relative"
    )


class FleetConfig(Strict):
    """A whole fleet file."""

    sites: list[SiteConfig] = Field(min_length=1)
    simulation: SimulationConfig | None = None
    dispatch: DispatchConfig = DispatchConfig()
    market: MarketConfig = MarketConfig()
    forecast: ForecastConfig = ForecastConfig()
    grid: GridRules = GridRules()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()
    broker: BrokerConfig | None = None
    tariffs: dict[str, TariffConfig] = Field(default_factory=dict, description="named tariffs sites refer to")
    grid_operators: dict[str, GridOperatorFees] = Field(
        default_factory=dict, description="grid fees per grid operator (§14a module 3 windows)"
    )
    groups: list[GroupConfig] = Field(default_factory=list, description="named groups of sites")
    pool: PoolConfig | None = Field(default=None, description="the SunSpec pool interface; null = off")
    relay_inputs: list[RelayInputConfig] = Field(default_factory=list, description="control-box relay contacts")
    open_data: OpenDataConfig = OpenDataConfig()
    profiles_dir: Path | None = Field(
        default=None,
        description="a folder of your own vendor profiles (YAML), looked up before config/profiles/; "
        "relative to the fleet file",
    )
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _unique_and_consistent(self) -> FleetConfig:
        self.set_profiles_dir(self.profiles_dir)
        problems: list[str] = []
        for k, s in enumerate(self.sites):
            if isinstance(s.tariff, str) and s.tariff not in self.tariffs:
                problems.append(f"sites[{k}:{s.id}].tariff: unknown tariff '{s.tariff}'; define it under tariffs")
        for name, t in self.tariffs.items():
            op = t.import_.grid_operator
            if op is not None and op not in self.grid_operators:
                problems.append(f"tariffs.{name}.import.grid_operator: unknown grid operator '{op}'")
        for what, ids in (
            ("site id", [s.id for s in self.sites]),
            ("device id", [d.id for s in self.sites for d in s.devices]),
        ):
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    problems.append(f"{what} '{i}' is used twice; ids must be unique")
                seen.add(i)
        # A port may be shared only inside one site (a site gateway) and only with distinct unit ids.
        by_endpoint: dict[tuple[str, int], list[tuple[str, str, int]]] = defaultdict(list)
        for s in self.sites:
            for d in s.devices:
                by_endpoint[d.endpoint].append((s.id, d.id, d.unit))
        for (host, port), users in by_endpoint.items():
            sites = {u[0] for u in users}
            units = [u[2] for u in users]
            if len(sites) > 1 or len(set(units)) != len(units):
                names = ", ".join(u[1] for u in users)
                problems.append(
                    f"port {host}:{port} is used twice ({names}); give each device its own port, "
                    "or distinct unit ids behind one site's gateway"
                )
        device_ids = {d.id for s in self.sites for d in s.devices}
        if self.simulation is not None:
            for dev in list(self.simulation.variants) + [f.device for f in self.simulation.faults]:
                if dev not in device_ids:
                    problems.append(f"simulation refers to unknown device '{dev}'")
            ports = {d.port for s in self.sites for d in s.devices}
            if self.simulation.control_port in ports:
                problems.append(f"simulation.control_port {self.simulation.control_port} is a device port")
        if self.broker is not None:
            problems += _broker_problems(self.broker, {s.id for s in self.sites})
        problems += external_problems(self.groups, self.pool, self.relay_inputs, {s.id for s in self.sites})
        if self.open_data.aggregate_by == "group" and not self.groups:
            problems.append("open_data.aggregate_by: 'group' needs a groups section; add groups or use 'district'")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def set_profiles_dir(self, folder: Path | None) -> None:
        """Use ``folder`` as the fleet's profiles folder, for every device's profile lookup."""
        if folder != self.profiles_dir:
            self.profiles_dir = folder
        for s in self.sites:
            for d in s.devices:
                d._profile_dirs = () if folder is None else (folder,)

    def site(self, site_id: str) -> SiteConfig:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"unknown site '{site_id}'")

    def devices(self) -> list[tuple[SiteConfig, DeviceConfig]]:
        return [(s, d) for s in self.sites for d in s.devices]

    def group(self, group_id: str) -> GroupConfig:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(f"unknown group '{group_id}'")


def _broker_problems(broker: BrokerConfig, site_ids: set[str]) -> list[str]:
    """Edges with unknown or shared sites, and edge ids used twice or as the central's username."""
    problems = []
    owner: dict[str, str] = {}
    seen: set[str] = set()
    for e in broker.edges:
        if e.id in seen or e.id == broker.username:
            problems.append(f"broker.edges: edge id '{e.id}' is used twice or is the central's username")
        seen.add(e.id)
        for sid in e.sites:
            if sid not in site_ids:
                problems.append(f"broker.edges[{e.id}].sites: unknown site '{sid}'")
            elif sid in owner:
                problems.append(f"broker.edges[{e.id}].sites: site '{sid}' is polled by edge '{owner[sid]}' already")
            owner[sid] = e.id
    return problems


class ConfigError(Exception):
    """A fleet file that cannot be used; ``errors`` holds one line per problem, each naming its path."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))


def _path_of(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic error location as ``sites[3].pv.kwp``, naming the site id where known."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            label = str(part)
            if isinstance(node, list) and 0 <= part < len(node) and isinstance(node[part], dict):
                ident = node[part].get("id")
                if ident is not None:
                    label = f"{part}:{ident}"
            out += f"[{label}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(file)"


def validate_config(data: Any, source: str = "config") -> FleetConfig:
    """Validate already-parsed YAML; raise ConfigError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(file): expected a mapping with a 'sites' section, got {type(data).__name__}"])
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, error_lines(exc, data)) from None


def error_lines(exc: ValidationError, data: Any) -> list[str]:
    """One ``path: message`` line per problem of a validation error of the document ``data``.

    Shared by every YAML file a user writes (fleet, scenario), so their errors read alike.
    """
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        for part in msg.split("\n"):
            lines.append(f"{_path_of(tuple(err['loc']), data)}: {part}")
    return lines


def load_config(path: str | Path) -> FleetConfig:
    """Read and validate a fleet YAML file; relative paths inside it resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"(file): not valid YAML: {exc}"]) from None
    cfg = validate_config(data, str(path))
    base = path.resolve().parent
    if cfg.profiles_dir is not None and not cfg.profiles_dir.is_absolute():
        cfg.set_profiles_dir(base / cfg.profiles_dir)
    if cfg.market.prices_csv is not None and not cfg.market.prices_csv.is_absolute():
        cfg.market.prices_csv = base / cfg.market.prices_csv
    if cfg.broker is not None:  # the broker's files, relative to the fleet file
        b = cfg.broker
        b.ca_file, b.password_file = (None if f is None else base / f for f in (b.ca_file, b.password_file))
        for e in b.edges:
            e.password_file = None if e.password_file is None else base / e.password_file
    for key in ("tls_cert_file", "tls_key_file"):
        tls_path = getattr(cfg.api, key)
        if tls_path is not None and not tls_path.is_absolute():
            setattr(cfg.api, key, base / tls_path)
    weather_csv = cfg.forecast.weather.csv
    if weather_csv is not None and not weather_csv.is_absolute():
        cfg.forecast.weather.csv = base / weather_csv
    if cfg.simulation and cfg.simulation.recorded_dir is not None and not cfg.simulation.recorded_dir.is_absolute():
        cfg.simulation.recorded_dir = base / cfg.simulation.recorded_dir
    if cfg.simulation and cfg.simulation.weather.irradiance_csv is not None:
        csv = cfg.simulation.weather.irradiance_csv
        if not csv.is_absolute():
            cfg.simulation.weather.irradiance_csv = base / csv
    return cfg


CONFIG_DIR = Path(__file__).resolve().parent
"""Where the shipped YAML lives (demo fleet, profiles, scenarios)."""
