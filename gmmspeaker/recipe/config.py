"""Recipe files: YAML (safe loading only) -> validated, frozen dataclasses.

A recipe is data. Paths inside it are relative to the file that names them;
``${VAR}`` in a path is replaced by the environment variable ``VAR``, and ``${RECIPE_DIR}``
by the folder of the recipe file (the one loaded, also inside its defaults files), so a
list kept beside the recipe can be named under a ``data.root`` elsewhere. A recipe may name
``defaults:`` (one file or a list), recipe-shaped YAML files merged underneath it, section by
section. Unknown keys, wrong types, out-of-range values and missing files are
:class:`~gmmspeaker.errors.ConfigError` naming the file, the key and the line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmmspeaker._typing import PathLike
from gmmspeaker.errors import ConfigError
from gmmspeaker.gmm.model import PARAM_CONSTRAINTS
from gmmspeaker.systems import SYSTEMS as _SYSTEM_REGISTRY

__all__ = [
    "Recipe",
    "DataConfig",
    "UbmConfig",
    "MapConfig",
    "ScoringConfig",
    "EvaluationConfig",
    "IvectorConfig",
    "IsvConfig",
    "FusionConfig",
    "load_recipe",
    "load_yaml_with_defaults",
    "STAGES",
    "SYSTEMS",
]

STAGES = (
    "features",
    "ubm",
    "enroll",
    "score",
    "statistics",
    "tv",
    "extract",
    "backend",
    "isv_train",
    "isv_enroll",
    "isv_score",
    "fusion",
    "evaluate",
    "short_enrolment",
)
#: Recognition systems a recipe's ``system:`` may name: the trained-system registry
#: (:data:`gmmspeaker.systems.SYSTEMS`).
SYSTEMS = tuple(_SYSTEM_REGISTRY)

#: The recipe's dataclass sections (``features`` is a plain mapping checked by FeatureConfig).
SECTIONS = ("data", "ubm", "map", "scoring", "evaluation", "ivector", "isv", "fusion")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Where:
    """Line numbers of every key path in the YAML files of a recipe."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, ...], tuple[str, int]] = {}

    def at(self, *keys: str) -> str:
        for n in range(len(keys), 0, -1):
            hit = self.lines.get(tuple(keys[:n]))
            if hit is not None:
                return f"{hit[0]}:{hit[1]}"
        hit = self.lines.get(())
        return hit[0] if hit else "<recipe>"


