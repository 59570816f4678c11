"""Configuration: frozen pydantic models, loaded once from defaults, a TOML file and the environment.

Order of sources: model defaults → `config/streamd.toml` (or `--config`) → `STREAMD_<SECTION>__<FIELD>`
environment variables → command-line overrides. `load()` receives the environment as an argument so tests
never touch `os.environ`. Runs before the event loop starts.
"""

from __future__ import annotations

import ipaddress
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from streamd.errors import ConfigError
from streamd.limits import MAX_BATCH_SIZE, MAX_INFLIGHT_BATCHES, MAX_OP_THREADS, MAX_WAIT_S
from streamd.validation import CONFIG, describe_errors

ENV_PREFIX = "STREAMD_"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
DEFAULT_CONFIG_PATH = Path("config/streamd.toml")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the HTTP API (0 picks a free port).")
    upload_max_bytes: int = Field(
        2 * 1024**3,
        ge=1024,
        description="Largest multipart upload accepted (network files); larger requests get 413.",
    )
    json_max_bytes: int = Field(
        64 * 1024**2,
        ge=1024,
        description="Largest JSON or non-file request body accepted; larger requests get 413.",
    )
    read_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description=(
            "Longest wait for the next bytes of a request body; a client that stalls longer gets 408 "
            "and its staged upload is removed."
        ),
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="How long graceful shutdown waits for in-flight requests."
    )


class StorageConfig(_Section):
    data_dir: Path = Field(
        Path("data"),
        description="Directory holding the SQLite database, network files and temporary uploads.",
    )
    media_roots: tuple[Path, ...] = Field(
        (),
        description=(
            "Directories from which local files may be read as inference inputs and video sources. "
            "Empty means <data_dir>/media."
        ),
    )
    task_retention_s: float = Field(
        86400.0,
        gt=0,
        description=(
            "Finished tasks (inferences, failed deployments) are deleted this long after they ended; a "
            "network's deployment task stays while the network exists."
        ),
    )
    result_roots: tuple[Path, ...] = Field(
        (),
        description=(
            "Directories besides <data_dir>/results where JSONL sinks may write (absolute paths). Media "
            "roots are never written to. In cluster mode JSONL sinks write only here, relative paths "
            "under the first: directories every node mounts at the same path (ReadWriteMany)."
        ),
    )
    database_url: SecretStr | None = Field(
        None,
        description=(
            "Unset: the embedded SQLite file <data_dir>/streamd.sqlite3. A postgresql://user@host:port/db "
            "URL: that PostgreSQL database instead (the password may come from PGPASSWORD or ~/.pgpass "
            "rather than the URL). Either is migrated to this streamd's schema at start."
        ),
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, url: Any) -> Any:
        return None if isinstance(url, str) and not url.strip() else url

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            scheme = url.get_secret_value().partition("://")[0]
            if scheme not in POSTGRES_SCHEMES:
                raise ValueError(
                    f"must be a postgresql:// URL (the scheme is {scheme!r}); leave it unset to use the "
                    "embedded SQLite database"
                )
        return url


