"""The simulator's knobs: attrs frozen classes, the three named profiles, and config files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs

from flowtel._errors import ConfigError

#: Timestamp formats of contract §4. Lossy ones (whole seconds) are only used for instants
#: that are whole seconds, so every value sent represents the canonical instant exactly.
FORMATS = (
    "ms",  # 1769541612369
    "iso_z",  # "2026-01-27T19:19:13.629Z"
    "seconds",  # 1769541612            (lossy)
    "ms_string",  # "1769541612369"
    "seconds_string",  # "1769541612"     (lossy)
    "space",  # "2026-01-27 19:19:13"     (lossy)
    "no_zone",  # "2026-01-27T19:19:13.629" (UTC)
    "offset",  # "2026-01-27T21:19:13.629+02:00"
    "stray",  # "\u200b2026-01-27T19:19:13.629Z\t" and similar
)
LOSSY_FORMATS = frozenset({"seconds", "seconds_string", "space"})


@attrs.frozen
class Window:
    """A fixed window: at most `limit` requests per `window_s`, anchored at the first one.

    `limit = 0` means no limit.
    """

    limit: int = 0
    window_s: float = 60.0


@attrs.frozen
class Latency:
    """Delay of an answer: uniform `base_s` plus uniform `per_event_s` per event served.

    `capacity` is how many answers may be generated at once (0 = unbounded); more wait in line.
    """

    base_s: tuple[float, float] = (0.0, 0.0)
    per_event_s: tuple[float, float] = (0.0, 0.0)
    capacity: int = 0


@attrs.frozen
class Faults:
    """Per-request probabilities of each fault kind (transport faults are exclusive)."""

    status_502: float = 0.0
    status_503: float = 0.0
    status_504: float = 0.0
    truncated: float = 0.0  # 200 whose JSON body is cut off (valid HTTP, bad JSON)
    empty: float = 0.0  # 200 with an empty body
    non_object: float = 0.0  # 200 whose body is `[]` or `"ok"`
    dropped: float = 0.0  # connection closed mid-response
    slow: float = 0.0  # answer delayed by `slow_s` more
    rate_limited: float = 0.0  # a spurious 429 (used by the token endpoint)
    slow_s: tuple[float, float] = (2.0, 6.0)
    # Data faults (per page).
    missing_fields: float = 0.0  # drop / null fields of some events, X-Chaos-Applied
    missing_fields_share: float = 0.01  # share of a page's events hit (at least one)
    repeated: float = 0.0  # include a few events of the previous page
    repeated_count: tuple[int, int] = (1, 5)
    omitted: float = 0.0  # the bulk endpoint: share of the asked ids left out of an answer

    def transport_kinds(self) -> list[tuple[str, float]]:
        return [
            ("status_502", self.status_502),
            ("status_503", self.status_503),
            ("status_504", self.status_504),
            ("truncated", self.truncated),
            ("empty", self.empty),
            ("non_object", self.non_object),
            ("dropped", self.dropped),
            ("slow", self.slow),
            ("rate_limited", self.rate_limited),
        ]


@attrs.frozen
class Endpoint:
    """Rules of one endpoint."""

    window: Window = Window()
    latency: Latency = Latency()
    faults: Faults = Faults()
    #: Relative weights of the timestamp formats (keys from FORMATS).
    formats: dict[str, float] = attrs.field(factory=lambda: {"ms": 1.0})


@attrs.frozen
class SimulatorConfig:
    profile: str = "fast"
    events: int = 3_000_000
    seed: int = 1
    api_key: str | None = None
    base_url: str = "http://simulator.test"
    # Dataset shape.
    newest_ms: int = 1_769_541_613_000  # 2026-01-27T19:20:13Z
    mean_gap_ms: float = 864.0  # 3M events over 30 days
    tie_share: float = 0.05  # share of events sharing the previous event's instant
    whole_second_share: float = 0.3  # share of instants that are whole seconds
    users: int | None = None  # default: 3,000 per 3M events
    sessions: int | None = None  # default: 60,000 per 3M events
    # Listing (/api/v1/events).
    max_limit: int = 5000
    default_limit: int = 100
    cursor_lifetime_s: tuple[int, int] = (116, 119)
    listing: Endpoint = Endpoint()
    # Other endpoints.
    # /internal/stats reports totals and counts by type (the contract); the data's time range
    # only if this is set, as a server might: a client must be fast either way.
    stats_time_range: bool = False
    sessions_window: Window = Window()
    token: Endpoint = Endpoint()
    token_lifetime_s: int = 300
    token_header: str = "X-Stream-Token"
    feed_path: str = "/api/v1/events/d4ta/x7k9/feed"
    feed: Endpoint = Endpoint()
    max_submissions: int = 5
    # POST /api/v1/events/bulk: "unreliable", the contract says. Whether it spends the
    # listing's budget, as GET /api/v1/events/<id> does, it does not say: a client must notice.
    max_bulk_ids: int = 100
    bulk: Endpoint = Endpoint()
    bulk_in_listing_budget: bool = False


_NO_FAULTS = Faults()

_LIVE = SimulatorConfig(
    profile="live",
    seed=1,
    listing=Endpoint(
        window=Window(10, 60.0),
        latency=Latency(base_s=(0.05, 0.25), per_event_s=(0.0, 0.0)),
        faults=Faults(
            status_502=0.005,
            status_503=0.003,
            status_504=0.002,
            truncated=0.003,
            empty=0.001,
            non_object=0.001,
            dropped=0.002,
            slow=0.01,
            repeated=0.01,
        ),
        formats={"ms": 1.0, "iso_z": 2.0},
    ),
    sessions_window=Window(40, 60.0),
    token=Endpoint(faults=Faults(status_502=0.05, rate_limited=0.05)),
    feed=Endpoint(
        window=Window(40, 60.0),
        latency=Latency(base_s=(0.3, 0.5), per_event_s=(0.00064, 0.0011), capacity=6),
        faults=Faults(
            status_502=0.01,
            status_503=0.005,
            status_504=0.005,
            truncated=0.005,
            empty=0.002,
            non_object=0.002,
            dropped=0.005,
            slow=0.01,
            missing_fields=0.05,
            repeated=0.01,
        ),
        formats={"ms": 1.0},
    ),
    bulk=Endpoint(
        latency=Latency(base_s=(0.05, 0.3)),
        faults=Faults(
            status_502=0.02,
            status_503=0.01,
            status_504=0.01,
            truncated=0.01,
            dropped=0.01,
            slow=0.01,
            missing_fields=0.05,
            missing_fields_share=0.05,
            omitted=0.02,
        ),
    ),
)

_FAST = SimulatorConfig(
    profile="fast",
    seed=1,
    listing=Endpoint(formats={"ms": 1.0, "iso_z": 2.0}),
    feed=Endpoint(formats={"ms": 1.0}),
)

_CHAOS_FAULTS = Faults(
    status_502=0.04,
    status_503=0.03,
    status_504=0.03,
    truncated=0.04,
    empty=0.02,
    non_object=0.02,
    dropped=0.03,
    slow=0.03,
    slow_s=(1.0, 4.0),
    missing_fields=0.2,
    missing_fields_share=0.02,
    repeated=0.15,
)
_ALL_FORMATS = {name: 1.0 for name in FORMATS}

_CHAOS = SimulatorConfig(
    profile="chaos",
    events=20_000,
    seed=13,
    tie_share=0.15,
    whole_second_share=0.5,
    cursor_lifetime_s=(20, 23),
    token_lifetime_s=30,
    listing=Endpoint(
        window=Window(7, 13.0),
        latency=Latency(base_s=(0.0, 0.3)),
        faults=_CHAOS_FAULTS,
        formats=_ALL_FORMATS,
    ),
    sessions_window=Window(7, 13.0),
    token=Endpoint(faults=Faults(status_502=0.15, rate_limited=0.15)),
    feed=Endpoint(
        window=Window(11, 17.0),
        latency=Latency(base_s=(0.1, 0.5), per_event_s=(0.0002, 0.0006), capacity=3),
        faults=_CHAOS_FAULTS,
        formats=_ALL_FORMATS,
    ),
    bulk=Endpoint(
        latency=Latency(base_s=(0.0, 0.2)), faults=attrs.evolve(_CHAOS_FAULTS, omitted=0.1)
    ),
)

PROFILES: dict[str, SimulatorConfig] = {"live": _LIVE, "fast": _FAST, "chaos": _CHAOS}

_converter = cattrs.Converter(forbid_extra_keys=True)


def profile(name: str) -> SimulatorConfig:
    """The named profile: "live", "fast" or "chaos"."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown simulator profile {name!r} (choose from {', '.join(PROFILES)})"
        ) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "formats":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_mapping(data: dict[str, Any], default_profile: str = "live") -> SimulatorConfig:
    """A config from a mapping of knobs laid over the profile named by its `profile` key."""
    name = str(data.get("profile", default_profile))
    base = _converter.unstructure(profile(name))
    try:
        cfg = _converter.structure(_merge(base, data), SimulatorConfig)
    except Exception as exc:  # cattrs raises ClassValidationError groups
        detail = "; ".join(str(e) for e in getattr(exc, "exceptions", [exc])) or type(exc).__name__
        raise ConfigError(f"bad simulator config: {detail}") from None
    validate(cfg)
    return cfg


def load_config(path: str | Path) -> SimulatorConfig:
    """Read a JSON or TOML file of knobs (any of them) laid over a named profile."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read simulator config {str(p)!r}: {exc.strerror}") from None
    data: Any
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse simulator config {str(p)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"simulator config {str(p)!r} must hold a table / object")
    return config_from_mapping(data)


def validate(cfg: SimulatorConfig) -> None:
    if cfg.events < 1:
        raise ConfigError("simulator events must be at least 1")
    if cfg.max_limit < 1 or cfg.default_limit < 1:
        raise ConfigError("simulator limits must be at least 1")
    for ep in (cfg.listing, cfg.feed):
        unknown = set(ep.formats) - set(FORMATS)
        if unknown:
            raise ConfigError(f"unknown timestamp formats {sorted(unknown)}")
        if not any(w > 0 for w in ep.formats.values()):
            raise ConfigError("timestamp format weights must not all be zero")
    if cfg.api_key is not None and not cfg.api_key:
        raise ConfigError("simulator api_key must not be empty")