def load_yaml(path: Path, where: Where) -> dict[str, Any]:
    """A YAML mapping read safely; line numbers recorded in ``where``; ConfigError naming the file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = _text_line(path, exc.start)
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the recipe as UTF-8"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: broken YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a recipe must be a mapping of sections, found {type(data).__name__}")

    def walk(n: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in n.value:
                key = str(k.value)
                if key in first and key != "<<":
                    raise ConfigError(
                        f"{path}:{k.start_mark.line + 1}: duplicate key '{'.'.join(prefix + (key,))}' "
                        f"(first at line {first[key]}); YAML would silently keep only the last"
                    )
                first[key] = k.start_mark.line + 1
                where.lines.setdefault(prefix + (key,), (str(path), k.start_mark.line + 1))
                walk(v, prefix + (key,))

    where.lines.setdefault((), (str(path), 1))
    walk(node, ())
    return data


def _text_line(path: Path, offset: int) -> int:
    """The 1-based line of byte ``offset`` of a file (for messages about undecodable bytes)."""
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return 1


def _check_values(kwargs: dict[str, Any], where: Where) -> None:
    """Checks across keys, or of values no type rule covers, at load (not after the expensive stages)."""
    name = str(kwargs["experiment"])
    if not name.strip("."):
        raise ConfigError(
            f"{where.at('experiment')}: 'experiment' must be a plain name, not {name!r} "
            "(it names the folder exp/<experiment>)"
        )
    if kwargs.get("seed", 0) < 0:
        raise ConfigError(f"{where.at('seed')}: 'seed' must be a non-negative integer, got {kwargs['seed']}")
    ev, mp, sc = kwargs["evaluation"], kwargs["map"], kwargs["scoring"]
    for key in ("c_miss", "c_fa"):
        if getattr(ev, key) <= 0:
            raise ConfigError(
                f"{where.at('evaluation', key)}: 'evaluation.{key}' must be positive, got {getattr(ev, key)}"
            )
    if not ev.p_target:
        raise ConfigError(
            f"{where.at('evaluation', 'p_target')}: 'evaluation.p_target' must name at least one value"
        )
    if not mp.adapt:
        raise ConfigError(
            f"{where.at('map', 'adapt')}: 'map.adapt' must name at least one of means, weights, variances"
        )
    if sc.method == "linear" and set(mp.adapt) != {"means"}:
        raise ConfigError(
            f"{where.at('scoring', 'method')}: scoring.method linear needs mean-only models "
            f"(map.adapt: [means], got {list(mp.adapt)}); use method full or top_c"
        )


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _expand(value: str, where: str, recipe_dir: Path) -> str:
    """``${RECIPE_DIR}`` -> the recipe file's folder, other ``${VAR}`` -> the environment variable."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "RECIPE_DIR":
            return str(recipe_dir)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _ENV.sub(sub, value)


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """``data:``: where the audio and the protocol lists are.

    root : corpus folder that list paths are relative to (default: the recipe's folder).
    ubm, enroll, trials : protocol lists (see :mod:`gmmspeaker.corpora.lists`).
    synthetic : generate the synthetic corpus (keys of ``SyntheticCorpusConfig``) into
        ``<workdir>/corpus`` and use its lists; then root/ubm/enroll/trials are not given.
    cohort : optional list of cohort utterances (one path per line) for score normalisation.
    dev_trials : optional development trial list (same models, keyed) to train a linear
        calibration that the evaluate stage applies to the trials' scores.
    resample : resample audio whose rate differs from ``features.sample_rate``.
    train : speaker-labelled training list (``path speaker`` per line) for the i-vector
        system's T matrix, LDA and PLDA.
    content_check : also hash every audio file (SHA-256) on each run and recompute the
        features of a file whose bytes changed; by default a file counts as unchanged while
        its size, times and inode are (see :func:`gmmspeaker.store.source_signature`).
    channel : which channel of multi-channel audio the features describe: 0 = the first
        (left), 1 = the second, ...; ``mix`` averages the channels; by default they are
        averaged with a warning naming the files. A file without that channel is bad
        audio (see ``on_bad_audio``); changing it recomputes the features.
    """

    root: Path | None = None
    ubm: Path | None = None
    enroll: Path | None = None
    trials: Path | None = None
    cohort: Path | None = None
    dev_trials: Path | None = None
    synthetic: dict[str, Any] | None = None
    resample: bool = False
    train: Path | None = None
    content_check: bool = False
    channel: int | str | None = None


@dataclass(frozen=True, kw_only=True)
class UbmConfig:
    """``ubm:``: the universal background model (a diagonal GMM trained by EM)."""

    components: int = 64
    iterations: int = 10
    init: str = "split"
    variance_floor: float = 1e-3
    tol: float | None = None
    n_init: int = 1
    dtype: str = "float32"
    chunk_frames: int = 20_000
    max_frames: int | None = None
    parts: int = 8
    subsample: int = 5


@dataclass(frozen=True, kw_only=True)
class MapConfig:
    """``map:``: MAP adaptation of the UBM to each enrolled speaker."""

    relevance: float = 16.0
    adapt: tuple[str, ...] = ("means",)


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """``scoring:``: log-likelihood-ratio scoring of the trials."""

    method: str = "top_c"
    top_c: int = 5
    normalization: str = "none"
    cohort_top_n: int = 200


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """``evaluation:``: metrics and plots."""

    p_target: tuple[float, ...] = (0.01, 0.001)
    c_miss: float = 1.0
    c_fa: float = 1.0
    det_plot: bool = True
    calibration_p_target: float = 0.5
    identification: bool = False


@dataclass(frozen=True, kw_only=True)
class IvectorConfig:
    """``ivector:``: total-variability model, back end (LDA, WCCN, length norm) and scoring."""

    rank: int = 400
    iterations: int = 10
    min_divergence: bool = True
    batch_size: int = 256
    lda_dim: int | None = None
    wccn: bool = True
    length_norm: bool = True
    scoring: str = "plda"
    plda_iterations: int = 10
    normalization: str = "none"
    cohort_top_n: int = 200


@dataclass(frozen=True, kw_only=True)
class IsvConfig:
    """``isv:``: inter-session variability (session subspace U, speaker offsets, linear scoring).

    ``rank`` is R_u (0: relevance MAP with linear scoring), ``relevance`` the r of
    ``D^2 = Sigma / r``; ``iterations``, ``min_divergence`` and ``batch_size`` as for the
    T matrix. Scores are normalised with the cohort like the GMM-UBM's.
    """

    rank: int = 50
    relevance: float = 16.0
    iterations: int = 10
    min_divergence: bool = True
    batch_size: int = 256
    normalization: str = "none"
    cohort_top_n: int = 200


@dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """``fusion:``: how the systems' scores are fused when ``system`` names several."""

    p_target: float = 0.5


_SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "ubm": UbmConfig,
    "map": MapConfig,
    "scoring": ScoringConfig,
    "evaluation": EvaluationConfig,
    "ivector": IvectorConfig,
    "isv": IsvConfig,
    "fusion": FusionConfig,
}

#: ``ubm:`` keys and the GaussianMixture parameter each sets: their values are checked
#: against ``gmmspeaker.gmm.model.PARAM_CONSTRAINTS``, the table the model itself uses.
_UBM_PARAMS = {
    "components": "n_components",
    "iterations": "max_iter",
    "init": "init",
    "variance_floor": "variance_floor",
    "tol": "tol",
    "n_init": "n_init",
    "dtype": "dtype",
    "chunk_frames": "chunk_size",
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("scoring", "method"): ("full", "top_c", "linear"),
    ("scoring", "normalization"): ("none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"),
    ("top", "backend"): ("loky", "threading", "dask"),
    ("top", "on_bad_audio"): ("error", "skip"),
    ("ivector", "scoring"): ("plda", "cosine"),
    ("ivector", "normalization"): ("none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"),
    ("isv", "normalization"): ("none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"),
}
_POSITIVE = {
    ("ubm", "parts"),
    ("ubm", "subsample"),
    ("scoring", "top_c"),
    ("ubm", "max_frames"),
    ("scoring", "cohort_top_n"),
    ("ivector", "rank"),
    ("ivector", "iterations"),
    ("ivector", "batch_size"),
    ("ivector", "lda_dim"),
    ("ivector", "cohort_top_n"),
    ("isv", "iterations"),
    ("isv", "batch_size"),
    ("isv", "cohort_top_n"),
    ("isv", "relevance"),
}
_NONNEG = {
    ("map", "relevance"),
    ("evaluation", "c_miss"),
    ("evaluation", "c_fa"),
    ("ivector", "plda_iterations"),
    ("isv", "rank"),
}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated recipe. Build one with :func:`load_recipe`."""

    path: Path
    experiment: str
    seed: int = 0
    jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    on_bad_audio: str = "error"
    data: DataConfig = field(default_factory=DataConfig)
    features: dict[str, Any] = field(default_factory=dict)
    ubm: UbmConfig = field(default_factory=UbmConfig)
    map: MapConfig = field(default_factory=MapConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    system: tuple[str, ...] = ("gmm_ubm",)
    ivector: IvectorConfig = field(default_factory=IvectorConfig)
    isv: IsvConfig = field(default_factory=IsvConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain JSON-able data (for fingerprints and saved options)."""
        value = getattr(self, name)
        if dataclasses.is_dataclass(value):
            return {
                k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(value).items()
            }
        return dict(value)

    def to_dict(self) -> dict[str, Any]:
        """The whole resolved recipe as JSON-able data (what ``<workdir>/recipe.json`` keeps).

        :meth:`from_dict` reads it back: ``Recipe.from_dict(r.to_dict()) == r``.

        Returns
        -------
        dict
            ``path``, ``experiment``, ``seed``, ``jobs``, ``backend``, ``scheduler``,
            ``on_bad_audio``, ``system`` and every section (``data`` paths as strings).
        """
        out: dict[str, Any] = {"path": str(self.path)}
        for f in dataclasses.fields(self):
            if f.name == "path":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
            if f.name in SECTIONS:
                out[f.name] = self.section(f.name)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """The recipe :meth:`to_dict` wrote (already validated when it was loaded).

        Raises
        ------
        ConfigError
            A key this version does not know, or a section that is not a mapping.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"resolved recipe: unknown key(s) {unknown}")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            typ = str(known[name].type)
            if name in _SECTION_CLASSES:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"resolved recipe: section '{name}' must be a mapping")
                sec = _SECTION_CLASSES[name]
                fields = {f.name: str(f.type) for f in dataclasses.fields(sec)}
                bad = sorted(set(value) - set(fields))
                if bad:
                    raise ConfigError(f"resolved recipe: unknown key(s) {bad} in section '{name}'")
                kwargs[name] = sec(**{k: _from_json(v, fields[k]) for k, v in value.items()})
            elif name == "features":
                kwargs[name] = dict(value)
            else:
                kwargs[name] = _from_json(value, typ)
        return cls(**kwargs)


def _from_json(value: Any, typ: str) -> Any:
    """A JSON value back to the dataclass field type named by ``typ`` (Path, tuple)."""
    if value is None:
        return None
    if typ.startswith("Path"):
        return Path(value)
    if typ.startswith("tuple"):
        return tuple(value)
    return value


def _check_type(value: Any, typ: Any, where: str, key: str) -> Any:
    """Coerce/validate a YAML scalar against a dataclass field annotation (as a string)."""
    t = str(typ)
    optional = "None" in t
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: '{key}' must not be empty")
    if t.startswith("tuple"):
        inner = float if "float" in t else str
        items = value if isinstance(value, list) else [value]
        try:
            return tuple(_check_type(v, inner.__name__, where, key) for v in items)
        except ConfigError:
            raise ConfigError(f"{where}: '{key}' must be a list of {inner.__name__}, got {value!r}") from None
    if t.startswith("int | str"):  # a channel: an index from 0, or "mix"
        if value == "mix" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ConfigError(f"{where}: '{key}' must be a channel number (0 = first) or mix, got {value!r}")
    if t.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if t.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        return float(value)
    if t.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return value
    if t.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return value
    if t.startswith("Path"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a path string, got {value!r}")
        return value
    return value


def _build(cls: type, section: str, raw: Any, where: Where) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where.at(section)}: section '{section}' must be a mapping, got {type(raw).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        loc = where.at(section, str(key))
        if key not in fields:
            raise ConfigError(f"{loc}: unknown key '{section}.{key}' (known: {', '.join(sorted(fields))})")
        v = _check_type(value, fields[key].type, loc, f"{section}.{key}")
        if section == "ubm" and key in _UBM_PARAMS and v is not None:
            problem = PARAM_CONSTRAINTS[_UBM_PARAMS[key]].problem(v)
            if problem is not None:
                raise ConfigError(f"{loc}: '{section}.{key}' {problem}, got {v!r}")
        choices = _CHOICES.get((section, key))
        if choices is not None and v not in choices:
            raise ConfigError(f"{loc}: '{section}.{key}' must be one of {', '.join(choices)}, got {v!r}")
        if (section, key) in _POSITIVE and v is not None and v <= 0:
            raise ConfigError(f"{loc}: '{section}.{key}' must be positive, got {v!r}")
        if (section, key) in _NONNEG and v is not None and v < 0:
            raise ConfigError(f"{loc}: '{section}.{key}' must not be negative, got {v!r}")
        kwargs[key] = v
    return cls(**kwargs), kwargs


def load_recipe(path: PathLike, *, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read, merge and validate a recipe file.

    Parameters
    ----------
    path : path-like
        The recipe YAML.
    overrides : mapping, optional
        Top-level values that win over the file (e.g. ``{"jobs": 2}`` from ``--jobs``).

    Raises
    ------
    ConfigError
        Naming the file, the key and the line of the first problem found.
    """
    rpath = Path(path).resolve()
    where = Where()
    raw = _load_with_defaults(rpath, where, rpath.parent, ())
    if overrides:
        raw = _merge(raw, {k: v for k, v in overrides.items() if v is not None})

    top_fields = {f.name for f in dataclasses.fields(Recipe)} - {"path"}
    for key in raw:
        if key not in top_fields:
            raise ConfigError(
                f"{where.at(str(key))}: unknown key '{key}' (known: defaults, {', '.join(sorted(top_fields))})"
            )
    if "experiment" not in raw:
        raw["experiment"] = rpath.stem
    kwargs: dict[str, Any] = {"path": rpath}
    for key in ("experiment", "seed", "jobs", "backend", "scheduler", "on_bad_audio"):
        if key in raw:
            ftype = next(f.type for f in dataclasses.fields(Recipe) if f.name == key)
            v = _check_type(raw[key], ftype, where.at(key), key)
            choices = _CHOICES.get(("top", key))
            if choices is not None and v not in choices:
                raise ConfigError(f"{where.at(key)}: '{key}' must be one of {', '.join(choices)}, got {v!r}")
            kwargs[key] = v
    if kwargs.get("jobs", 1) == 0 or kwargs.get("jobs", 1) < -1:
        raise ConfigError(
            f"{where.at('jobs')}: 'jobs' must be a positive number of workers or -1 (all cores)"
        )
    if not re.fullmatch(r"[A-Za-z0-9._-]+", str(kwargs["experiment"])):
        raise ConfigError(
            f"{where.at('experiment')}: 'experiment' must be a plain name (letters, digits, . _ -), got {kwargs['experiment']!r}"
        )
    if kwargs.get("backend") == "dask" and not kwargs.get("scheduler"):
        raise ConfigError(
            f"{where.at('backend')}: backend: dask needs 'scheduler: tcp://host:port' (or 'local')"
        )

    data, data_raw = _build(DataConfig, "data", raw.get("data"), where)
    data = _resolve_data(data, data_raw, rpath.parent, where)
    if data.synthetic is not None:
        from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig

        try:
            SyntheticCorpusConfig.from_dict(data.synthetic)
        except ConfigError as exc:
            m = re.search(r"'([A-Za-z_]+)'", str(exc))
            loc = where.at("data", "synthetic", m.group(1)) if m else where.at("data", "synthetic")
            raise ConfigError(f"{loc}: data.synthetic: {exc}") from None
    kwargs["data"] = data
    feats = raw.get("features") or {}
    if not isinstance(feats, dict):
        raise ConfigError(f"{where.at('features')}: section 'features' must be a mapping")
    try:
        from gmmspeaker.features import FeatureConfig

        FeatureConfig.from_dict(feats, source=where.at("features"))
    except ConfigError as exc:
        msg = str(exc)
        m = re.search(r"'([A-Za-z_]+)'", msg)
        if m and ("features", m.group(1)) in where.lines and where.at("features", m.group(1)) not in msg:
            raise ConfigError(f"{where.at('features', m.group(1))}: {msg}") from None
        raise
    kwargs["features"] = dict(feats)
    for name, cls in (
        ("ubm", UbmConfig),
        ("map", MapConfig),
        ("scoring", ScoringConfig),
        ("evaluation", EvaluationConfig),
        ("ivector", IvectorConfig),
        ("isv", IsvConfig),
        ("fusion", FusionConfig),
    ):
        kwargs[name], _ = _build(cls, name, raw.get(name), where)
    kwargs["system"] = _check_system(raw.get("system", "gmm_ubm"), where)
    if not 0.0 < kwargs["fusion"].p_target < 1.0:
        raise ConfigError(f"{where.at('fusion', 'p_target')}: 'fusion.p_target' must be in (0, 1)")
    for a in kwargs["map"].adapt:
        if a not in ("means", "weights", "variances"):
            raise ConfigError(
                f"{where.at('map', 'adapt')}: 'map.adapt' items must be means, weights or variances, got {a!r}"
            )
    if not 0.0 < kwargs["evaluation"].calibration_p_target < 1.0:
        raise ConfigError(
            f"{where.at('evaluation', 'calibration_p_target')}: 'evaluation.calibration_p_target' must be in (0, 1)"
        )
    for p in kwargs["evaluation"].p_target:
        if not 0.0 < p < 1.0:
            raise ConfigError(
                f"{where.at('evaluation', 'p_target')}: 'evaluation.p_target' values must be in (0, 1), got {p}"
            )
    _check_values(kwargs, where)
    recipe = Recipe(**kwargs)
    if recipe.scoring.normalization != "none" and recipe.data.cohort is None:
        raise ConfigError(
            f"{where.at('scoring', 'normalization')}: score normalisation needs a cohort list (data.cohort)"
        )
    if "ivector" in recipe.system:
        if recipe.ivector.normalization != "none" and recipe.data.cohort is None:
            raise ConfigError(
                f"{where.at('ivector', 'normalization')}: i-vector score normalisation needs a cohort list (data.cohort)"
            )
        if recipe.data.synthetic is None and recipe.data.train is None:
            raise ConfigError(
                f"{where.at('system')}: the ivector system needs data.train, a speaker-labelled list "
                "('path speaker' per line) for the T matrix and the back end"
            )
    if "isv" in recipe.system:
        if recipe.isv.normalization != "none" and recipe.data.cohort is None:
            raise ConfigError(
                f"{where.at('isv', 'normalization')}: ISV score normalisation needs a cohort list (data.cohort)"
            )
        if recipe.data.synthetic is None and recipe.data.train is None:
            raise ConfigError(
                f"{where.at('system')}: the isv system needs data.train, a speaker-labelled list "
                "('path speaker' per line) for the session subspace U"
            )
    return recipe


