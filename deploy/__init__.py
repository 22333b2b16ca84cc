"""How kubesight runs: data for the local Kafka (``kafka/``: pom and log4j config used by ``core.broker``), the local Kubernetes control plane (``cluster/``), manifests and example configs."""
