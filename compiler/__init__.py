"""meshc: compile one declarative service-mesh spec into Puppet and Kubernetes artifacts."""

__version__ = "0.1.0"
