"""Real parts on one machine: private containerd instances, a docker-registry, OCI images, network
namespaces. Used by `lokal demo`, the tests and the benchmarks. Never used by `lokal serve`."""