class AuthConfig(_Section):
    api_keys: tuple[str, ...] = Field(
        (),
        description=(
            "Accepted values of the X-API-KEY header. Empty means no authentication, which is only "
            "allowed when the server binds to a loopback address."
        ),
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            if not key.strip():
                raise ValueError("an API key must not be blank")
        return keys


class NetworksConfig(_Section):
    public_dir: Path | None = Field(
        None,
        description=(
            "Directory of operator-installed public networks, one sub-directory per slug holding "
            "network.json and the model files; served read-only under /v0.7/networks/public, and under "
            "/v0.7/recognition/public when network.json has a `recognition` section."
        ),
    )
    deploy_timeout_s: float = Field(
        600.0, gt=0, description="A deployment task still loading after this long ends in error."
    )


class InferenceConfig(_Section):
    max_batch_size: int = Field(
        32,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Most items one batch holds (per network; metadata.streamd overrides).",
    )
    max_wait_s: float = Field(
        0.005, ge=0.0, le=MAX_WAIT_S, description="Longest time the first item of a batch waits for others."
    )
    max_inflight_batches: int = Field(
        2,
        ge=1,
        le=MAX_INFLIGHT_BATCHES,
        description="Batches of one network running at once; more queue and grow meanwhile.",
    )
    intra_op_threads: int = Field(
        0, ge=0, le=MAX_OP_THREADS, description="TensorFlow intra-op threads (0: TF chooses)."
    )
    inter_op_threads: int = Field(
        0, ge=0, le=MAX_OP_THREADS, description="TensorFlow inter-op threads (0: TF chooses)."
    )
    freeze_graphs: bool = Field(
        True,
        description="Run each network's served outputs through a copy of its graph with the variables "
        "folded into constants, when it gives the same outputs (~28 % less CPU on Keras exports).",
    )
    fuse_graphs: bool = Field(
        True,
        description="Fold each frozen graph's batch norms into its convolutions and give them biases, so "
        "oneDNN runs convolution, bias and activation as one op, when it gives the same outputs "
        "(networks/fusing.py).",
    )
    lite_graphs: bool = Field(
        True,
        description="Run each frozen graph's served outputs through TensorFlow Lite's interpreter (XNNPACK, "
        "one image at a time), when it converts and gives the same outputs (networks/lite.py).",
    )
    allow_url_sources: bool = Field(
        False, description="Allow http(s) URLs as inference image sources (off: the daemon fetches nothing)."
    )
    url_timeout_s: float = Field(10.0, gt=0, le=600, description="Time limit for fetching one URL source.")
    url_max_bytes: int = Field(20 * 1024**2, ge=1024, description="Largest image fetched from a URL source.")


class ChainsConfig(_Section):
    max_calls: int = Field(
        256, ge=1, le=100_000, description="Most calls one chain may have; a longer chain is a 400."
    )
    max_depth: int = Field(
        32, ge=1, le=256, description="Deepest nesting of calls (service, action, service...) in a chain."
    )


class StreamsConfig(_Section):
    buffer_frames: int = Field(
        8,
        ge=1,
        le=1000,
        description=(
            "Decoded frames a stream buffers before its policy acts; a stream capped at fps buffers at "
            "most one second of its frames (at least 2)."
        ),
    )
    frames_in_flight: int = Field(
        24,
        ge=1,
        le=256,
        description=(
            "Frames of one stream in the chain at once (each holds a decoded frame); a stream capped at "
            "fps has at most one second of its frames in flight (at least 2)."
        ),
    )
    live_batch_wait_s: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description=(
            "How long a live stream's frame (a camera, or a file played in realtime) may wait for "
            "others to share its network's batch; at least the network's max_wait_s."
        ),
    )
    stall_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A network source silent this long is reconnected (FFmpeg timeout)."
    )
    keyframe_only_decoding: bool = Field(
        True,
        description=(
            "Decode keyframes only while a stream's fps cap is met by its keyframes (measured from the "
            "packets); off: every frame is decoded."
        ),
    )
    skip_loop_filter: bool = Field(
        False,
        description=(
            "Decode without the deblocking filter but on keyframes (FFmpeg's skip_loop_filter=nokey): "
            "less decoding CPU for slightly blockier frames (docs/design.md, Streams)."
        ),
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between reconnect attempts."
    )
    checkpoint_interval_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description=(
            "How often a stream saves the last frame all its sinks have made durable; after a crash a "
            "file stream replays at most what came after it."
        ),
    )
    webhook_queue_records: int = Field(
        100,
        ge=1,
        le=100_000,
        description=(
            "Records a webhook sink keeps in memory while its receiver answers (what a kill -9 can lose "
            "then); more spill to the disk spool. Also the bound of records held in memory while the "
            "spool cannot be written."
        ),
    )
    spool_max_bytes: int = Field(
        256 * 1024**2,
        ge=1024,
        description=(
            "Spool per webhook or MQTT sink (on disk; in cluster mode in PostgreSQL); past it new records "
            "are dropped, counted."
        ),
    )


class ClusterConfig(_Section):
    """Cluster mode: on when storage.database_url names PostgreSQL (docs/design.md, Cluster)."""

    node_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "This node's name in the nodes table and on its records. Unset: <hostname>-<pid>. A fixed "
            "name lets a restarted node take its own leases back at once; two live nodes must not share one."
        ),
    )
    lease_ttl_s: float = Field(
        6.0,
        ge=0.5,
        le=600,
        description=(
            "How long a stream's lease lasts without renewal (the database's clock); leases are renewed "
            "every third of it. A dead node's streams move within about ttl + ttl/3."
        ),
    )
    max_streams: int = Field(
        50, ge=0, le=100_000, description="Most streams this node runs at once (0: it runs none)."
    )
    advertise_url: str | None = Field(
        None,
        description="The address other nodes and clients reach this node's API at. Unset: http://<host>:<port>/.",
    )


