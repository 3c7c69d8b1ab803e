"""Drift and convergence: what runs (PuppetDB, cluster dumps) compared with what meshc renders."""
