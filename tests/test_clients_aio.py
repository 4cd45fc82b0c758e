"""tritonmix.http.aio and tritonmix.grpc.aio against three real Triton servers."""
from __future__ import annotations

import asyncio
from typing import Any, Iterator

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.grpc.aio
import tritonmix.http.aio
from clients_support import Trio, add_sub_inputs, assert_nothing_in_flight, picks, sample, trio_fixture

pytestmark = pytest.mark.timeout(120)

MODULES = {"http": tritonmix.http.aio, "grpc": tritonmix.grpc.aio}
NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    yield from trio_fixture()


@pytest.fixture(params=["http", "grpc"])
def protocol(request: Any, trio: Trio) -> str:
    trio.heal()
    return request.param


async def _infer(client: Any, module: Any, k: int, **kwargs: Any) -> None:
    a, b = sample(k)
    result = await client.infer("add_sub", add_sub_inputs(module, a, b), **kwargs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_aio_infer_concurrently_over_every_endpoint(trio: Trio, protocol: str) -> None:
    module = MODULES[protocol]

    async def main() -> None:
        async with module.InferenceServerClient(fleet=trio.fleet(protocol), seed=3) as client:
            await asyncio.gather(*(_infer(client, module, k) for k in range(60)))
            assert all(p > 0 for p in picks(client)), picks(client)
            assert await client.is_server_live() and await client.is_model_ready("add_sub")
            assert_nothing_in_flight(client)

    asyncio.run(main())


def test_aio_failover_when_an_endpoint_dies_mid_run(trio: Trio, protocol: str) -> None:
    module = MODULES[protocol]

    async def main() -> None:
        async with module.InferenceServerClient(fleet=trio.fleet(protocol)) as client:
            await asyncio.gather(*(_infer(client, module, k) for k in range(60)))  # a realistic retry budget
            first = asyncio.gather(*(_infer(client, module, k) for k in range(30)))
            await asyncio.sleep(0.01)
            trio.kill(0)
            await first
            await asyncio.gather(*(_infer(client, module, k) for k in range(40)))
            assert_nothing_in_flight(client)

    asyncio.run(main())


def test_aio_unknown_model_and_cancellation(trio: Trio, protocol: str) -> None:
    module = MODULES[protocol]

    async def main() -> None:
        async with module.InferenceServerClient(fleet=trio.fleet(protocol)) as client:
            a, b = sample(0)
            with pytest.raises(InferenceServerException) as info:
                await client.infer("no_such_model", add_sub_inputs(module, a, b))
            assert info.value.status() == NOT_FOUND[protocol]
            assert sum(f for _, _, f in client.router.endpoint_counters()) == 1
            task = asyncio.ensure_future(_infer(client, module, 1))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_nothing_in_flight(client)

    asyncio.run(main())


def test_aio_all_down_fails_fast(trio: Trio, protocol: str) -> None:
    module = MODULES[protocol]

    async def main() -> None:
        async with module.InferenceServerClient(fleet=trio.fleet(protocol)) as client:
            await _infer(client, module, 0)
            for k in range(3):
                trio.kill(k)
            for _ in range(3):
                with pytest.raises(InferenceServerException) as info:
                    await asyncio.wait_for(_infer(client, module, 0, deadline_s=5.0), 3.0)
                assert "tritonmix" in info.value.message()
            assert_nothing_in_flight(client)

    asyncio.run(main())
    trio.heal()
