"""What the HTTP handlers reach through the application: one typed AppKey holding the services."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from streamd.chains.catalogue import ChainCatalogue
from streamd.chains.runner import ChainRunner
from streamd.cluster.node import ClusterNode
from streamd.inference.deployment import Deployer
from streamd.inference.jobs import InferenceJobs
from streamd.inference.runtime import InferenceRuntime
from streamd.metrics import Metrics
from streamd.networks.public import PublicNetwork
from streamd.settings import Settings
from streamd.store.blobs import BlobStore
from streamd.store.chains import ChainRepository
from streamd.store.db import Database
from streamd.store.networks import NetworkRepository
from streamd.store.recognition import RecognitionRepository
from streamd.store.tasks import TaskRepository
from streamd.streams.manager import StreamManager


@dataclass(slots=True)
class Services:
    """Everything `build_app` assembled; handlers reach it through `services(request)`."""

    settings: Settings
    db: Database
    networks: NetworkRepository
    tasks: TaskRepository
    recognition: RecognitionRepository
    runtime: InferenceRuntime
    deployer: Deployer
    jobs: InferenceJobs
    chains: ChainRepository
    chain_catalogue: ChainCatalogue
    chains_runner: ChainRunner
    streams: StreamManager
    metrics: Metrics | None
    blobs: BlobStore | None = None  # cluster mode (PostgreSQL) only: network files in the database
    spool_db: Database | None = None  # cluster mode: network sinks' spools (a connection of its own)
    cluster: ClusterNode | None = None  # cluster mode (PostgreSQL) only
    public_networks: dict[str, PublicNetwork] = field(default_factory=dict)
    tensorflow_version: str | None = None
    ready: bool = False


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    """The app's shared services, from any handler."""
    return request.app[SERVICES]
