"""The resolved mesh: workloads with identities, ingress, egress and discovery sources."""
