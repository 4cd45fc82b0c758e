"""tritonmix on Kubernetes: the labels and annotations a pool's Service carries (``labels``), live discovery of the
pools' endpoints from EndpointSlices and Services (``discovery``), and a local API server that speaks the list + watch
protocol for tests (``fakeapi``); and the manifests of a fleet, ``render.render(fleet, out_dir, **values)``: per pool a
Triton Deployment, Service and KEDA ScaledObject (``manifests``), the control plane (``plane_manifests``), the values a
user must set (``values``)."""
