"""The dataset generation config (``configs/dataset*.yaml``): load, validate, resolve and hash.

Validation happens here, at the boundary: an unknown key, a wrong type or an impossible value raises one
:class:`UserError` that names the key path (``splits.train: ...``). The physics sections (``params``,
``protocol``, ``image``) are checked against the physics dataclasses' own fields, so the two never drift.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from moirescale.errors import UserError
from moirescale.labels import LABELS, RANGES
from moirescale.limits import check_dataset
from moirescale.readback import load_yaml_mapping

# Per-sample seed = seed * SEED_STRIDE + split_index * SPLIT_STRIDE + i: disjoint, contiguous per shard.
SPLIT_STRIDE = 10**10
SEED_STRIDE = 10**11
MAX_BASE_SEED = (2**63 - 1) // SEED_STRIDE - 1  # keeps every sample seed inside int64

NonNegInt = Annotated[int, Field(strict=True, ge=0)]
PosInt = Annotated[int, Field(strict=True, ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Splits(_Strict):
    """Samples per split; each split has its own seed stream. A split may be 0."""

    train: NonNegInt = 114688
    val: NonNegInt = 14336
    test: NonNegInt = 28672

    @model_validator(mode="after")
    def _not_empty(self) -> Splits:
        if self.train + self.val + self.test == 0:
            raise ValueError("at least one split must have samples")
        if max(self.train, self.val, self.test) >= SPLIT_STRIDE:
            raise ValueError(f"a split may hold at most {SPLIT_STRIDE - 1} samples")
        return self


def _range(name: str) -> Any:
    return Field(default=RANGES[name], description=f"uniform sampling range of {name}")


class LabelRanges(_Strict):
    """Uniform sampling ranges of the labels (MODEL.md §5): theta in degrees, J and D in meV."""

    theta: tuple[float, float] = _range("theta")
    J: tuple[float, float] = _range("J")
    D: tuple[float, float] = _range("D")

    @field_validator("theta", "J", "D")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"need finite [low, high] with low <= high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _physical(self) -> LabelRanges:
        from moirescale.physics.lattice import THETA_MAX_DEG, THETA_MIN_DEG  # the simulator owns its range

        span = f"the simulator's range is {THETA_MIN_DEG:g}-{THETA_MAX_DEG:g}"
        if not self.theta[0] >= THETA_MIN_DEG:
            raise ValueError(f"theta: angles must be >= {THETA_MIN_DEG:g} degrees ({span})")
        if self.theta[1] > THETA_MAX_DEG:
            raise ValueError(f"theta: angles must be <= {THETA_MAX_DEG:g} degrees ({span})")
        if self.J[0] < 0 or self.D[0] < 0:
            raise ValueError("J and D ranges must be >= 0 meV")
        return self


class DatasetConfig(_Strict):
    """Everything that fixes a dataset's contents (and nothing that only changes how fast it is made)."""

    seed: NonNegInt = 0
    backend: str = "auto"  # the simulator back end (resolved, it is part of the identity of the data)
    cells_per_side: PosInt = 1
    shard_size: PosInt = 1024
    splits: Splits = Splits()
    labels: LabelRanges = LabelRanges()
    params: dict[str, Any] = Field(default_factory=dict)  # moirescale.physics.ModelParams fields
    protocol: dict[str, Any] = Field(default_factory=dict)  # moirescale.physics.AnnealProtocol fields
    image: dict[str, Any] = Field(default_factory=dict)  # moirescale.physics.ImageSpec fields
    jperp: dict[str, Any] = Field(default_factory=dict)  # moirescale.physics.JperpSpec fields (mode)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from moirescale.physics import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"must be one of {', '.join(BACKENDS)}, got {v!r}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed_fits(cls, v: int) -> int:
        if v > MAX_BASE_SEED:
            raise ValueError(f"seed must be <= {MAX_BASE_SEED}")
        return v


# Options that change only speed, allowed in the YAML beside the config (not hashed).
RUNTIME_KEYS = ("batch_size", "workers")


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc or '<top>'}: {msg}{more}"


def _resolve_section(name: str, cls: type, values: dict[str, Any], source: str) -> Any:
    """Build a physics dataclass from a config section: unknown keys and wrong types name the key path."""
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise UserError(f"{source}: {name}.{key}: unknown key (known: {', '.join(sorted(known))})")
    try:
        obj = TypeAdapter(cls).validate_python(dict(values))
    except ValidationError as exc:
        raise UserError(_format_error(exc, source).replace(f"{source}: ", f"{source}: {name}.", 1)) from None
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except UserError as exc:
            raise UserError(f"{source}: {name}: {exc}") from None
    return obj


