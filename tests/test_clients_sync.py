"""tritonmix.http and tritonmix.grpc (blocking and their async forms) against three real Triton servers."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc_http
from tritonclient.utils import InferenceServerException

import tritonmix.grpc
import tritonmix.http
from clients_support import (Trio, add_sub_inputs, assert_nothing_in_flight, hammer, picks, sample, trio_fixture,
                             wait_until)

pytestmark = pytest.mark.timeout(120)

MODULES = {"http": tritonmix.http, "grpc": tritonmix.grpc}
PLAIN = {"http": tc_http, "grpc": tc_grpc}
NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}
BAD_SHAPE = {"http": "500", "grpc": "StatusCode.INTERNAL"}


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    yield from trio_fixture()


@pytest.fixture(params=["http", "grpc"])
def protocol(request: Any) -> str:
    return request.param


@pytest.fixture
def client(trio: Trio, protocol: str) -> Iterator[Any]:
    trio.heal()
    c = MODULES[protocol].InferenceServerClient(fleet=trio.fleet(protocol), seed=11)
    try:
        yield c
        assert_nothing_in_flight(c)
    finally:
        c.close()


def _infer(client: Any, protocol: str, k: int = 0, **kwargs: Any) -> None:
    a, b = sample(k)
    result = client.infer("add_sub", add_sub_inputs(MODULES[protocol], a, b), **kwargs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_infer_is_correct_and_reaches_every_endpoint(client: Any, protocol: str) -> None:
    for k in range(60):
        _infer(client, protocol, k)
    assert all(p > 0 for p in picks(client)), picks(client)
    assert client.router.arrivals()[("add_sub", "interactive")] == 60
    _infer(client, protocol, request_class="batch", deadline_s=5.0)
    assert ("add_sub", "batch") in client.router.dispatchers()


def test_shared_across_threads(client: Any, protocol: str) -> None:
    errors = hammer(lambda k: _infer(client, protocol, k), threads=6, duration_s=1.0, during=lambda: None,
                    after_s=0.0)
    assert not errors, errors[:3]
    assert sum(picks(client)) > 20


def test_unknown_model_passes_the_servers_error_through(client: Any, protocol: str) -> None:
    a, b = sample(0)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", add_sub_inputs(MODULES[protocol], a, b))
    assert info.value.status() == NOT_FOUND[protocol]
    assert "unknown model" in info.value.message() and "tritonmix" not in info.value.message()
    assert sum(f for _, _, f in client.router.endpoint_counters()) == 1  # one attempt, no retry
    assert client.router.budget.snapshot()[1] == 0


def test_bad_shape_passes_the_servers_error_through(client: Any, protocol: str) -> None:
    module = MODULES[protocol]
    a, _ = sample(0)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", add_sub_inputs(module, a, np.zeros((2, 2), np.float32)))
    assert info.value.status() == BAD_SHAPE[protocol]
    assert "shape" in info.value.message()
    assert sum(picks(client)) == 1 and client.router.budget.snapshot()[1] == 0


def test_killing_an_endpoint_mid_run_fails_no_request(client: Any, protocol: str, trio: Trio) -> None:
    _infer(client, protocol)
    errors = hammer(lambda k: _infer(client, protocol, k), threads=4, duration_s=1.5,
                    during=lambda: trio.kill(1), after_s=0.4)
    assert not errors, errors[:3]
    assert client.router.endpoint_counters()[1][2] >= 1  # it did fail, and the failures were absorbed
    before = picks(client)[1]
    for k in range(20):
        _infer(client, protocol, k)
    assert picks(client)[1] <= before + 2  # ejected: at most a readmission probe or two


def test_all_down_fails_fast_then_the_same_client_recovers(client: Any, protocol: str, trio: Trio) -> None:
    _infer(client, protocol)
    for k in range(3):
        trio.kill(k)
    for _ in range(5):
        t0 = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            _infer(client, protocol, deadline_s=10.0)
        assert time.monotonic() - t0 < 2.0
        text = info.value.message()
        assert "tritonmix" in text and ("refused" in text.lower() or "no endpoint" in text)
    # connection refused never reached a server: failing over from it adds no load and spends no retry budget
    assert client.router.budget.snapshot()[1] == 0
    trio.restart(0, 1, 2)

    def works() -> bool:
        try:
            _infer(client, protocol)
            return True
        except InferenceServerException:
            return False

    assert wait_until(works, timeout_s=15.0)
    # then every endpoint back in rotation before 30 requests in a row are asked of the same client: until the
    # others' ejection backoff ends, a request whose one routable endpoint still fails to connect (a gRPC channel
    # waiting out its reconnect backoff, at most 1 s) has nowhere else to go and fails
    assert wait_until(lambda: works() and all(client.router.is_available("add_sub", i) for i in range(3)),
                      timeout_s=15.0)
    for k in range(30):
        _infer(client, protocol, k)


def test_deadline_bounds_the_call(client: Any, protocol: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(client, protocol, deadline_s=1e-6)
    assert "deadline" in info.value.message()


def test_a_sequence_stays_on_one_endpoint(client: Any, protocol: str) -> None:
    homes = set()
    for sid in range(1, 13):
        before = picks(client) if sid > 1 else (0, 0, 0)
        for step in range(4):
            _infer(client, protocol, step, sequence_id=sid, sequence_start=step == 0, sequence_end=step == 3)
        moved = [b - a for a, b in zip(before, picks(client))]
        assert sorted(moved) == [0, 0, 4], moved
        homes.add(moved.index(4))
    assert len(homes) > 1  # the sequences themselves are spread


def test_server_level_calls(client: Any, protocol: str, trio: Trio) -> None:
    for k in range(9):
        _infer(client, protocol, k)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("add_sub") and not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata("add_sub")
    assert (meta["name"] if protocol == "http" else meta.name) == "add_sub"
    kwargs = {} if protocol == "http" else {"as_json": True}
    total = client.get_inference_statistics("add_sub", **kwargs)["model_stats"][0]
    each = []
    for url in trio.urls(protocol):
        plain = PLAIN[protocol].InferenceServerClient(url)
        each.append(int(plain.get_inference_statistics("add_sub", **kwargs)["model_stats"][0]["inference_count"]))
        plain.close()
    assert int(total["inference_count"]) == sum(each)
    if protocol == "grpc":
        message = client.get_inference_statistics("add_sub")
        assert message.model_stats[0].inference_count == sum(each)


def test_close_leaves_no_thread(trio: Trio, protocol: str) -> None:
    trio.heal()
    before = set(threading.enumerate())
    c = MODULES[protocol].InferenceServerClient(",".join(trio.urls(protocol)))
    _infer(c, protocol)
    threading.Thread(target=_infer, args=(c, protocol)).start()
    time.sleep(0.3)
    c.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout_s=5.0), threading.enumerate()
    with pytest.raises(InferenceServerException):
        _infer(c, protocol)


# ---- async forms --------------------------------------------------------------------------------------------

def test_http_async_infer(trio: Trio) -> None:
    trio.heal()
    with tritonmix.http.InferenceServerClient(fleet=trio.fleet("http"), concurrency=4) as client:
        handles = []
        for k in range(24):
            a, b = sample(k)
            handles.append((a, b, client.async_infer("add_sub", add_sub_inputs(tritonmix.http, a, b))))
        for a, b, handle in handles:
            assert isinstance(handle, tritonmix.http.InferAsyncRequest)
            np.testing.assert_array_equal(handle.get_result().as_numpy("OUTPUT0"), a + b)
        assert all(p > 0 for p in picks(client))
        assert_nothing_in_flight(client)


def test_grpc_callback_async_infer_with_failover(trio: Trio) -> None:
    trio.heal()
    results: "queue.Queue" = queue.Queue()
    with tritonmix.grpc.InferenceServerClient(fleet=trio.fleet("grpc")) as client:
        def submit(k: int) -> None:
            a, b = sample(k)
            client.async_infer("add_sub", add_sub_inputs(tritonmix.grpc, a, b),
                               lambda result, error: results.put((a, b, result, error)))

        for k in range(12):
            submit(k)
        trio.kill(2)
        for k in range(12, 36):
            submit(k)
        for _ in range(36):
            a, b, result, error = results.get(timeout=30)
            assert error is None, error
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        assert_nothing_in_flight(client)
    trio.heal()


# ---- tritonclient's documented usage, as written (only the import line changed) ------------------------------

def _simple_http_infer_client(url: str) -> None:  # tritonclient examples: simple_http_infer_client.py
    import tritonmix.http as httpclient

    triton_client = httpclient.InferenceServerClient(url=url, verbose=False)
    model_name = "add_sub"
    inputs = []
    outputs = []
    inputs.append(httpclient.InferInput("INPUT0", [1, 16], "FP32"))
    inputs.append(httpclient.InferInput("INPUT1", [1, 16], "FP32"))
    input0_data = np.arange(start=0, stop=16, dtype=np.float32)
    input0_data = np.expand_dims(input0_data, axis=0)
    input1_data = np.full(shape=(1, 16), fill_value=-1, dtype=np.float32)
    inputs[0].set_data_from_numpy(input0_data, binary_data=False)
    inputs[1].set_data_from_numpy(input1_data, binary_data=True)
    outputs.append(httpclient.InferRequestedOutput("OUTPUT0", binary_data=True))
    outputs.append(httpclient.InferRequestedOutput("OUTPUT1", binary_data=False))
    query_params = {"test_1": 1, "test_2": 2}
    results = triton_client.infer(model_name, inputs, outputs=outputs, query_params=query_params)
    output0_data = results.as_numpy("OUTPUT0")
    output1_data = results.as_numpy("OUTPUT1")
    for i in range(16):
        if (input0_data[0][i] + input1_data[0][i]) != output0_data[0][i]:
            raise AssertionError("sync infer error: incorrect sum")
        if (input0_data[0][i] - input1_data[0][i]) != output1_data[0][i]:
            raise AssertionError("sync infer error: incorrect difference")
    statistics = triton_client.get_inference_statistics(model_name=model_name)
    if len(statistics["model_stats"]) != 1:
        raise AssertionError("FAILED: Inference Statistics")
    triton_client.close()


def _simple_grpc_async_infer_client(url: str) -> None:  # tritonclient examples: simple_grpc_async_infer_client.py
    from functools import partial
    import queue as q

    import tritonmix.grpc as grpcclient

    class UserData:
        def __init__(self):
            self._completed_requests = q.Queue()

    def callback(user_data, result, error):
        if error:
            user_data._completed_requests.put(error)
        else:
            user_data._completed_requests.put(result)

    triton_client = grpcclient.InferenceServerClient(url=url, verbose=False)
    model_name = "add_sub"
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "FP32"), grpcclient.InferInput("INPUT1", [1, 16], "FP32")]
    input0_data = np.expand_dims(np.arange(start=0, stop=16, dtype=np.float32), axis=0)
    input1_data = np.ones(shape=(1, 16), dtype=np.float32)
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    user_data = UserData()
    triton_client.async_infer(model_name=model_name, inputs=inputs, callback=partial(callback, user_data),
                              outputs=outputs)
    data_item = user_data._completed_requests.get(timeout=30)
    if type(data_item) == InferenceServerException:
        raise data_item
    assert (data_item.as_numpy("OUTPUT0") == input0_data + input1_data).all()
    statistics = triton_client.get_inference_statistics(model_name=model_name)
    if len(statistics.model_stats) != 1:
        raise AssertionError("FAILED: Inference Statistics")
    triton_client.close()


def _simple_http_async_infer_client(url: str) -> None:  # tritonclient examples: simple_http_async_infer_client.py
    import tritonmix.http as httpclient

    with httpclient.InferenceServerClient(url=url, concurrency=4) as triton_client:
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"), httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        input0_data = np.expand_dims(np.arange(start=0, stop=16, dtype=np.float32), axis=0)
        inputs[0].set_data_from_numpy(input0_data, binary_data=True)
        inputs[1].set_data_from_numpy(input0_data, binary_data=True)
        async_requests = []
        for i in range(4):
            async_requests.append(triton_client.async_infer(model_name="add_sub", inputs=inputs))
        for async_request in async_requests:
            result = async_request.get_result()
            assert (result.as_numpy("OUTPUT0") == 2 * input0_data).all()
            assert result.get_response()["model_name"] == "add_sub"


def test_tritonclient_examples_as_written(trio: Trio) -> None:
    trio.heal()
    _simple_http_infer_client(",".join(trio.urls("http")))
    _simple_http_async_infer_client(trio.urls("http")[0])
    _simple_grpc_async_infer_client(",".join(trio.urls("grpc")))