class EgressConfig(_Section):
    deny_cidrs: tuple[str, ...] = Field(
        ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "::/128"),
        description=(
            "Address ranges stream sources and webhook sinks may not reach: link-local (the cloud "
            "metadata service) and 'this host' by default. Private ranges stay allowed: cameras live there."
        ),
    )
    allow_cidrs: tuple[str, ...] = Field(
        (), description="Ranges allowed even when a deny range holds them (exceptions to deny_cidrs)."
    )
    allow_self: bool = Field(
        False, description="Allow sources and webhooks to reach the daemon's own listening address and port."
    )

    @field_validator("deny_cidrs", "allow_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in cidrs:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad range
        return cidrs


class MetricsConfig(_Section):
    enabled: bool = Field(
        True, description="Serve Prometheus metrics on /metrics (off: no metric is recorded)."
    )


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="Log line format.")


class Settings(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig, description="HTTP API.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Files and database.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API key authentication.")
    networks: NetworksConfig = Field(default_factory=NetworksConfig, description="Neural networks.")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Batching and TF.")
    chains: ChainsConfig = Field(default_factory=ChainsConfig, description="Chain validation bounds.")
    streams: StreamsConfig = Field(default_factory=StreamsConfig, description="Video streams and sinks.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Cluster mode (PostgreSQL).")
    egress: EgressConfig = Field(default_factory=EgressConfig, description="Where streams may connect.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")

    @property
    def database_path(self) -> Path:
        return self.storage.data_dir / "streamd.sqlite3"

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL URL, None for the SQLite file at `database_path`."""
        url = self.storage.database_url
        return None if url is None else url.get_secret_value()

    @property
    def result_roots(self) -> tuple[Path, ...]:
        """Where JSONL sinks may write: <data_dir>/results first, then the configured roots."""
        return (self.storage.data_dir / "results", *self.storage.result_roots)

    @property
    def media_roots(self) -> tuple[Path, ...]:
        return self.storage.media_roots or (self.storage.data_dir / "media",)

    def check_bind_allowed(self) -> None:
        """Refuse to expose an unauthenticated API beyond loopback."""
        if not self.auth.api_keys and not is_loopback(self.server.host):
            raise ConfigError(
                f"server.host={self.server.host!r} is not a loopback address and no API key is "
                "configured: set auth.api_keys in the config file or STREAMD_AUTH__API_KEYS=key1,key2 "
                "in the environment, or bind to 127.0.0.1."
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(
    config_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings; every problem raises ConfigError with the source and the field named."""
    raw: dict[str, dict[str, Any]] = {}
    path = config_path
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        raw = _read_toml(path)
    for section, fields in _env_overrides(environ).items():
        raw.setdefault(section, {}).update(fields)
    for section, given in (overrides or {}).items():
        raw.setdefault(section, {}).update({k: v for k, v in given.items() if v is not None})
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        source = f"{path} and the environment" if path else "the environment"
        raise ConfigError(
            f"invalid configuration (from {source}):\n  {describe_errors(exc, CONFIG)}"
        ) from None
    storage = settings.storage.model_copy(
        update={
            "data_dir": settings.storage.data_dir.expanduser().resolve(),
            "media_roots": tuple(root.expanduser().resolve() for root in settings.storage.media_roots),
            "result_roots": tuple(root.expanduser().resolve() for root in settings.storage.result_roots),
        }
    )
    return settings.model_copy(update={"storage": storage})


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing file to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"config file {path}: top-level key {section!r} must be a [section] table")
    return data


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = Settings.model_fields
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, field = name[len(ENV_PREFIX) :].lower().partition("__")
        model = _section_model(section)
        if model is None or field not in model.model_fields:
            known = ", ".join(sorted(sections))
            raise ConfigError(
                f"environment variable {name} names no setting; use STREAMD_<SECTION>__<FIELD> "
                f"with a section among {known} (see config/streamd.toml)"
            )
        if _is_sequence(model.model_fields[field].annotation):
            out.setdefault(section, {})[field] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            out.setdefault(section, {})[field] = value
    return out


def _section_model(section: str) -> type[BaseModel] | None:
    field = Settings.model_fields.get(section)
    if field is None:
        return None
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (tuple, list)
