"""ChainCatalogue: turns a chain definition, inline or stored by name, into an executable plan. Used by
the chain and stream handlers and by the stream manager when it resumes streams.

Runs on the event loop. Parsing and the tree checks run in a worker thread: bounded and linear, but a
body of hundreds of calls must not hold the loop (and /healthz) for a moment.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from streamd.chains.plan import build_plan
from streamd.chains.resolve import resolver_for
from streamd.chains.spec import ChainBody, ChainPlan, parse_body
from streamd.errors import InvalidRequestError, NotFoundError
from streamd.settings import ChainsConfig
from streamd.store.chains import ChainRepository
from streamd.store.networks import NetworkRepository
from streamd.store.recognition import RecognitionRepository

INLINE = "inline"  # the chain name of a stream whose chain is given inline


class ChainCatalogue:
    """Stored chains and the services they name, planned within the [chains] limits."""

    def __init__(
        self,
        store: ChainRepository,
        recognition: RecognitionRepository,
        networks: NetworkRepository,
        config: ChainsConfig,
    ) -> None:
        self._store = store
        self._recognition = recognition
        self._networks = networks
        self._config = config

    async def plan(self, raw: Any, *, require_data: bool) -> tuple[ChainBody, ChainPlan]:
        """Validate a chain body (DeepDetect's `{"chain": ...}` or `{"calls": ...}`) into a plan."""
        body = await asyncio.to_thread(parse_body, raw, self._config.max_calls)
        resolve = await resolver_for(body, self._recognition, self._networks)
        plan = await asyncio.to_thread(
            functools.partial(build_plan, require_data=require_data, max_depth=self._config.max_depth),
            body,
            resolve,
        )
        return body, plan

    async def stream_plan(self, chain: str | dict[str, Any]) -> tuple[ChainPlan, str]:
        """A stream's chain, a stored chain's name or an inline definition, as (plan, chain name)."""
        if isinstance(chain, str):
            try:
                record = await self._store.get(chain)
            except NotFoundError as exc:
                raise InvalidRequestError(exc.message, code="chain_not_found") from None
            return (await self.plan(record.definition, require_data=False))[1], chain
        return (await self.plan(chain, require_data=False))[1], INLINE
