"""Sticky routing of sequences (``sequence_id``): every request of a sequence goes to the endpoint that holds its
state, sync (HTTP, gRPC) and aio. Fake endpoint clients stand in for the servers (no Triton needed); the test with
real servers is in test_clients_sync.py."""
from __future__ import annotations

import asyncio
from typing import Any, Iterator, List, Optional

import pytest
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
import tritonmix.grpc.aio
import tritonmix.http
import tritonmix.http.aio
from clients_support import assert_nothing_in_flight
from tritonmix.request import SequencePins
from tritonmix.fleet import Fleet

URLS = "127.0.0.1:9,127.0.0.1:10,127.0.0.1:11"  # never reached: fake clients answer


class FakeEndpoint:
    """tritonclient's infer (sync); remembers the sequence ids it served; ``error`` is raised by infer."""

    def __init__(self, k: int, error: Optional[BaseException] = None) -> None:
        self.k = k
        self.error = error
        self.sequences: List[Any] = []

    def infer(self, model_name: str, inputs: Any, model_version: str = "", outputs: Any = None,
              request_id: str = "", sequence_id: Any = 0, *rest: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.sequences.append(sequence_id)
        return self.k

    def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def close(self) -> None:
        pass


class AsyncFakeEndpoint(FakeEndpoint):
    async def infer(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return FakeEndpoint.infer(self, *args, **kwargs)

    async def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        return True

    async def close(self) -> None:  # type: ignore[override]
        pass


def _sync_client(protocol: str, endpoints: List[FakeEndpoint]) -> Any:
    fleet = Fleet.from_urls(URLS, protocol=protocol, controller={"enabled": False})
    urls = [e.url for e in fleet.endpoints]
    client = getattr(tritonmix, protocol).InferenceServerClient(
        fleet=fleet, seed=3, endpoint_client_factory=lambda url: endpoints[urls.index(url)])
    client.router.set_ejector(lambda i, reason, now: None)
    return client


@pytest.fixture(params=["http", "grpc"])
def protocol(request: Any) -> str:
    return request.param


@pytest.fixture
def endpoints() -> List[FakeEndpoint]:
    return [FakeEndpoint(k) for k in range(3)]


@pytest.fixture
def client(protocol: str, endpoints: List[FakeEndpoint]) -> Iterator[Any]:
    c = _sync_client(protocol, endpoints)
    try:
        yield c
        assert_nothing_in_flight(c)
    finally:
        c.close()


def _run_sequence(client: Any, sid: Any, length: int = 5) -> List[int]:
    served = []
    for step in range(length):
        served.append(client.infer("add_sub", ["x"], sequence_id=sid, sequence_start=step == 0,
                                   sequence_end=step == length - 1))
    return served


def test_every_request_of_a_sequence_goes_to_one_endpoint(client: Any, endpoints: List[FakeEndpoint]) -> None:
    homes = []
    for sid in range(1, 41):
        served = _run_sequence(client, sid if sid % 2 else f"corr-{sid}")
        assert len(set(served)) == 1, (sid, served)
        homes.append(served[0])
    assert set(homes) == {0, 1, 2}  # sequences themselves are spread
    assert client.pinned_sequences == 0  # every sequence ended: nothing pinned
    assert client.router.arrivals()[("add_sub", "interactive")] == 200


def test_interleaved_sequences_keep_their_endpoints(client: Any) -> None:
    homes = {sid: client.infer("add_sub", ["x"], sequence_id=sid, sequence_start=True) for sid in range(1, 13)}
    for _ in range(3):
        for sid, home in homes.items():
            assert client.infer("add_sub", ["x"], sequence_id=sid) == home
            assert client.infer("add_sub", ["x"]) in (0, 1, 2)  # requests outside sequences are not pinned


def test_a_pinned_endpoint_that_takes_no_requests_fails_the_request_clearly(client: Any) -> None:
    home = client.infer("add_sub", ["x"], sequence_id=5, sequence_start=True)
    client.router.set_endpoint_available(home, False)
    with pytest.raises(InferenceServerException, match="start the sequence again"):
        client.infer("add_sub", ["x"], sequence_id=5)
    assert client.pinned_sequences == 0
    again = client.infer("add_sub", ["x"], sequence_id=5, sequence_start=True)  # a new start goes elsewhere
    assert again != home and client.infer("add_sub", ["x"], sequence_id=5, sequence_end=True) == again


def test_a_pinned_request_never_fails_over(client: Any, endpoints: List[FakeEndpoint], protocol: str) -> None:
    home = client.infer("add_sub", ["x"], sequence_id=9, sequence_start=True)
    endpoints[home].error = (ConnectionResetError(104, "reset") if protocol == "http" else
                             InferenceServerException(msg="connection reset", status="StatusCode.UNAVAILABLE"))
    before = [len(e.sequences) for e in endpoints]
    with pytest.raises(InferenceServerException, match="no retries left"):
        client.infer("add_sub", ["x"], sequence_id=9)
    assert [len(e.sequences) for e in endpoints] == before  # not sent anywhere else
    stats = client.router.dispatchers()[("add_sub", "interactive")].stats()
    assert stats.failures[home] == 1 and client.router.budget.snapshot()[1] == 0
    endpoints[home].error = None
    assert client.infer("add_sub", ["x"], sequence_id=9, sequence_end=True) == home  # still pinned: state is there


def test_a_sequence_start_fails_over(client: Any, endpoints: List[FakeEndpoint], protocol: str) -> None:
    refused = (ConnectionRefusedError(111, "refused") if protocol == "http" else
               InferenceServerException(msg="failed to connect to all addresses", status="StatusCode.UNAVAILABLE"))
    endpoints[0].error = refused
    for sid in range(1, 21):
        served = _run_sequence(client, sid, length=3)
        assert len(set(served)) == 1 and served[0] != 0


def test_the_server_error_of_a_pinned_request_passes_through(client: Any, endpoints: List[FakeEndpoint]) -> None:
    home = client.infer("add_sub", ["x"], sequence_id=3, sequence_start=True)
    error = InferenceServerException(msg="sequence 3 must specify the START flag", status="400")
    endpoints[home].error = error
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", ["x"], sequence_id=3, sequence_end=True)
    assert info.value is error and client.pinned_sequences == 0  # the end unpins, whatever the outcome


def test_pins_are_bounded() -> None:
    pins = SequencePins(2, capacity=3)
    for sid in range(5):
        pins.pin(("m", sid), sid % 2)
    assert len(pins) == 3 and pins.get(("m", 0)) is None and pins.get(("m", 4)) == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_aio_sequences_stick(protocol: str) -> None:
    async def main() -> None:
        fakes = [AsyncFakeEndpoint(k) for k in range(3)]
        fleet = Fleet.from_urls(URLS, protocol=protocol, controller={"enabled": False})
        module = tritonmix.http.aio if protocol == "http" else tritonmix.grpc.aio
        urls = [e.url for e in fleet.endpoints]
        async with module.InferenceServerClient(fleet=fleet, seed=2,
                                                endpoint_client_factory=lambda url: fakes[urls.index(url)]) as client:
            homes = set()
            for sid in range(1, 16):
                served = [await client.infer("add_sub", ["x"], sequence_id=sid, sequence_start=step == 0,
                                             sequence_end=step == 3) for step in range(4)]
                assert len(set(served)) == 1, served
                homes.add(served[0])
            assert homes == {0, 1, 2} and client.pinned_sequences == 0
            assert_nothing_in_flight(client)

    asyncio.run(main())