def resolve_physics(cfg: DatasetConfig, source: str = "config") -> tuple[Any, Any, Any, Any]:
    """The (ModelParams, AnnealProtocol, ImageSpec, JperpSpec) a config describes, validated."""
    from moirescale.physics import AnnealProtocol, ImageSpec, JperpSpec, ModelParams

    params = _resolve_section("params", ModelParams, cfg.params, source)
    protocol = _resolve_section("protocol", AnnealProtocol, cfg.protocol, source)
    image = _resolve_section("image", ImageSpec, cfg.image, source)
    jperp = _resolve_section("jperp", JperpSpec, cfg.jperp, source)
    return params, protocol, image, jperp


# The dataset variants of MODEL.md §7 at their defaults. They are left out of the resolved config (and so
# of its hash) when at the default, so a store made before the variants existed keeps its identity.
VARIANT_DEFAULTS = {
    ("protocol", "start"): "seeded",
    ("image", "origin"): "random",
    ("jperp", "mode"): "scale",
}


def variant_of(resolved: dict[str, Any]) -> dict[str, str]:
    """The dataset variant of a resolved config (or a store manifest's ``config``): origin, start, jperp,
    channels, e.g. ``{"origin": "fixed", "start": "shared", "jperp": "scale", "channels": "net"}``."""
    get = {k: resolved.get(k[0], {}).get(k[1], v) for k, v in VARIANT_DEFAULTS.items()}
    return {
        "origin": get[("image", "origin")],
        "start": get[("protocol", "start")],
        "jperp": get[("jperp", "mode")],
        "channels": ",".join(resolved.get("image", {}).get("channels", ["top", "bottom"])),
    }


def resolved_dict(cfg: DatasetConfig) -> dict[str, Any]:
    """The config with every physics default filled in: what is hashed and written to the manifest."""
    params, protocol, image, jperp = resolve_physics(cfg)
    from moirescale.physics import resolve_backend

    d = cfg.model_dump(mode="json")
    # "auto" picks torch on a GPU and numba elsewhere; their floats differ, so the data's identity is the
    # back end actually used (a store begun on one kind of machine is not silently finished on another).
    d["backend"] = resolve_backend(cfg.backend)
    d["params"] = dataclasses.asdict(params)
    d["protocol"] = dataclasses.asdict(protocol)
    d["image"] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(image).items()}
    d["labels"] = {k: list(d["labels"][k]) for k in LABELS}
    d["jperp"] = dataclasses.asdict(jperp)
    for (section, key), default in VARIANT_DEFAULTS.items():
        if d[section].get(key) == default:
            del d[section][key]
    if not d["jperp"]:
        del d["jperp"]
    return d


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config."""
    from moirescale.data.store import canonical_json

    return hashlib.sha256(canonical_json(resolved).encode()).hexdigest()


def validate_config(raw: Any, source: str = "config") -> DatasetConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`DatasetConfig`, physics sections included."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if k not in RUNTIME_KEYS}
    try:
        cfg = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_error(exc, source)) from None
    _, protocol, image, _ = resolve_physics(cfg, source)
    try:
        check_dataset(cfg.splits.model_dump(), cfg.shard_size, cfg.labels.theta[0], cfg.cells_per_side,
                      protocol.n_anneal + protocol.n_zero, image.size_px, image.supersample,
                      len(image.channels))
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return cfg


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[DatasetConfig, dict[str, Any]]:
    """Read a dataset YAML, apply command-line ``overrides`` (dotted keys such as ``splits.train``).

    Returns
    -------
    (config, runtime) : the validated config and the speed-only options (``batch_size``, ``workers``).
    """
    path = Path(path)
    # Bounded (size, nesting, aliases), duplicate keys refused, and an empty file is not "all defaults".
    raw, _ = load_yaml_mapping(path, "dataset config")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{path}: {p}: expected a mapping")
        node[leaf] = value
    runtime = {k: raw.get(k) for k in RUNTIME_KEYS}
    if runtime["batch_size"] is not None and (
        not isinstance(runtime["batch_size"], int)
        or isinstance(runtime["batch_size"], bool)
        or runtime["batch_size"] < 1
    ):
        raise UserError(f"{path}: batch_size: must be a positive integer")
    return validate_config(raw, str(path)), runtime
