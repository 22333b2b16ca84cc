"""How kubesight runs: the local Kafka (KRaft) launcher and the Kubernetes manifests."""