def load_yaml_with_defaults(path: PathLike) -> dict[str, Any]:
    """Read a recipe-shaped YAML file with its ``defaults:`` merged underneath, unvalidated.

    The same loading as :func:`load_recipe` (safe YAML, ``defaults:`` resolved relative to
    each file, broken YAML and missing files as :class:`~gmmspeaker.errors.ConfigError`
    naming the file and line) without checking the sections, so a caller can take the
    part it needs (e.g. ``features:``).

    Parameters
    ----------
    path : path-like
        The YAML file.

    Returns
    -------
    dict
        The merged mapping, without the ``defaults`` key.
    """
    rpath = Path(path).resolve()
    return _load_with_defaults(rpath, Where(), rpath.parent, ())


def _check_system(value: Any, where: Where) -> tuple[str, ...]:
    """``system:``: one name or a list of distinct names from :data:`SYSTEMS`."""
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(v, str) or v not in SYSTEMS for v in items):
        raise ConfigError(
            f"{where.at('system')}: 'system' must be one of {', '.join(SYSTEMS)} or a list of them, got {value!r}"
        )
    if len(set(items)) != len(items):
        raise ConfigError(f"{where.at('system')}: 'system' names a system twice: {value!r}")
    return tuple(items)


def _load_with_defaults(
    path: Path, where: Where, recipe_dir: Path, chain: tuple[Path, ...]
) -> dict[str, Any]:
    """Load ``path`` with its ``defaults:`` (recursively) merged underneath it."""
    if path in chain:
        raise ConfigError(f"{path}: defaults include each other in a loop")
    own = Where()
    raw = load_yaml(path, own)
    for k, v in own.lines.items():
        where.lines.setdefault(k, v)
    if chain:  # a defaults file: its relative data paths are relative to itself
        raw = _rebase_paths(raw, path.parent, recipe_dir)
    defaults = raw.pop("defaults", None)
    if defaults is None:
        return raw
    names = defaults if isinstance(defaults, list) else [defaults]
    merged: dict[str, Any] = {}
    for name in names:
        loc = own.at("defaults")
        if not isinstance(name, str):
            raise ConfigError(f"{loc}: 'defaults' must be a path or a list of paths")
        dpath = (path.parent / _expand(name, loc, recipe_dir)).resolve()
        if not dpath.is_file():
            raise ConfigError(f"{loc}: defaults file {dpath} not found")
        merged = _merge(merged, _load_with_defaults(dpath, where, recipe_dir, chain + (path,)))
    return _merge(merged, raw)


