"""lokal: a topology-aware, peer-to-peer OCI image mirror that runs next to containerd."""

__version__ = "0.1.0"
