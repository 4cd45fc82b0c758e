"""tritonmix on Kubernetes: the labels and annotations a pool's Service carries (``labels``), live discovery of the
pools' endpoints from EndpointSlices and Services (``discovery``), and a local API server that speaks the list + watch
protocol for tests (``fakeapi``)."""