def _rebase_paths(raw: dict[str, Any], from_dir: Path, to_dir: Path) -> dict[str, Any]:
    """Make a defaults file's relative ``data.root`` absolute (it is relative to that file).

    The lists (ubm, enroll, trials, cohort) stay relative to the root, as in a recipe."""
    data = raw.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for k in ("root",):
            if isinstance(data.get(k), str) and not _ENV.search(data[k]) and not os.path.isabs(data[k]):
                data[k] = str((from_dir / data[k]).resolve())
        raw = dict(raw, data=data)
    return raw


def _resolve_data(data: DataConfig, given: dict[str, Any], base: Path, where: Where) -> DataConfig:
    if data.synthetic is not None:
        extra = [k for k in ("root", "ubm", "enroll", "trials", "train") if k in given]
        if extra:
            raise ConfigError(
                f"{where.at('data', extra[0])}: data.synthetic generates its own lists; remove data.{extra[0]}"
            )
        return data
    missing = [k for k in ("ubm", "enroll", "trials") if k not in given]
    if missing:
        raise ConfigError(f"{where.at('data')}: data.{missing[0]} is required (or give data.synthetic)")
    root_s = given.get("root")
    root = (base / _expand(root_s, where.at("data", "root"), base)).resolve() if root_s else base
    if not root.is_dir():
        raise ConfigError(f"{where.at('data', 'root')}: data.root {root} is not a folder")
    out: dict[str, Any] = {"root": root}
    for k in ("ubm", "enroll", "trials", "cohort", "dev_trials", "train"):
        if k in given and given[k] is not None:
            p = (root / _expand(given[k], where.at("data", k), base)).resolve()
            if not p.is_file():
                raise ConfigError(f"{where.at('data', k)}: data.{k} list {p} not found")
            out[k] = p
    return dataclasses.replace(data, **out)
